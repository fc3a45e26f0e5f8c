"""Reading a --config flag (a config_flags file flag) into a checked config."""

from amdim_tf.cli.runner import fail
from amdim_tf.errors import UserError, first_line


def load_config_flag(flag):
    """The value of a config_flags flag, checked by `config_lib.validate`; a one-line
    error if its file cannot be loaded (config_flags defers a missing file's error, which
    would otherwise surface deep in a run) or a value cannot work."""
    config = flag.value
    try:
        config.keys()
    except (OSError, ImportError, SyntaxError, AttributeError) as e:
        fail(
            f"cannot load --config={config_filename(flag)}: {first_line(e)}; "
            "pass a preset name such as amdim_cifar10 or an existing file such as "
            "configs/amdim_cifar10.py"
        )
    from amdim_tf import config_lib

    try:
        return config_lib.validate(config)
    except UserError as e:
        fail(first_line(e))


def config_filename(flag) -> str:
    """The file a config_flags flag was given ('?' if none)."""
    from absl import flags

    return getattr(flags.FLAGS[flag.name], "config_filename", "?")
