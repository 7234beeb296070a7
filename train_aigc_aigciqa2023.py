"""Train the aigciqa2023 preset: `python train_aigc_aigciqa2023.py [flags]` is `ipce train --preset aigciqa2023 [flags]`."""
import sys

from ipce.commands.train import script_main

if __name__ == "__main__":
    sys.exit(script_main("aigciqa2023"))
