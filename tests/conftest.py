"""Shared test set-up, one definition each: quiet TF in one pytest process, the command
runners (in this process, or a fresh one when the process is what a test is about), the
tiny configs, the session's trained tiny run, and the data fixtures."""

import contextlib
import functools
import importlib
import io
import os
import subprocess
import sys
import traceback

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The tiny variant of the digits demo preset, as a user passes it (relative to ROOT).
TINY = "configs/amdim_digits_demo.py:tiny"
# The project's shared offline CIFAR-10 copy (2,000 train / 1,000 test JPEGs).
SMALL_CIFAR = os.path.join(ROOT, "..", "shared", "data", "cifar10", "cifar10-jpeg-small.npz")

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def _two_logical_cpus():
    """Splits the CPU into two logical devices, which TF allows only before it first
    initialises its devices (`pytest_configure` calls it before any test module imports
    TensorFlow), so that the 1-vs-2-replica
    tests run a MirroredStrategy over "/cpu:0" and "/cpu:1" in this process instead of a
    fresh one each (a TF start-up of ~5 s of CPU apiece). Code under test never sees the
    second device: the default strategy and every op without a device run on /cpu:0, and
    `MirroredStrategy()` without devices takes the GPUs or else /cpu:0 alone."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


@functools.cache
def two_replica_strategies():
    """(TF's default strategy, a MirroredStrategy over the two logical CPUs). One per
    process: two MirroredStrategy objects number their collectives alike, and the second
    one's all-reduce is refused as the first one's ("Collective instance 100 expected
    type 0")."""
    import tensorflow as tf

    return tf.distribute.get_strategy(), tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


# Besides tests/e2e/, what the fast tier (`-m "not e2e"`) leaves out: files whose every
# test starts processes, converters or replicas, and single tests of tens of seconds
# (BUILD.md lists the slowest). Each still runs in the whole suite, as CI runs it.
E2E_FILES = (
    "use/test_edge.py",  # LiteRT/ONNX converters and their runtimes
    "use/test_benchmark.py",  # a fresh process per row
    "use/test_compare.py",  # three methods trained end to end
    "run/test_distribute.py",  # 1 vs 2 replicas, XLA
    "run/test_run_robustness.py",  # kills, signals, resumes of real runs
)
E2E_TESTS = (
    "test_evaluation_writes_table_plot_and_a_servable_classifier",
    "test_a_folder_without_split_dirs_is_scored_on_held_out_images",
    "test_one_and_two_replicas_give_the_same_mixture_loss_and_gradients",
    "test_sigkilled_export_leftover_is_ignored_then_cleaned",
    "test_fresh_process_without_project_code_gives_same_features",
    "test_helpshort_lists_the_commands_own_flags_from_any_directory",
    "test_non_finite_loss_stops_with_the_step",
    "test_one_encoder_is_accepted_in_every_form_and_another_refused",
    # The slowest of the rest, measured idle (BUILD.md: the fast tier), each over ~3.5 s:
    # training a few steps, a Ctrl-C resume, a second process.
    "test_ctrl_c_skips_the_epoch_end_evaluations_and_resumes_identical",
    "test_stop_on_collapse_stops_after_the_epoch_checkpoint",
    "test_visualize_tool_on_a_trained_run",
    "test_off_when_num_examples_is_zero_and_inside_fit",
    "test_a_collapsed_encoder_trips_the_alarm_and_a_trained_one_does_not",
    "test_scratch_is_the_classifier_written_when_it_wins_on_the_held_out_labels",
    "test_callback_logs_images_at_its_cadence",
    "test_unlabeled_path_alone_pretrains_with_health_but_no_probes",
    "test_a_run_records_the_policy_auto_chose",
    "test_training_to_a_log_file_writes_step_lines_and_the_budget_stop_step",
    "test_train_takes_a_preset_name_from_another_directory",
    "test_a_few_steps_lower_the_loss",
    "test_bad_evaluate_flags_are_one_line",
    "test_interrupted_overwrite_keeps_the_old_version",
    "test_the_environment_is_set_before_tensorflow_loads_and_a_users_value_wins",
    "test_a_writer_never_replaces_an_output_another_finished_meanwhile",
    "test_large_images_decode_bounded_and_small_ones_exactly",
    "test_a_ctrl_c_is_acknowledged_while_the_step_still_runs",
    "test_a_training_log_file_has_a_line_per_epoch_not_per_step",
    "test_fine_tuned_arm_is_the_frozen_probe_when_training_cannot_beat_it",
    "test_zero_labels_in_probe_give_chance_accuracy_on_real_labels",
    "test_input_context_gives_disjoint_shards",
    "test_a_new_embedding_replaces_the_previous_one_whole",
    "test_interrupted_export_leaves_nothing_and_a_rerun_succeeds",
    "test_each_objective_trains_a_few_steps",
    "test_tfsm_layer_gives_same_features",
    "test_tfrecord_corrupt_byte_skips_the_rest_of_that_file_only",
    "test_the_tool_embeds_cifar_npz_with_class_names",
)


def pytest_collection_modifyitems(config, items):
    """Marks `e2e` everything under tests/e2e/ and the heavy tests named above."""
    root = os.path.dirname(os.path.abspath(__file__))
    e2e = os.path.join(root, "e2e") + os.sep
    files = {os.path.join(root, f) for f in E2E_FILES}
    for item in items:
        path = str(item.path)
        if path.startswith(e2e) or path in files or item.originalname in E2E_TESTS:
            item.add_marker(pytest.mark.e2e)


def pytest_configure(config):
    # In the processes that run tests, before any test module imports TensorFlow; not in
    # pytest-xdist's controller, which runs none and need not load TensorFlow at all.
    if os.environ.get("PYTEST_XDIST_WORKER") or not getattr(config.option, "numprocesses", 0):
        _two_logical_cpus()


# -- commands ---------------------------------------------------------------------------


def fresh_env():
    """The environment of a fresh user or client process: quiet TF, no PYTHONPATH, so
    nothing points at this repository."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return env


def run_tool(name, *args, cwd=ROOT, env_extra=None, timeout=300, wait=True, log=None):
    """Runs tools/<name> as a user would: a fresh Python, quiet TF, no PYTHONPATH. For tests
    about the process itself (signals, kills, the lock, exit codes of a real process);
    everything else calls `run_command`.

    Returns the finished CompletedProcess (stdout/stderr as text), or with wait=False
    the running Popen (stderr merged into stdout; into the file at path `log` if given, for
    a process nobody reads while it runs, which must not fill a pipe and block).
    """
    env = {**fresh_env(), **(env_extra or {})}
    cmd = [sys.executable, os.path.join(ROOT, "tools", name), *args]
    if not wait and log:
        with open(log, "w") as out:  # the child holds its own copy of the descriptor
            return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    if not wait:
        return subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@contextlib.contextmanager
def _working_directory(path):
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def run_command(name, *args, cwd=ROOT):
    """Runs the command `amdim-<name>` (amdim_tf/cli/<name>.py) in this process, as
    `run_tool` would in a fresh one: its `main()` on `args`, stdout and stderr captured,
    an exit code (2 for a user error, 1 and a traceback for an uncaught exception).

    absl flags are process-global and each command defines its own at import, so the
    command module is imported fresh and the flags it defined are deleted afterwards:
    the next command (or the same one again) starts from a clean set. sys.argv is the
    command line meanwhile (config_flags reads --config.KEY overrides from it), and the
    module config_flags runs a config file as (`<flag>_config`, which it would otherwise
    re-run in the namespace of the previous file) is dropped afterwards.
    """
    from absl import app, flags, logging

    from amdim_tf import cli

    app.define_help_flags()  # once per process: kept, not counted as the command's
    module_name = f"amdim_tf.cli.{name.removesuffix('.py')}"
    before, was_parsed = set(flags.FLAGS), flags.FLAGS.is_parsed()
    modules = set(sys.modules)
    verbosity = logging.get_verbosity()
    main_doc, sys_argv = sys.modules["__main__"].__doc__, sys.argv
    argv = [f"amdim-{name.removesuffix('.py')}", *args]
    out, err = io.StringIO(), io.StringIO()
    code = 0
    sys.modules.pop(module_name, None)
    try:
        with (
            _working_directory(cwd),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            sys.argv = argv
            try:
                importlib.import_module(module_name).main(argv)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        sys.modules.pop(module_name, None)
        for name in set(sys.modules) - modules:
            if name.endswith("_config") and "." not in name:
                del sys.modules[name]
        for flag in set(flags.FLAGS) - before:
            delattr(flags.FLAGS, flag)
        if not was_parsed:
            flags.FLAGS.unparse_flags()
        cli.clear_data_overrides()
        logging.set_verbosity(verbosity)
        sys.modules["__main__"].__doc__, sys.argv = main_doc, sys_argv
    return subprocess.CompletedProcess([name, *args], code, out.getvalue(), err.getvalue())


def one_error_line(result):
    """The single 'error: ...' line of a failed command (asserting there is no traceback);
    `result` is what `run_command` or `run_tool` returned. TF's C++ start-up lines of a
    fresh process are not ours and are ignored."""
    assert result.returncode not in (0, None), result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    ours = [
        line
        for line in result.stderr.splitlines()
        if line.strip() and not line.startswith(("I0000", "WARNING", "E0000", "W0000"))
    ]
    assert ours == lines, result.stderr[-3000:]
    return lines[0]


# -- tiny configs and the session's trained run -----------------------------------------


def tiny_run_config():
    """The tiny digits config (3 steps of batch 8 an epoch, one epoch, widths of 8), silent
    and without the view-pair image: what a test trains when it needs a run."""
    from amdim_tf import config_lib

    c = config_lib.make_tiny(config_lib.base_config())
    c.data.source = "digits"
    c.train.log_view_pairs = 0
    c.train.verbose = 0
    return c


@pytest.fixture
def tiny_config():
    """`tiny_run_config()` as `make_tiny` leaves it (progress bar and view pairs on)."""
    from amdim_tf import config_lib

    c = tiny_run_config()
    tiny = config_lib.make_tiny(config_lib.base_config())
    c.train.log_view_pairs = tiny.train.log_view_pairs
    c.train.verbose = tiny.train.verbose
    return c


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A work directory of a finished `tiny_run_config()` run, trained once per test
    session. Read only: a test that writes into a run copies it first."""
    from amdim_tf.run.train import train

    workdir = str(tmp_path_factory.mktemp("tiny_run"))
    train(tiny_run_config(), workdir)
    return workdir


def latest_step(workdir):
    """The step of the newest checkpoint the state file of WORKDIR/checkpoints names, -1 if none."""
    import tensorflow as tf

    path = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
    return int(path.rsplit("-", 1)[1]) if path else -1


# -- data --------------------------------------------------------------------------------


def make_data(**overrides):
    """The `data` section of the base config (its one set of defaults), made small: the
    digits source, a shuffle buffer of 16, then `overrides`."""
    from amdim_tf import config_lib

    d = config_lib.base_config().data
    d.source = "digits"
    d.name = ""
    d.shuffle_buffer = 16
    d.update(overrides)
    return d


@pytest.fixture
def cifar_npz():
    """The shared small CIFAR-10 npz, as a path relative to the current directory."""
    if not os.path.exists(SMALL_CIFAR):
        pytest.skip(
            f"{SMALL_CIFAR} is absent (the project's shared data, see "
            "../shared/data/README.md); skipping tests on real CIFAR-10."
        )
    return os.path.relpath(SMALL_CIFAR)
