"""`python tools/compare.py` = the `amdim-compare` command (amdim_tf/cli/compare.py)."""

from amdim_tf.cli.compare import main

if __name__ == "__main__":
    main()
