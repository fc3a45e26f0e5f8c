"""`python tools/visualize.py` = the `amdim-visualize` command (amdim_tf/cli/visualize.py)."""

from amdim_tf.cli.visualize import main

if __name__ == "__main__":
    main()
