"""`python tools/embed.py` = the `amdim-embed` command (amdim_tf/cli/embed.py)."""

from amdim_tf.cli.embed import main

if __name__ == "__main__":
    main()
