"""`python tools/benchmark.py` = the `amdim-benchmark` command (amdim_tf/cli/benchmark.py)."""

from amdim_tf.cli.benchmark import main

if __name__ == "__main__":
    main()
