"""The `ipce` command. Each subcommand's parser is built from ipce.commands.flags and its own flags;
its command (ipce.commands.<name>) is imported only when it runs, so that `ipce --help` stays quick."""
from __future__ import annotations

import argparse
import sys
from importlib import import_module

from ipce.commands.flags import (add_data_source_arguments, add_precision_argument, add_speed_arguments,
                               add_weights_argument)
from ipce.errors import IpceError


def _command(module: str, name: str):
    """The function `name` of ipce.commands.<module>, imported when the subcommand runs."""
    def run(args: argparse.Namespace) -> int:
        return getattr(import_module(f"ipce.commands.{module}"), name)(args)
    return run


def _add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score images against a prompt with a checkpoint")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--prompt", required=True, help="the prompt the images were generated from")
    p.add_argument("--checkpoint", required=True,
                   help="ipce checkpoint, seed checkpoint, or a backbone name such as ViT-B-32 or tiny; scores "
                        "come on the scale it was trained on (0..5, or its --mos-range)")
    add_weights_argument(p)
    p.add_argument("--resize", type=int, default=None, help="adaptive-resize size S (default: checkpoint's)")
    p.add_argument("--patches", type=int, default=None, help="number of evaluation crops (default: checkpoint's)")
    p.add_argument("--device", default="cpu")
    add_precision_argument(p)
    add_speed_arguments(p)
    p.add_argument("--out", default=None, help="write image,prompt,score to this CSV")
    p.set_defaults(run=_command("score", "score_command"))


def _add_check_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-data", help="decode every image of a dataset and report problems")
    add_data_source_arguments(p)
    p.add_argument("--report", default=None, help="write problems and warnings to this CSV (path,row,severity,problem)")
    p.add_argument("--workers", type=int, default=2, help="decoding threads (default: 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_command("check_data", "check_data_command"))


def _add_splits(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("splits", help="write seeded train/val split files (<out>/<k>/train.csv, val.csv), "
                                      "or check split files (--from)")
    add_data_source_arguments(p)
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
    p.set_defaults(run=_command("splits", "splits_command"))


def _add_train(sub: argparse._SubParsersAction) -> None:
    from ipce.commands.train import add_train_arguments

    p = sub.add_parser("train", help="train on a benchmark or custom data, split by split")
    add_train_arguments(p)
    p.set_defaults(run=_command("train", "train_command"))


def _add_predict(sub: argparse._SubParsersAction) -> None:
    from ipce.commands.predict import add_predict_arguments

    p = sub.add_parser("predict", help="score a dataset, a CSV or a folder (one checkpoint or an ensemble); "
                                       "challenge submissions")
    add_predict_arguments(p)
    p.set_defaults(run=_command("predict", "predict_command"))


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="generate a synthetic dataset, train a tiny model, evaluate, score (minutes, CPU)")
    p.add_argument("--out", default="demo-out", help="output folder (default demo-out)")
    p.add_argument("--quick", action="store_true", help="the minute-long version")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    p.set_defaults(run=_command("demo", "demo_command"))


def _add_weights(sub: argparse._SubParsersAction) -> None:
    from ipce.commands.weights import add_weights_arguments

    p = sub.add_parser("weights", help="list the pretrained CLIP files ipce knows, or fetch one (explicit download)",
                       description="The pretrained CLIP files ipce knows: where each is looked for, whether it is "
                                   "present, and `fetch NAME` to download one (ipce never downloads otherwise).")
    add_weights_arguments(p)
    p.set_defaults(run=_command("weights", "weights_command"))


# Subcommands register here, one adder per subcommand.
ADDERS = [_add_demo, _add_score, _add_train, _add_check_data, _add_splits, _add_predict, _add_weights]


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
