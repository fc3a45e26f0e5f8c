"""Bad input from a user: one line that says what was wrong and how to fix it, no traceback.

Issue 13. The commands run in this process (`conftest.run_command`: their `main()` on
a command line, stderr and the exit code captured), from another directory than the
project's, as a user runs them.
"""

import os
import re

import pytest
from conftest import ROOT, TINY, one_error_line, run_command

from amdim_tf import config_lib

TINY_FLAG = f"--config={ROOT}/{TINY}"


# -- config files that cannot be loaded (case 14) ---------------------------------------

BAD_CONFIG_FILES = {
    "syntax": ("def get_config(:\n    pass\n", r"SyntaxError: invalid syntax"),
    "raises": (
        'raise RuntimeError("no such preset")\n',
        r"RuntimeError: no such preset \(line 1\)",
    ),
    "name": (
        "def get_config():\n    return undefined_name\n",
        r"NameError: name 'undefined_name' is not defined \(line 2\)",
    ),
    # config_flags re-raises a ValueError with the whole traceback as its message.
    "value": (
        'def get_config():\n    raise ValueError("ndf must be even")\n',
        r"ValueError: ndf must be even \(line 2\)",
    ),
    "no_get_config": ("X = 1\n", r"AttributeError: .*has no attribute 'get_config'"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIG_FILES))
def test_config_file_that_fails_is_one_line(tmp_path, case):
    source, expected = BAD_CONFIG_FILES[case]
    (tmp_path / "bad.py").write_text(source)
    proc = run_command("train", "--config=bad.py", f"--workdir={tmp_path / 'run'}", cwd=tmp_path)
    line = one_error_line(proc)
    assert "cannot load --config=bad.py" in line and "configs/amdim_cifar10.py" in line
    assert re.search(expected, line), line
    assert not (tmp_path / "run").exists()


# -- config values (case 13, issue 15) ----------------------------------------------------

BAD_VALUES = [
    ("train.batch_size", 0, "an integer >= 1"),
    ("train.batch_size", -8, "an integer >= 1"),
    ("train.epochs", 0, "an integer >= 1"),
    ("train.steps_per_epoch", -1, "an integer >= 0"),
    ("train.eval_batch_size", 0, "an integer >= 1"),
    ("train.eval_steps", -1, "an integer >= 0"),
    ("train.steps_per_execution", 0, "an integer >= 1"),
    ("train.max_seconds", -5, "seconds >= 0"),
    ("optim.lr", -1e-3, "a learning rate > 0"),
    ("optim.lr", 0.0, "a learning rate > 0"),
    ("optim.lr", float("nan"), "a learning rate > 0"),
    ("optim.lr", float("inf"), "a learning rate > 0, finite"),  # issue 33 item 33
    ("train.keep_checkpoints", 0, "an integer >= 1"),  # issue 33 item 34
    ("optim.warmup_steps", -1, "an integer >= 0"),
    ("data.shuffle_buffer", 1, "an integer > 1: a buffer of 1 does not shuffle"),
    ("data.shuffle_buffer", 0, "an integer > 1"),
    ("precision", "bf16", "one of ('auto', 'float32', 'mixed_bfloat16', 'mixed_float16')"),
]


@pytest.mark.parametrize(
    "key,value,allowed", BAD_VALUES, ids=[f"{k}={v}" for k, v, _ in BAD_VALUES]
)
def test_validate_names_key_value_and_what_is_allowed(tiny_config, key, value, allowed):
    section, name = key.rsplit(".", 1) if "." in key else ("", key)
    setattr(tiny_config.get(section) if section else tiny_config, name, value)
    with pytest.raises(ValueError) as info:
        config_lib.validate(tiny_config)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"config.{key}={value!r} is not allowed; expected {allowed}")
    assert f"--config.{key}=" in message


@pytest.mark.parametrize("precision", ["auto", "float32", "mixed_bfloat16", "mixed_float16"])
def test_validate_accepts_every_precision(tiny_config, precision):
    tiny_config.precision = precision
    assert config_lib.validate(tiny_config) is tiny_config


