"""`ipce splits`: write seeded train/val split files in the `<out>/<k>/train.csv,val.csv` layout."""
from __future__ import annotations

import argparse


def splits_command(args: argparse.Namespace) -> int:
    from ipce.commands.check_data import records_from_args
    from ipce.datasets.splits import random_splits, split_summary, write_split_dir

    records, source = records_from_args(args)
    splits = random_splits(records, n=args.n, ratio=args.ratio, seed=args.seed, group_by=args.group_by)
    write_split_dir(args.out, records, splits)
    grouped = f", grouped by {args.group_by}" if args.group_by else ""
    print(f"{source}: {len(records)} records -> {split_summary(splits)} (seed {args.seed}{grouped}) in {args.out}")
    return 0
