"""`ipce splits`: write seeded train/val split files in the `<out>/<k>/train.csv,val.csv` layout; with
`--from DIR`, check existing split folders against the dataset without writing anything; with
`--export original`, write the original authors' split folders that ship with ipce."""
from __future__ import annotations

import argparse
import json

from ipce.commands.flags import annotations_from_args, records_from_args
from ipce.errors import IpceError


def splits_command(args: argparse.Namespace) -> int:
    if getattr(args, "from_dir", None):
        return check_split_files(args)
    if not args.out:
        raise IpceError("--out: required (the folder for the split files), unless --from DIR checks existing ones")
    if getattr(args, "export", None):
        return export_original(args)
    from ipce.datasets.splits import random_splits, split_summary, write_split_dir

    records, source = records_from_args(args)
    splits = random_splits(records, n=args.n_splits, ratio=args.ratio, seed=args.seed, group_by=args.group_by)
    write_split_dir(args.out, records, splits)
    grouped = f", grouped by {args.group_by}" if args.group_by else ""
    print(f"{source}: {len(records)} records -> {split_summary(splits)} (seed {args.seed}{grouped}) in {args.out}")
    return 0


def check_split_files(args: argparse.Namespace) -> int:
    """Exit 0 when every split folder has training and held-out records, 1 otherwise."""
    from ipce.datasets.splits import read_split_dir, unusable_splits

    found, source = annotations_from_args(args)
    _, checks = read_split_dir(args.from_dir, found.records)
    if args.json:
        print(json.dumps([c.counts() for c in checks]))
    else:
        print(f"{args.from_dir} against {source} ({len(found.records)} records):")
        for check in checks:
            print(check.line())
        for warning in found.warnings:
            print(f"warning: {warning.message}")
    bad = unusable_splits(checks)
    if bad:
        if not args.json:
            print(f"unusable: split {', '.join(str(c.split) for c in bad)} (no training or no held-out record)")
        return 1
    return 0


def export_original(args: argparse.Namespace) -> int:
    from ipce.datasets.splits import original_splits, write_original_split_dir

    if not args.preset:
        raise IpceError("--export original: pass --preset NAME (agiqa1k, agiqa3k, aigciqa2023 or aigcqa30k)")
    originals = original_splits(args.preset)
    numbers = write_original_split_dir(args.preset, args.out)
    trains = sorted(len(train) for _, train, _ in originals.splits)
    vals = sorted(len(val) for _, _, val in originals.splits)

    def span(sizes: list[int]) -> str:
        return str(sizes[0]) if sizes[0] == sizes[-1] else f"{sizes[0]}-{sizes[-1]}"

    print(f"{args.preset}: the original authors' Database/{originals.folder} splits, folders "
          f"{numbers[0]}..{numbers[-1]} (train {span(trains)} rows, val {span(vals)} rows) in {args.out}")
    return 0