def test_precisions_are_those_build_resolves():
    from amdim_tf.run import build

    assert set(config_lib.PRECISIONS) == set(build.PRECISIONS)
    for name in config_lib.PRECISIONS:
        build.resolve_precision(name)


@pytest.mark.parametrize("variant", [None, "tiny"])
def test_every_preset_is_valid(variant):
    import importlib.util

    presets = sorted(f for f in os.listdir(os.path.join(ROOT, "configs")) if f.endswith(".py"))
    assert presets
    for name in presets:
        spec = importlib.util.spec_from_file_location(
            name[:-3], os.path.join(ROOT, "configs", name)
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        config_lib.validate(module.get_config(variant))


def test_bad_values_through_the_tool_are_one_line(tmp_path):
    proc = run_command(
        "train",
        TINY_FLAG,
        f"--workdir={tmp_path / 'run'}",
        "--config.data.shuffle_buffer=1",
        cwd=tmp_path,
    )
    line = one_error_line(proc)
    assert "config.data.shuffle_buffer=1 is not allowed" in line
    assert not (tmp_path / "run").exists()  # refused before anything is written


@pytest.mark.parametrize(
    "flag,expected",
    [("--features=r1,r9", "use one or more of r1,r5,r7"), ("--max_train=-1", "0 for all")],
)
def test_bad_evaluate_flags_are_one_line(tiny_run, tmp_path, flag, expected):
    # The feature names are checked against the run's encoder, so a trained run is needed.
    proc = run_command("evaluate", f"--workdir={tiny_run}", flag, cwd=tmp_path)
    assert expected in one_error_line(proc)
    assert not os.path.exists(os.path.join(tiny_run, "eval.json"))  # refused, nothing written


# -- values that need the data: checked where the data is read, seen through the tool -----


def test_batch_larger_than_the_data_set_is_one_line(tmp_path):
    proc = run_command(
        "train",
        TINY_FLAG,
        f"--workdir={tmp_path / 'run'}",
        "--config.train.batch_size=5000",
        "--config.train.steps_per_epoch=0",
        cwd=tmp_path,
    )
    line = one_error_line(proc)
    assert "batch_size=5000 is larger than the 1440 training examples" in line


def write_npz(path, test_labels):
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)

    def split(n):
        encoded = [
            tf.io.encode_png(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).numpy()
            for _ in range(n)
        ]
        offsets = np.cumsum([0] + [len(e) for e in encoded])
        return np.frombuffer(b"".join(encoded), np.uint8), offsets

    (train_jpeg, train_offsets), (test_jpeg, test_offsets) = split(16), split(len(test_labels))
    np.savez(
        path,
        train_jpeg=train_jpeg,
        train_offsets=train_offsets,
        train_labels=np.arange(16) % 10,
        test_jpeg=test_jpeg,
        test_offsets=test_offsets,
        test_labels=np.asarray(test_labels),
        class_names=np.array([str(i) for i in range(10)]),
    )


def test_npz_eval_label_out_of_range_is_one_line(tmp_path):
    write_npz(tmp_path / "data.npz", [0, 1, 10, 3])
    proc = run_command(
        "train",
        TINY_FLAG,
        f"--workdir={tmp_path / 'run'}",
        "--config.data.source=npz",
        f"--config.data.path={tmp_path / 'data.npz'}",
        cwd=tmp_path,
    )
    line = one_error_line(proc)
    assert "test_labels[2] is 10; labels must be 0..9 (class_names has 10)" in line


def test_text_file_given_as_npz_is_one_line(tmp_path):
    (tmp_path / "data.npz").write_text("label,path\n0,a.png\n")
    proc = run_command(
        "train",
        TINY_FLAG,
        f"--workdir={tmp_path / 'run'}",
        "--config.data.source=npz",
        f"--config.data.path={tmp_path / 'data.npz'}",
        cwd=tmp_path,
    )
    line = one_error_line(proc)
    assert "is not an npz archive" in line and "np.savez" in line
    assert "pickled" not in line


