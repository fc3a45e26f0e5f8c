"""`python tools/export.py` = the `amdim-export` command (amdim_tf/cli/export.py)."""

from amdim_tf.cli.export import main

if __name__ == "__main__":
    main()
