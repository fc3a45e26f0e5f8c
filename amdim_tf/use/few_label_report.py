"""The few-label report: the accuracy table (markdown), its plot, and the sentence that
names the classifier handed to the user, with its held-out margin and noise."""

import math

import numpy as np

from amdim_tf.use import report

ARMS = ("frozen", "finetune", "scratch")
ARM_TITLES = {
    "frozen": "frozen r1 + logistic regression",
    "finetune": "fine-tuned (pretrained init)",
    "scratch": "same network from scratch",
}


def summary(rows) -> list:
    """One entry per (arm, budget): mean, min and max test accuracy over the seeds."""
    groups = {}
    for r in rows:
        groups.setdefault((r["arm"], r["budget"]), []).append(r)
    out = []
    for (arm, budget), rs in groups.items():
        accs = [r["test_acc"] for r in rs]
        out.append(
            {
                "arm": arm,
                "budget": budget,
                "n_labels": rs[0]["n_labels"],
                "mean": float(np.mean(accs)),
                "min": float(np.min(accs)),
                "max": float(np.max(accs)),
                "seeds": [r["seed"] for r in rs],
            }
        )
    return out


def format_table(summary, title="", rows=()):
    """Markdown: one row per arm, one column per label budget (mean, min-max over seeds),
    the best mean of each column in bold (every arm that ties with it at the precision
    shown); then, from `rows`, what the fine-tuned arm selected per budget and seed."""
    budgets = []
    for s in summary:
        if (s["budget"], s["n_labels"]) not in budgets:
            budgets.append((s["budget"], s["n_labels"]))
    arms = [a for a in ARMS if any(s["arm"] == a for s in summary)]
    cells = {(s["arm"], s["budget"]): s for s in summary}
    best = {
        b: max(round(100 * s["mean"], 1) for s in summary if s["budget"] == b) for b, _ in budgets
    }
    head = " | ".join(f"{b} ({n:,} labels)" for b, n in budgets)
    lines = [title, ""] if title else []
    lines += [f"| arm | {head} |", "|---" * (len(budgets) + 1) + "|"]
    for arm in arms:
        row = []
        for b, _ in budgets:
            s = cells.get((arm, b))
            if s is None:
                row.append("")
                continue
            mean = f"{100 * s['mean']:.1f}%"
            if len(arms) > 1 and round(100 * s["mean"], 1) == best[b]:
                mean = f"**{mean}**"
            if len(s["seeds"]) > 1:
                mean += f" ({100 * s['min']:.1f}-{100 * s['max']:.1f}, {len(s['seeds'])} seeds)"
            row.append(mean)
        lines.append(f"| {ARM_TITLES[arm]} | " + " | ".join(row) + " |")
    chosen = [r for r in rows if r["arm"] == "finetune" and "selected" in r]
    if chosen:
        lines += ["", "Fine-tuned arm, selected on the held-out labels:"]
        lines += [f"- {r['budget']}, seed {r['seed']}: {r['selected']}" for r in chosen]
    return "\n".join(lines)


def plot_accuracy(summary, path, title):
    """PNG of test accuracy (%) against the number of labels (log x), one line per arm."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for arm in ARMS:
        pts = sorted((s["n_labels"], s) for s in summary if s["arm"] == arm)
        if not pts:
            continue
        n = [p for p, _ in pts]
        mean = np.array([100 * s["mean"] for _, s in pts])
        lo = mean - np.array([100 * s["min"] for _, s in pts])
        hi = np.array([100 * s["max"] for _, s in pts]) - mean
        ax.errorbar(n, mean, yerr=[lo, hi], marker="o", capsize=3, label=ARM_TITLES[arm])
    ax.set_xscale("log")
    ax.set_xlabel("labelled training images (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return report.save_png(fig, path, dpi=110)


def held_out_noise(accuracy: float, n: int) -> float:
    """The held-out split's noise at accuracy p over n labels: one standard error,
    sqrt(p (1 - p) / n), and at least one image (1 / n)."""
    return max(1.0 / n, math.sqrt(accuracy * (1.0 - accuracy) / n))


def choice_text(choice: dict) -> str:
    """One paragraph: which arm's classifier was written, why, and whether the held-out
    labels can tell it from the runner-up; plainly when pretraining did not help."""
    arm, where = choice["arm"], f"{choice['budget']}, seed {choice['seed']}"
    text = f"Classifier written (classifier.keras, export/1): {ARM_TITLES[arm]}"
    if choice.get("margin") is None:
        reason = choice.get("reason", "the only arm run")
        return f"{text} ({where}; {reason})."
    held = choice["held_out"]
    text += (
        f", the best arm on the {choice['n_held_out']} held-out labels of {where}: "
        f"{100 * held[arm]:.1f}% against {100 * held[choice['runner_up']]:.1f}% for "
        f"{ARM_TITLES[choice['runner_up']]}, a margin of {100 * choice['margin']:.1f} points; "
        f"the held-out noise (one standard error) is {100 * choice['noise']:.1f} points"
    )
    if choice["margin"] <= choice["noise"]:
        text += ", so these labels cannot tell the two apart."
    else:
        text += "."
    if arm == "scratch":
        text += (
            " Pretraining did not help here: the network trained from scratch on these "
            "labels beat the pretrained encoder (expected of an encoder pretrained briefly "
            "or on data unlike these labels)."
        )
    return text
