"""Train the aigciqa2023 preset: `python train_aigc_aigciqa2023.py [flags]` is `ipce train --preset aigciqa2023 [flags]`."""
import sys

from ipce.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "--preset", "aigciqa2023", *sys.argv[1:]]))
