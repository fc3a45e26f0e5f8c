"""tools/benchmark.py's measurements: one row in a fresh process, its failure as a row."""

import pytest

from amdim_tf.use import benchmark


def test_a_row_runs_in_its_own_process_and_reports_against_the_peak(tiny_config):
    config = benchmark.with_model(tiny_config, "tiny")
    row = benchmark.measure_isolated(config, batch_size=4, steps=2, warmup=1)
    assert "error" not in row, row
    assert row["batch"] == 4 and row["steps_timed"] == 2 and row["replicas"] == 1
    assert row["images_per_sec"] > 0 and row["step_seconds"] > 0
    assert row["forward_gflop_per_image"] > 0 and row["peak_gflops"] > 0
    assert row["fraction_of_peak"] == pytest.approx(row["gflops_per_sec"] / row["peak_gflops"])
    assert row["peak_dtype"] == "float32" and row["device"] == "CPU"
    assert row["peak_memory_gib"] > 0.1


def test_a_failing_row_is_reported_not_raised(tiny_config):
    tiny_config.distribute = "multiworker"  # the benchmark runs on one host
    row = benchmark.measure_isolated(tiny_config, batch_size=4, steps=1, warmup=1)
    assert row["batch"] == 4 and "must be 'default' or 'mirrored'" in row["error"], row


def test_model_shapes_and_precision_names(tiny_config):
    big = benchmark.with_model(tiny_config, "large10")
    assert (big.model.ndf, big.model.n_rkhs, big.model.n_depth) == (256, 2048, 10)
    assert tiny_config.model.ndf == 8  # the original is untouched
    assert benchmark.precision_policy("bf16") == "mixed_bfloat16"
    with pytest.raises(ValueError, match="available"):
        benchmark.with_model(tiny_config, "huge")
    with pytest.raises(ValueError, match="available"):
        benchmark.precision_policy("int8")


def test_profiled_steps_are_broken_down_by_op_type(tiny_config, tmp_path):
    config = benchmark.with_model(tiny_config, "tiny")
    # In its own process, as amdim-benchmark runs every row: TF's profiler records no op
    # time in a process that has already trained (seen after other tests in one worker).
    row = benchmark.measure_isolated(
        config, batch_size=4, steps=1, warmup=1, profile_dir=str(tmp_path)
    )
    prof = row["profile"]
    assert prof["wall_seconds"] > 0 and prof["op_seconds"] > 0
    types = [t for t, _, _ in prof["by_type"]]
    assert any("Conv2D" in t for t in types), types  # the encoder's convolutions ran
    assert sum(share for _, _, share in prof["by_type"]) <= 1.0 + 1e-9
    with pytest.raises(FileNotFoundError, match="no profile"):
        benchmark.op_time_by_type(str(tmp_path / "empty"))
