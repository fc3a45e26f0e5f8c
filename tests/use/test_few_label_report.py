"""The few-label report: the table's marks and the sentence naming the classifier."""

from amdim_tf.use import few_label_report


def test_the_table_marks_the_best_arm_of_each_budget_and_the_selection():
    rows = [
        {"arm": "frozen", "budget": "1%", "n_labels": 10, "seed": 1, "test_acc": 0.50},
        {"arm": "frozen", "budget": "1%", "n_labels": 10, "seed": 2, "test_acc": 0.60},
        {"arm": "finetune", "budget": "1%", "n_labels": 10, "seed": 1, "test_acc": 0.50,
         "selected": "linear probe"},
        {"arm": "finetune", "budget": "1%", "n_labels": 10, "seed": 2, "test_acc": 0.60,
         "selected": "bn train, backbone x1, step 40"},
        {"arm": "scratch", "budget": "1%", "n_labels": 10, "seed": 1, "test_acc": 0.20},
        {"arm": "scratch", "budget": "1%", "n_labels": 10, "seed": 2, "test_acc": 0.30},
    ]  # fmt: skip
    table = few_label_report.format_table(few_label_report.summary(rows), "T", rows)
    lines = table.splitlines()
    frozen, tuned, scratch = (next(x for x in lines if x.startswith(f"| {t}")) for t in (
        "frozen", "fine-tuned", "same network"))  # fmt: skip
    assert "**55.0%** (50.0-60.0, 2 seeds)" in frozen and "**55.0%**" in tuned
    assert "**" not in scratch and "25.0% (20.0-30.0, 2 seeds)" in scratch
    assert lines[-2:] == [
        "- 1%, seed 1: linear probe",
        "- 1%, seed 2: bn train, backbone x1, step 40",
    ]
