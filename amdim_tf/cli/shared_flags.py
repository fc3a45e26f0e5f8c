"""Flags that several commands define, one name per concept: --encoder (and its older
name --workdir) and --config.data.KEY=VALUE."""

import sys

from amdim_tf.cli.command_line import DATA_FLAG
from amdim_tf.cli.runner import fail


def _owner(module_name: str) -> str:
    # --helpshort lists the flags of the module named sys.argv[0] when run as a script.
    return sys.argv[0] if module_name == "__main__" else module_name


def define_data_overrides(module_name: str, help_string: str) -> None:
    """Declares that the command `module_name` takes --config.data.KEY=VALUE (repeatable)."""
    from absl import flags

    flags.DEFINE_string(DATA_FLAG, None, help_string)
    # Listed by --helpshort with the command's flags, not this module's.
    flags.FLAGS.register_key_flag_for_module(_owner(module_name), flags.FLAGS[DATA_FLAG])


def define_encoder_flags(module_name: str, help_string: str) -> None:
    """Declares --encoder (the encoder a command reads) and --workdir, its older name.

    Commands that read an encoder (evaluate, embed, export, finetune, visualize) name it
    --encoder; --workdir stays accepted there so existing command lines keep working
    (`encoder_path` refuses the two naming different things).
    """
    from absl import flags

    flags.DEFINE_string("encoder", None, help_string)
    flags.DEFINE_string("workdir", None, "The older name of --encoder (pass one of the two).")
    for name in ("encoder", "workdir"):
        flags.FLAGS.register_key_flag_for_module(_owner(module_name), flags.FLAGS[name])


def encoder_path(
    what: str = "a work directory, a .keras file or a SavedModel export", required: bool = True
) -> str | None:
    """The encoder of --encoder (or --workdir); a one-line error if two are given, or none
    and `required`."""
    from absl import flags

    encoder, workdir = flags.FLAGS["encoder"].value, flags.FLAGS["workdir"].value
    if encoder and workdir and encoder != workdir:
        fail(
            f"--encoder={encoder} and --workdir={workdir} name two encoders; pass one "
            "(--workdir is the older name of --encoder)."
        )
    if required and not (encoder or workdir):
        fail(f"pass --encoder=PATH: {what} (see --help).")
    return encoder or workdir
