"""Train the agiqa3k preset: `python train_aigc_agiqa3k.py [flags]` is `ipce train --preset agiqa3k [flags]`."""
import sys

from ipce.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "--preset", "agiqa3k", *sys.argv[1:]]))
