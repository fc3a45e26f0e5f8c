"""`python tools/finetune.py` = the `amdim-finetune` command (amdim_tf/cli/finetune.py)."""

from amdim_tf.cli.finetune import main

if __name__ == "__main__":
    main()
