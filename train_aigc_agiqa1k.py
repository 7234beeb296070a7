"""Train the agiqa1k preset: `python train_aigc_agiqa1k.py [flags]` is `ipce train --preset agiqa1k [flags]`."""
import sys

from ipce.commands.train import script_main

if __name__ == "__main__":
    sys.exit(script_main("agiqa1k"))
