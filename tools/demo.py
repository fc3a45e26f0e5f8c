"""`python tools/demo.py` = the `amdim-demo` command (amdim_tf/cli/demo.py)."""

from amdim_tf.cli.demo import main

if __name__ == "__main__":
    main()
