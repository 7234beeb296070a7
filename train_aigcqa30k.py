"""Train the aigcqa30k preset: `python train_aigcqa30k.py [flags]` is `ipce train --preset aigcqa30k [flags]`."""
import sys

from ipce.commands.train import script_main

if __name__ == "__main__":
    sys.exit(script_main("aigcqa30k"))
