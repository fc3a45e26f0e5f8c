"""`python tools/evaluate.py` = the `amdim-evaluate` command (amdim_tf/cli/evaluate.py)."""

from amdim_tf.cli.evaluate import main

if __name__ == "__main__":
    main()