# -- flags of the commands that read an encoder (issue 21 items 11, 12, 14) -------------

BAD_FLAGS = [
    ("embed.py", ["--batch_size=0"], "--batch_size=0 is not allowed; expected an integer >= 1"),
    ("embed.py", ["--queries=-1"], "--queries=-1 is not allowed; expected an integer >= 0"),
    ("embed.py", ["--projector_examples=-1"], "--projector_examples=-1 is not allowed"),
    ("visualize.py", ["--n=0"], "--n=0 is not allowed; expected an integer >= 2"),
    ("evaluate.py", ["--k=0"], "--k=0 is not allowed; expected an integer >= 1"),
    ("finetune.py", ["--head_lr=0", "--per_class=1"], "--head_lr=0.0 is not allowed"),
    ("finetune.py", ["--head_lr=-1", "--per_class=1"], "expected a learning rate > 0"),
    (
        "finetune.py",
        ["--seeds=-1", "--per_class=1"],
        "--seeds=-1 is not allowed; expected integers >= 0",
    ),
    ("finetune.py", ["--seeds=1,1", "--per_class=1"], "expected distinct seeds (1 repeated"),
]


@pytest.mark.parametrize("tool,args,expected", BAD_FLAGS, ids=[f"{t}{a}" for t, a, _ in BAD_FLAGS])
def test_bad_numbers_are_refused_before_any_work(tiny_run, tmp_path, tool, args, expected):
    out = tmp_path / "out"
    proc = run_command(tool, f"--encoder={tiny_run}", f"--out={out}", *args, cwd=tmp_path)
    assert expected in one_error_line(proc)
    assert not out.exists()


@pytest.mark.parametrize("tool", ["embed.py", "finetune.py", "visualize.py", "evaluate.py"])
def test_an_out_that_cannot_be_written_is_one_line(tiny_run, tmp_path, tool):
    (tmp_path / "file").write_text("not a directory")
    extra = ["--per_class=1"] if tool == "finetune.py" else []
    for out, says in [
        (tmp_path / "file", "is a file, not a directory; pass a directory"),
        (tmp_path / "file" / "sub", "is under the file"),
        # /sys is read-only even for root: the stand-in for a read-only work directory.
        ("/sys/amdim_out", "cannot write in /sys"),
    ]:
        proc = run_command(tool, f"--encoder={tiny_run}", f"--out={out}", *extra, cwd=tmp_path)
        assert says in one_error_line(proc), (out, proc.stderr[-2000:])


def test_save_keras_onto_an_existing_file_is_refused_before_embedding(tiny_run, tmp_path):
    (tmp_path / "enc.keras").write_text("old")
    out = tmp_path / "emb"
    proc = run_command(
        "embed.py", f"--encoder={tiny_run}", f"--out={out}", "--save_keras=enc.keras", cwd=tmp_path
    )
    assert "--save_keras=enc.keras is not allowed; expected a new file" in one_error_line(proc)
    assert not out.exists() and (tmp_path / "enc.keras").read_text() == "old"


def test_a_name_longer_than_a_file_system_takes_is_one_line(tmp_path):
    workdir = tmp_path / ("w" * 300)
    proc = run_command("train", TINY_FLAG, f"--workdir={workdir}", cwd=tmp_path)
    assert "is 300 bytes; file names may be at most 255 bytes" in one_error_line(proc)


def test_encoder_and_its_older_name_workdir_must_agree(tiny_run, tmp_path):
    proc = run_command("evaluate.py", f"--encoder={tiny_run}", "--workdir=elsewhere", cwd=tmp_path)
    assert "name two encoders; pass one" in one_error_line(proc)
    proc = run_command("evaluate.py", cwd=tmp_path)
    assert "pass --encoder=PATH: a work directory written by amdim-train" in one_error_line(proc)
