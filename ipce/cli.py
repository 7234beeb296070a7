"""The `ipce` command. Each subcommand only parses its flags and calls the library."""
from __future__ import annotations

import argparse
import sys

from ipce.errors import IpceError


def _add_score(sub: argparse._SubParsersAction) -> None:
    from ipce.commands.predict import add_speed_arguments

    p = sub.add_parser("score", help="score images against a prompt with a checkpoint")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--prompt", required=True, help="the prompt the images were generated from")
    p.add_argument("--checkpoint", required=True,
                   help="ipce checkpoint, seed checkpoint, or a backbone name such as ViT-B-32 or tiny; scores "
                        "come on the scale it was trained on (0..5, or its --mos-range)")
    p.add_argument("--resize", type=int, default=None, help="adaptive-resize size S (default: checkpoint's)")
    p.add_argument("--patches", type=int, default=None, help="number of evaluation crops (default: checkpoint's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="evaluation precision (default: fp32)")
    add_speed_arguments(p)
    p.add_argument("--out", default=None, help="write image,prompt,score to this CSV")
    p.set_defaults(run=_run_score)


def _run_score(args: argparse.Namespace) -> int:
    from ipce.commands.score import score_command
    return score_command(args)


def _add_data_source_arguments(p: argparse.ArgumentParser) -> None:
    """A published dataset (--preset) or custom annotations (--annotations/--images)."""
    p.add_argument("--preset", default=None, help="agiqa1k, agiqa3k, aigciqa2023 or aigcqa30k")
    p.add_argument("--data-root", default="data", help="folder holding the dataset folders (default: data)")
    p.add_argument("--subset", default=None, help="aigcqa30k: train, val or test (default: train)")
    p.add_argument("--target", default=None, help="which score, e.g. quality, alignment, correspondence")
    p.add_argument("--annotations", default=None, help="custom CSV/XLSX with a header (instead of --preset)")
    p.add_argument("--images", default=None, help="folder the custom image names are relative to")
    p.add_argument("--image-col", default="image", help="custom: image column (default: image)")
    p.add_argument("--prompt-col", default="prompt", help="custom: prompt column (default: prompt)")
    p.add_argument("--target-col", default=None, help="custom: score column (default: mos, optional)")
    p.add_argument("--duplicates", choices=("keep", "first", "mean"), default="keep",
                   help="an image listed more than once: keep every row as published (default), "
                        "the first row, or one row with the mean score")


def _add_check_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-data", help="decode every image of a dataset and report problems")
    _add_data_source_arguments(p)
    p.add_argument("--report", default=None, help="write problems and warnings to this CSV (path,row,severity,problem)")
    p.add_argument("--workers", type=int, default=2, help="decoding threads (default: 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_check_data)


def _run_check_data(args: argparse.Namespace) -> int:
    from ipce.commands.check_data import check_data_command
    return check_data_command(args)


def _add_splits(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("splits", help="write seeded train/val split files (<out>/<k>/train.csv, val.csv), "
                                      "or check split files (--from)")
    _add_data_source_arguments(p)
    p.add_argument("--out", default=None, help="folder for the split files (required unless --from)")
    p.add_argument("--from", dest="from_dir", default=None, metavar="DIR",
                   help="check the split folders DIR/<k>/train.csv, val.csv against the dataset instead "
                        "(read-only): one line per split with train, val, missing and overlap counts")
    p.add_argument("--json", action="store_true", help="with --from: print the counts as a JSON list")
    p.add_argument("--n", type=int, default=10, help="number of splits (default: 10)")
    p.add_argument("--ratio", type=float, default=0.8, help="training fraction (default: 0.8)")
    p.add_argument("--seed", type=int, default=20200626, help="random seed (default: 20200626)")
    p.add_argument("--group-by", default=None, choices=["prompt", "generator"],
                   help="keep all records with the same prompt (or generator) on one side")
    p.set_defaults(run=_run_splits)


def _run_splits(args: argparse.Namespace) -> int:
    from ipce.commands.splits import splits_command
    return splits_command(args)


def _add_train(sub: argparse._SubParsersAction) -> None:
    from ipce.commands.train import add_train_arguments

    p = sub.add_parser("train", help="train on a benchmark or custom data, split by split")
    add_train_arguments(p)
    p.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from ipce.commands.train import train_command
    return train_command(args)


def _add_predict(sub: argparse._SubParsersAction) -> None:
    from ipce.commands.predict import add_predict_arguments

    p = sub.add_parser("predict", help="score a dataset, a CSV or a folder (one checkpoint or an ensemble); "
                                       "challenge submissions")
    add_predict_arguments(p)
    p.set_defaults(run=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    from ipce.commands.predict import predict_command
    return predict_command(args)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="generate a synthetic dataset, train a tiny model, evaluate, score (minutes, CPU)")
    p.add_argument("--out", default="demo-out", help="output folder (default demo-out)")
    p.add_argument("--quick", action="store_true", help="the minute-long version")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    p.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from ipce.commands.demo import demo_command
    return demo_command(args)


# Subcommands register here, one adder per subcommand.
ADDERS = [_add_demo, _add_score, _add_train, _add_check_data, _add_splits, _add_predict]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ipce", description="AIGC image quality by image-prompt correspondence")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in ADDERS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except IpceError as err:
        print(f"ipce: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ipce: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
