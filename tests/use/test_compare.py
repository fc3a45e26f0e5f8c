"""amdim_tf/use/compare.py (options, config loading, --set overrides) and amdim-compare end to
end on tiny variants; amdim-plot-run, and the curves of amdim_tf/use/report.py."""

import json
import os

import pytest
from conftest import one_error_line, run_command

from amdim_tf import presets
from amdim_tf.use import compare
from amdim_tf.use import report as plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == PNG_MAGIC


def read_json(path):
    with open(path) as f:
        return json.load(f)


def write_metrics(path, records):
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def test_curves_remove_gaps_longer_than_five_minutes(tmp_path):
    path = str(tmp_path / "metrics.jsonl")
    t0 = 1_700_000_000.0
    write_metrics(
        path,
        [
            {"step": 10, "time": t0, "probe/linear_acc": 0.1},
            {"step": 20, "time": t0 + 30, "probe/linear_acc": 0.2},
            {"step": 20, "time": t0 + 40, "probe/eval_linear_acc": 0.25},
            # Stopped here; resumed an hour later from step 20.
            {"step": 30, "time": t0 + 3640, "probe/linear_acc": 0.3},
            {"step": 40, "time": t0 + 3700, "probe/linear_acc": 0.4},
            {"step": 40, "time": t0 + 3720, "probe/eval_linear_acc": 0.45},
        ],
    )
    with open(path, "a") as f:
        f.write('{"step": 50, "ti')  # a torn last line, as a killed writer leaves
    assert plots.curves_from_metrics(path) == [(40.0, 0.25), (120.0, 0.45)]
    assert plots.curves_from_metrics(path, plots.TRAIN_LINEAR_KEY) == [
        (0.0, 0.1),
        (30.0, 0.2),
        (40.0, 0.3),
        (100.0, 0.4),
    ]
    # A gap of exactly 5 minutes is still active time.
    assert plots.active_seconds([0.0, 300.0, 601.0]) == [0.0, 300.0, 300.0]


def test_plot_probe_curves_writes_a_png(tmp_path):
    out = str(tmp_path / "sub" / "curves.png")
    plots.plot_probe_curves(
        {"AMDIM": [(0, 0.1), (400, 0.3)], "CPC": [(50, 0.2)], "empty": []}, out, "title"
    )
    assert is_png(out) and os.path.getsize(out) > 1000


def test_plot_run_tool(tmp_path):
    wd = tmp_path / "run"
    wd.mkdir()
    write_metrics(
        str(wd / "metrics.jsonl"),
        [
            {"step": 1, "time": 100.0, "probe/linear_acc": 0.1},
            {"step": 2, "time": 101.0, "probe/linear_acc": 0.2, "probe/eval_linear_acc": 0.15},
            {"step": 3, "time": 103.0, "probe/eval_knn_acc": 0.125},
        ],
    )
    out = str(tmp_path / "curve.png")
    res = run_command("plot_run", f"--workdir={wd}", f"--out={out}")
    assert res.returncode == 0, res.stderr
    assert is_png(out) and "15.0% at 1 s" in res.stdout
    assert "cosine kNN of r1): 12.5% at 3 s" in res.stdout
    assert not (tmp_path / "health_curves.png").exists()  # no health/ keys logged
    health = {"health/rank_fraction": 0.5, "health/alignment": 0.3, "health/uniformity": -2.0,
              "health/dim_std": 0.02}  # fmt: skip
    write_metrics(str(wd / "metrics.jsonl"), [
        {"step": 2, "time": 101.0, "probe/eval_knn_acc": 0.2, **health},
        {"step": 4, "time": 102.0, "probe/eval_knn_acc": 0.3, **health},
    ])  # fmt: skip
    res = run_command("plot_run", f"--workdir={wd}", f"--out={tmp_path}")
    assert res.returncode == 0, res.stderr
    assert is_png(str(tmp_path / "health_curves.png")) and "health monitors" in res.stdout
    res = run_command("plot_run", f"--workdir={tmp_path / 'missing'}")
    assert res.returncode == 2 and one_error_line(res).startswith("error: ")


