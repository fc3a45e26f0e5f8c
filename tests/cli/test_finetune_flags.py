"""amdim-finetune's budget and candidate flags (issue 32 item 8): --max_steps alone caps
the budget, below --min_steps too, and a refused value names its flag."""

import pytest
from conftest import one_error_line, run_command


def _finetune(tmp_path, monkeypatch, *args):
    """Runs the command with the library call replaced; returns (process, its recipe)."""
    from amdim_tf.use import finetune

    seen = {}

    def library_call(workdir, out, budgets, **kwargs):
        seen.update(kwargs)
        return {"table": "", "paths": {}}

    monkeypatch.setattr(finetune, "run_few_label_evaluation", library_call)
    proc = run_command("finetune", "--encoder=run", f"--out={tmp_path / 'o'}", *args)
    return proc, seen.get("recipe")


def test_max_steps_alone_caps_the_budget_below_min_steps(tmp_path, monkeypatch):
    proc, recipe = _finetune(tmp_path, monkeypatch, "--per_class=10", "--max_steps=40")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert recipe.min_steps == 200 and recipe.max_steps == 40
    assert recipe.steps(100) == 40 and recipe.steps(100_000) == 40


def test_min_steps_0_is_no_floor(tmp_path, monkeypatch):
    proc, recipe = _finetune(tmp_path, monkeypatch, "--per_class=10", "--min_steps=0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert recipe.steps(80) == 30 * 2  # 30 epochs of 2 batches of 64


@pytest.mark.parametrize(
    "value,expected",
    [
        ("adapt:1", "--candidates=adapt:1 is not allowed: candidate ('adapt', 1.0): expected a"),
        ("frozen", "--candidates=frozen is not allowed: candidate 'frozen': expected BN:MULTI"),
        ("train:-1", "--candidates=train:-1 is not allowed: candidate ('train', -1.0)"),
    ],
)
def test_a_refused_candidate_names_the_flag(tmp_path, monkeypatch, value, expected):
    proc, recipe = _finetune(tmp_path, monkeypatch, "--per_class=1", f"--candidates={value}")
    assert proc.returncode == 2 and recipe is None
    assert one_error_line(proc).startswith(f"error: {expected}")


def test_a_negative_step_flag_names_itself(tmp_path, monkeypatch):
    proc, _ = _finetune(tmp_path, monkeypatch, "--per_class=1", "--max_steps=-1")
    assert one_error_line(proc).startswith("error: --max_steps=-1 is not allowed")
