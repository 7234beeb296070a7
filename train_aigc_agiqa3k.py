"""Train the agiqa3k preset: `python train_aigc_agiqa3k.py [flags]` is `ipce train --preset agiqa3k [flags]`."""
import sys

from ipce.commands.train import script_main

if __name__ == "__main__":
    sys.exit(script_main("agiqa3k"))
