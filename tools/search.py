"""`python tools/search.py` = the `amdim-search` command (amdim_tf/cli/search.py)."""

from amdim_tf.cli.search import main

if __name__ == "__main__":
    main()
