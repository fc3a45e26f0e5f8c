"""`python tools/plot_run.py` = the `amdim-plot-run` command (amdim_tf/cli/plot_run.py)."""

from amdim_tf.cli.plot_run import main

if __name__ == "__main__":
    main()
