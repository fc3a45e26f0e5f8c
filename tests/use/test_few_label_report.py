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


def test_the_choice_says_when_the_held_out_labels_cannot_tell_the_arms_apart():
    choice = {
        "arm": "scratch", "budget": "10/class", "seed": 1, "n_held_out": 20,
        "held_out": {"finetune": 0.70, "scratch": 0.75}, "runner_up": "finetune",
        "margin": 0.05, "noise": few_label_report.held_out_noise(0.75, 20),
    }  # fmt: skip
    text = few_label_report.choice_text(choice)
    assert "same network from scratch, the best arm on the 20 held-out labels" in text
    assert "75.0% against 70.0% for fine-tuned (pretrained init)" in text
    assert "a margin of 5.0 points; the held-out noise (one standard error) is 9.7 points" in text
    assert "cannot tell the two apart" in text and "Pretraining did not help here" in text
    tuned = few_label_report.choice_text({**choice, "arm": "finetune", "margin": 0.2})
    assert "cannot tell" not in tuned and "Pretraining" not in tuned
    assert few_label_report.held_out_noise(1.0, 20) == 1 / 20  # at least one image
