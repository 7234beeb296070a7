"""Train the agiqa1k preset: `python train_aigc_agiqa1k.py [flags]` is `ipce train --preset agiqa1k [flags]`."""
import sys

from ipce.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "--preset", "agiqa1k", *sys.argv[1:]]))
