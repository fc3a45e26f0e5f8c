"""`python tools/train.py` = the `amdim-train` command (amdim_tf/cli/train.py)."""

from amdim_tf.cli.train import main

if __name__ == "__main__":
    main()
