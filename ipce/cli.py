"""The `ipce` command. Each subcommand only parses its flags and calls the library."""
from __future__ import annotations

import argparse
import sys

from ipce.errors import IpceError


def _add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score images against a prompt with a checkpoint")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--prompt", required=True, help="the prompt the images were generated from")
    p.add_argument("--checkpoint", required=True,
                   help="ipce checkpoint, seed checkpoint, or a backbone name such as ViT-B-32 or tiny")
    p.add_argument("--resize", type=int, default=None, help="adaptive-resize size S (default: checkpoint's)")
    p.add_argument("--patches", type=int, default=None, help="number of evaluation crops (default: checkpoint's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="write image,prompt,score to this CSV")
    p.set_defaults(run=_run_score)


def _run_score(args: argparse.Namespace) -> int:
    from ipce.commands.score import score_command
    return score_command(args)


# Subcommands register here, one adder per subcommand.
ADDERS = [_add_score]


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
