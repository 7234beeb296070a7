"""Train the aigcqa30k preset: `python train_aigcqa30k.py [flags]` is `ipce train --preset aigcqa30k [flags]`."""
import sys

from ipce.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "--preset", "aigcqa30k", *sys.argv[1:]]))
