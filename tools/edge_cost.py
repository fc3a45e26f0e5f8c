"""`python tools/edge_cost.py` = the `amdim-edge-cost` command (amdim_tf/cli/edge_cost.py)."""

from amdim_tf.cli.edge_cost import main

if __name__ == "__main__":
    main()
