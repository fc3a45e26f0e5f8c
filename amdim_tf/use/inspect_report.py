"""The data-inspection report (`amdim_tf/use/inspect.py` finds, this writes): pairs.csv,
outliers.csv, mislabels.csv, the thumbnail grids, report.md and report.json (last), into
the stage the inspection renames into place."""

import csv
import io
import json
import os
import time

from amdim_tf.use import report

EXACT_DISTANCE = 1e-5  # cosine distance of pixel-identical images (float rounding only)


def _write(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _csv(header, rows):
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def tiles_png(path, thumbs, titles, cols, header="") -> str:
    """A PNG of thumbnails (uint8 [s, s, 3] each, None: missing) in rows of `cols`, titled."""
    rows = [list(thumbs[i : i + cols]) for i in range(0, len(thumbs), cols)]
    names = [list(titles[i : i + cols]) for i in range(0, len(titles), cols)]
    return report.thumbnail_grid(path, rows, names, header, title_size=5)


def _short(name, width=18):
    name = os.path.basename(str(name)) or str(name)
    return name if len(name) <= width else "…" + name[-(width - 1) :]


def _write_csvs(out_dir, findings, ident, cls) -> None:
    pairs, outliers, mislabels = findings["pairs"], findings["outliers"], findings["mislabels"]
    _write(
        os.path.join(out_dir, "pairs.csv"),
        _csv(
            ["kind", "split_a", "row_a", "id_a", "split_b", "row_b", "id_b", "cosine"],
            [
                (kind, sa, ra, ident(sa, ra), sb, rb, ident(sb, rb), f"{c:.5f}")
                for kind, sa, ra, sb, rb, c in pairs
            ],
        ),
    )
    _write(
        os.path.join(out_dir, "outliers.csv"),
        _csv(
            ["split", "row", "id", "knn_density"],
            [(n, r, ident(n, r), f"{d:.5f}") for n, r, d in outliers],
        ),
    )
    _write(
        os.path.join(out_dir, "mislabels.csv"),
        _csv(
            ["split", "row", "id", "label", "class", "knn_label", "knn_class", "vote_share"],
            [
                (n, r, ident(n, r), lab, cls(n, lab), p, cls(n, p), f"{s:.2f}")
                for n, r, lab, p, s in mislabels
            ],
        ),
    )


def _counts(by_name, names, findings) -> dict:
    pairs, mislabels = findings["pairs"], findings["mislabels"]
    return {
        "images": {n: len(ix) for n, ix in by_name.items()},
        "near_duplicate_pairs_within": {
            n: sum(1 for p in pairs if p[0] == "within" and p[1] == n) for n in names
        },
        "near_duplicate_pairs_across": sum(1 for p in pairs if p[0] == "across"),
        "exact_duplicate_pairs": findings["exact"],
        "leaked_images": len(findings["leaked"]),
        "nonfinite_rows_skipped": {n: ix.skipped_nonfinite for n, ix in by_name.items()},
        "likely_mislabels": {
            n: sum(1 for m in mislabels if m[0] == n) for n in names if by_name[n].labelled
        },
    }


def write_report(
    out_dir, indexes, names, findings, settings, threshold_info, label_note, say, start
) -> dict:
    """Writes the CSVs, the grids, report.md and report.json (last); returns the summary."""
    by_name = dict(zip(names, indexes, strict=True))

    def ident(name, row):
        return str(by_name[name].ids[row])

    def cls(name, label):
        # Mislabels hold labels in the reference split's numbering (labels_by_name).
        classes = indexes[0].class_names
        return classes[label] if 0 <= label < len(classes) else str(label)

    _write_csvs(out_dir, findings, ident, cls)
    counts = _counts(by_name, names, findings)
    grids = []
    if settings["top"]:
        grids, missing = _grids(
            out_dir, by_name, findings["pairs"], findings["outliers"], findings["mislabels"],
            settings["top"], settings["thumb"], cls,
        )  # fmt: skip
        if missing:
            label_note.append(
                f"{missing} images of the grids are no longer where they were indexed "
                "(moved or deleted): drawn as missing"
            )
        say(f"grids {', '.join(grids)}")
    summary = {
        "embeddings": {n: ix.directory for n, ix in by_name.items()},
        "encoder": indexes[0].summary.get("encoder"),
        "key": settings["key"],
        "k": settings["k"],
        "threshold": threshold_info,
        "agreement": settings["agreement"],
        "counts": counts,
        "notes": label_note,
        "seconds": round(time.perf_counter() - start, 2),
        "outputs": ["report.md", "report.json", "pairs.csv", "outliers.csv", "mislabels.csv"]
        + grids,
    }
    _write(os.path.join(out_dir, "report.md"), _markdown(summary, findings["pairs"], ident))
    _write(os.path.join(out_dir, "report.json"), json.dumps(summary, indent=1) + "\n")
    return summary


def _grids(out_dir, by_name, pairs, outliers, mislabels, top, thumb, cls):
    """(files, missing images) of the PNG grids of the top findings; thumbnails read back
    per split in one pass each."""
    wanted = {}  # split -> rows
    dup = [p for p in pairs if p[0] == "within"][: top // 2]
    leak = [p for p in pairs if p[0] == "across"][: top // 2]
    out_rows = sorted(outliers, key=lambda o: o[2])[:top]
    mis = mislabels[:top]
    for _, sa, ra, sb, rb, _ in dup + leak:
        wanted.setdefault(sa, set()).add(ra)
        wanted.setdefault(sb, set()).add(rb)
    for n, r, *_ in out_rows + mis:
        wanted.setdefault(n, set()).add(r)
    thumbs = {}  # (split, row) -> uint8 [s, s, 3], or None: the image has moved
    for name, rows in wanted.items():
        rows = sorted(rows)
        images, found = by_name[name].thumbnails_found(rows, thumb)
        thumbs.update(
            {(name, r): im if ok else None for r, im, ok in zip(rows, images, found, strict=True)}
        )
    missing = sum(im is None for im in thumbs.values())

    def ident(name, row):
        return _short(by_name[name].ids[row])

    written = []
    for file, found, what in (
        ("duplicates.png", dup, "near-duplicate pairs within a split"),
        ("leakage.png", leak, "test image | its near-duplicate in the reference split"),
    ):
        if not found:
            continue
        images, titles = [], []
        for _, sa, ra, sb, rb, c in found:
            images += [thumbs[(sa, ra)], thumbs[(sb, rb)]]
            titles += [f"{ident(sa, ra)}", f"{ident(sb, rb)}\ncos {c:.4f}"]
        tiles_png(os.path.join(out_dir, file), images, titles, 8, what)
        written.append(file)
    if out_rows:
        images = [thumbs[(n, r)] for n, r, _ in out_rows]
        titles = [f"{ident(n, r)}\nd {d:.3f}" for n, r, d in out_rows]
        tiles_png(os.path.join(out_dir, "outliers.png"), images, titles, 8, "lowest kNN density")
        written.append("outliers.png")
    if mis:
        images = [thumbs[(n, r)] for n, r, *_ in mis]
        titles = [
            f"{ident(n, r)}\n{cls(n, lab)[:8]}→{cls(n, p)[:8]} {s:.0%}" for n, r, lab, p, s in mis
        ]
        tiles_png(
            os.path.join(out_dir, "mislabels.png"),
            images,
            titles,
            8,
            "likely mislabels: label → kNN label (vote share)",
        )
        written.append("mislabels.png")
    return written, missing


def _markdown(summary, pairs, ident):
    c = summary["counts"]
    t = summary["threshold"]
    rule = t["rule"]
    lines = [
        "# Data inspection",
        "",
        f"Encoder: {summary['encoder']}; feature `{summary['key']}`; k = {summary['k']}.",
        "",
        "| split | images | near-duplicate pairs within | likely mislabels |",
        "|---|---:|---:|---:|",
    ]
    for name, n in c["images"].items():
        mis = c["likely_mislabels"].get(name, "skipped (unlabelled)")
        lines.append(f"| {name} | {n:,} | {c['near_duplicate_pairs_within'][name]:,} | {mis} |")
    if len(c["images"]) == 2:
        lines += [
            "",
            f"Across splits: {c['near_duplicate_pairs_across']:,} near-duplicate pairs; "
            f"**{c['leaked_images']:,} images of the second split have a near-duplicate "
            "in the first** (leakage).",
        ]
    lines += [
        "",
        f"Near-duplicate threshold: cosine >= {t['cosine']:.4f} ({t['chosen']}). Rule: "
        f"nearest-neighbour cosine distances have median {rule['median_distance']:.4f} and a "
        f"robust spread of {rule['log_spread']:.3f} in log distance; the threshold is "
        f"{rule['z']:g} spreads below the median (cosine {rule['cosine']:.4f}). "
        f"{c['exact_duplicate_pairs']:,} pairs are exact (distance < {EXACT_DISTANCE:g}).",
        "",
    ]
    lines += [f"Note: {n}." for n in summary["notes"]]
    if pairs:
        lines += ["", "Closest pairs:", "", "| kind | a | b | cosine |", "|---|---|---|---:|"]
        for kind, sa, ra, sb, rb, cos in pairs[:20]:
            lines.append(f"| {kind} | {ident(sa, ra)} | {ident(sb, rb)} | {cos:.4f} |")
    lines += ["", "Files: " + ", ".join(summary["outputs"]) + ".", ""]
    return "\n".join(lines)
