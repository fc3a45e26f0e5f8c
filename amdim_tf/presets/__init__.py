"""The run presets that ship with the package, and the one rule that names them.

A preset is a module here with `get_config(variant=None)` returning an
`ml_collections.ConfigDict`; its docstring gives the command, the cost and the
expected result. The naming rule, for `--config` of every command and for
`load`:

    NAME[:VARIANT]   a bare name (no "/", no ".py") is a preset of this package:
                     amdim_cifar10_cpu:parity, amdim_digits_demo:tiny, cpc
    PATH[:VARIANT]   anything else is a config file, executed as ml_collections'
                     config_flags does: configs/amdim_cifar10.py:tiny

so the same preset is `--config=amdim_cifar10` from any directory and
`--config=configs/amdim_cifar10.py` from a checkout (a thin shim there).
"""

import importlib
import importlib.util
import os
import pkgutil

import ml_collections

from amdim_tf.errors import UserError

_HERE = os.path.dirname(os.path.abspath(__file__))


def names() -> tuple[str, ...]:
    """The preset names, sorted: `amdim_cifar10`, `amdim_cifar10_cpu`, ..."""
    return tuple(
        sorted(m.name for m in pkgutil.iter_modules([_HERE]) if not m.name.startswith("_"))
    )


def is_preset_name(spec: str) -> bool:
    """Whether `spec` ("NAME[:VARIANT]" or "PATH[:VARIANT]") names a preset, by the rule above."""
    name = spec.split(":", 1)[0]
    return bool(name) and os.sep not in name and "/" not in name and not name.endswith(".py")


def preset_file(name: str) -> str:
    """The file of the preset `name`; a one-line ValueError listing the presets if none."""
    if name not in names():
        raise UserError(
            f"no preset named {name!r}; choose one of {', '.join(names())}, or pass a config "
            "file path (with '/' or '.py'), e.g. --config=configs/amdim_cifar10.py"
        )
    return os.path.join(_HERE, name + ".py")


def resolve(spec: str) -> str:
    """`spec` with a preset name replaced by its file, the variant kept; a path unchanged.

    `amdim_cifar10_cpu:parity` -> `<package>/presets/amdim_cifar10_cpu.py:parity`, the
    form config_flags reads.
    """
    if not is_preset_name(spec):
        return spec
    name, colon, variant = spec.partition(":")
    return preset_file(name) + colon + variant


def load(spec: str) -> ml_collections.ConfigDict:
    """The locked config of `spec` (a preset name or a file path, each with an optional
    ":VARIANT"), as `--config=spec` gives it.

    Like config_flags: `get_config()` without an argument when there is no variant,
    and the result locked, so that an override of a key the config does not have is an
    error instead of a new key.
    """
    path, _, variant = resolve(spec).partition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path} does not exist; pass an existing file.")
    if os.path.dirname(path) == _HERE:
        module = importlib.import_module(f"{__name__}.{os.path.basename(path)[:-3]}")
    else:
        name = os.path.splitext(os.path.basename(path))[0]
        file_spec = importlib.util.spec_from_file_location(f"{name}_config", path)
        module = importlib.util.module_from_spec(file_spec)
        file_spec.loader.exec_module(module)
    config = module.get_config(variant) if variant else module.get_config()
    config.lock()
    return config
