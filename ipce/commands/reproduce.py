"""`ipce reproduce`: the paper's table in one command. Flags -> ReproduceConfig ->
ipce.engine.reproduce.run; every training flag of `ipce train` is passed to each row's run."""
from __future__ import annotations

import argparse

from ipce.commands.flags import EXIT_ERROR, EXIT_OK, number_list, train_overrides, use_cores

# the flags of `ipce train` that `ipce reproduce` sets itself, per row or for the whole table
LEFT_OUT = ("--preferences", "--preset", "--target", "--annotations", "--images", "--image-col", "--prompt-col",
            "--target-col", "--mos-range", "--protocol", "--splits", "--splits-dir", "--out", "--resume")


def add_reproduce_arguments(p: argparse.ArgumentParser) -> None:
    """The reproduction's own flags (the training flags come from ipce.commands.train)."""
    from ipce.engine.reproduce import ROWS

    table = p.add_argument_group("the table")
    table.add_argument("--rows", default=",".join(ROWS), metavar="PRESET:TARGET,...",
                       help="which rows, a preset alone meaning its default target (default: all: %(default)s)")
    table.add_argument("--splits", choices=["original", "random"], default="original",
                       help="original: the original authors' split folders, shipped with ipce (the paper's "
                            "splits); random: seeded splits (--n-splits, --ratio, --seed)")
    table.add_argument("--protocol", choices=["paper", "holdout"], default="paper",
                       help="paper: the epoch is chosen on the held-out part it is reported on (as published); "
                            "holdout: chosen on a validation part, reported on a test part (with original splits: "
                            "the original held-out part, validation carved from the training rows by "
                            "--holdout-ratios)")
    table.add_argument("--only-splits", type=number_list, default=(), metavar="LIST",
                       help="which splits to run, e.g. 1 or 1,3 or 1-5 (original: folder numbers; AGIQA-1K's "
                            "start at 0) (default: all; --n-splits N: the first N)")
    table.add_argument("--out", default="reproduction", help="folder of the reproduction: one run folder per row, "
                                                             "table.md, table.json, table.png")
    table.add_argument("--resume", action="store_true",
                       help="continue the reproduction in --out: finished rows and splits are kept, the split in "
                            "progress resumes from its last epoch (only --device, --workers, --no-progress and "
                            "the speed flags may change)")
    table.add_argument("--estimate-only", action="store_true",
                       help="print the estimate (epochs, images, time from a timed warm-up) and exit")
    table.add_argument("--warmup-steps", type=int, default=2, metavar="N",
                       help="timed training and evaluation steps per backbone for the estimate")


def reproduce_command(args: argparse.Namespace) -> int:
    from ipce.engine.reproduce import ReproduceConfig, parse_rows, run
    from ipce.utils.threads import split_cores

    # --splits, --protocol, --out and --resume are the reproduction's own, not the rows' settings
    overrides = {k: v for k, v in train_overrides(args).items()
                 if v is not None and k not in ("splits", "protocol", "out", "resume")}
    overrides.setdefault("workers", split_cores(args.threads, None)[1])  # not given: the split of the usable cores
    config = ReproduceConfig(rows=parse_rows(args.rows), splits=args.splits, protocol=args.protocol,
                             only_splits=tuple(args.only_splits), out=args.out, resume=args.resume,
                             estimate_only=args.estimate_only, warmup_steps=max(1, args.warmup_steps),
                             overrides=overrides)
    use_cores(argparse.Namespace(threads=args.threads, workers=config.overrides.get("workers")))
    table = run(config)
    failed = [r["row"] for r in table.get("rows", []) if r["status"] == "failed"]
    if failed:
        print(f"failed: {', '.join(failed)} (see the notes of the table)")
        return EXIT_ERROR
    return EXIT_OK
