"""config.precision="auto": mixed_bfloat16 where bf16 is fast, float32 elsewhere, recorded."""

import json
import os

import pytest

from amdim_tf.run import train as train_lib
from amdim_tf.run.build import resolve_precision


def _cpuinfo(tmp_path, flags):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: fpu sse2 {flags}\n\n")
    return str(path)


def test_auto_is_bf16_on_cpus_with_avx512_bf16_or_amx(tmp_path):
    assert resolve_precision("auto", _cpuinfo(tmp_path, "avx512f avx512_bf16")) == "mixed_bfloat16"
    assert resolve_precision("auto", _cpuinfo(tmp_path, "amx_tile amx_bf16")) == "mixed_bfloat16"
    assert resolve_precision("auto", _cpuinfo(tmp_path, "avx2 avx512f")) == "float32"
    assert resolve_precision("auto", str(tmp_path / "absent")) == "float32"


def test_explicit_policies_pass_through_and_typos_are_refused(tmp_path):
    flags = _cpuinfo(tmp_path, "avx512_bf16")
    for name in ("float32", "mixed_bfloat16", "mixed_float16"):
        assert resolve_precision(name, flags) == name
    with pytest.raises(ValueError, match="config.precision='bf16'.*available"):
        resolve_precision("bf16")


def test_a_run_records_the_policy_auto_chose(tiny_config, tmp_path):
    tiny_config.precision = "auto"
    tiny_config.train.verbose = 0
    wd = str(tmp_path / "run")
    model, _ = train_lib.train(tiny_config, wd)
    with open(os.path.join(wd, "config.json")) as f:
        recorded = json.load(f)["precision"]
    assert recorded == resolve_precision("auto") != "auto"
    assert model.encoder.dtype_policy.name == recorded
    assert tiny_config.precision == "auto"  # the caller's config is left as it was
