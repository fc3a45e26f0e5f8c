"""`python tools/inspect_data.py` = the `amdim-inspect-data` command (amdim_tf/cli/inspect_data.py)."""

from amdim_tf.cli.inspect_data import main

if __name__ == "__main__":
    main()