def test_compare_tool_end_to_end_and_rerun_reuses(tmp_path):
    wd = str(tmp_path / "compare")
    args = [
        "--variant=tiny",
        "--data_source=digits",
        "--steps=4",
        "--eval_every=2",
        "--eval_steps=2",
        "--max_train=200",
        f"--workdir={wd}",
        "--set=train.verbose=0",
    ]
    res = run_command("compare", *args)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    with open(os.path.join(wd, "compare.md")) as f:
        md = f.read()
    rows = [
        line
        for line in md.splitlines()
        if line.startswith("| ") and not line.startswith("| method")
    ]
    assert [r.split(" | ")[0][2:] for r in rows] == [
        "AMDIM",
        "DIM(L)",
        "DIM(G)",
        "CPC",
        "raw pixels",
    ]
    assert "4 steps" in md and "digits" in md and md.split("\n\n")[1] in res.stdout
    report = read_json(os.path.join(wd, "compare.json"))
    for r in report["rows"][:4]:
        assert r["steps"] == 4 and r["encoder_params"] > 0 and r["images_per_sec"] > 0
        assert 0.0 <= r["linear_acc"] <= 1.0 and r["n_train"] == 200
        assert len(plots.curves_from_metrics(os.path.join(wd, r["method"], "metrics.jsonl"))) == 2
    assert is_png(os.path.join(wd, "compare.png"))
    # Same command again: every budget is spent and every evaluation cached.
    again = run_command("compare", *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (
        again.stdout.count("not training again") == 4 and "started from scratch" not in again.stdout
    )
    assert read_json(os.path.join(wd, "compare.json"))["rows"] == report["rows"]


def test_compare_user_errors_are_one_line(tmp_path):
    for bad in (["--methods=amdim,simclr"], ["--seconds=0"], ["--set=model.nope=1", "--steps=1"]):
        res = run_command("compare", f"--workdir={tmp_path}", *bad)
        assert res.returncode in (1, 2), (bad, res.stderr)
        one_error_line(res)


def test_overrides_parse_literals_type_check_and_address_methods():
    c = presets.load("cpc:tiny")
    compare.set_overrides(
        c,
        "cpc",
        [
            "model.ndf=64",
            "optim.lr=1",
            "optim.decay_epochs=(10, 20)",
            "data.path=123",
            "data.cache=False",
            "cpc:seed=7",
            "amdim:seed=9",
            " train.verbose =0",
        ],
    )
    assert c.model.ndf == 64 and c.optim.lr == 1.0 and isinstance(c.optim.lr, float)
    assert c.optim.decay_epochs == (10, 20) and c.data.path == "123"  # a string key stays text
    assert c.data.cache is False and c.seed == 7 and c.train.verbose == 0
    assert compare.method_override("dim_local:model.ndf=1=2") == ("dim_local", "model.ndf=1=2")
    assert compare.method_override("data.path=a:b") == (None, "data.path=a:b")
    for bad, says in [
        ("model.nope=1", "no key 'model.nope' in the cpc config"),
        ("model.ndf.x=1", "no key"),
        ("model.ndf=wide", "--set='model.ndf=wide': model.ndf='wide' is not allowed"),
        ("model.ndf", "is not KEY=VALUE"),
        ("simclr:seed=1", "'simclr' is not a method"),
    ]:
        with pytest.raises(ValueError, match=says) as e:
            compare.set_overrides(c, "cpc", [bad])
        assert "\n" not in str(e.value), bad
    assert c.model.ndf == 64  # a failed override changes nothing


def test_compare_options_refuse_bad_values_before_any_work(tmp_path):
    ok = dict(workdir=str(tmp_path / "cmp"), variants={"cpc": "tiny"})
    for bad, says in [
        (dict(methods=("amdim", "simclr")), r"unknown \['simclr'\]; choose from amdim"),
        (dict(methods=()), "choose from"),
        (dict(seconds=0, steps=0), "leave no budget"),
        (dict(eval_every=0), "--eval_every=0 must be positive"),
        (dict(overrides=("seed",)), "is not KEY=VALUE"),
        (dict(variants={"byol": "tiny"}), "unknown methods"),
    ]:
        with pytest.raises(ValueError, match=says):
            compare.CompareOptions(**{**ok, **bad})
    # A key error surfaces from compare() before any method trains or the workdir is made.
    options = compare.CompareOptions(
        **ok, methods=("amdim", "cpc"), steps=1, overrides=("cpc:cpc.nope=1",)
    )
    assert options.variant("amdim") == "parity" and options.variant("cpc") == "tiny"
    with pytest.raises(ValueError, match="no key 'cpc.nope' in the cpc config"):
        compare.compare(options)
    assert not os.path.exists(options.workdir)
