"""`ipce explain IMAGE ... --prompt TEXT --checkpoint CKPT --out DIR`: per image a quality map
(<out>/<stem>.png: the image with every crop's score over it, a colour bar, the final score) and
its grid (<out>/<stem>.csv: x, y, size, score in the original image's pixels). An unreadable image
is named on stderr and the others explained: exit status 3, 1 when none could be read."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ipce.commands.flags import add_model_arguments, check_prompt_and_checkpoints, partial_exit, scorer_from_args, use_cores
from ipce.errors import IpceError


def add_explain_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--prompt", default=None,
                   help="the prompt the images were generated from (not needed by a prompt-free checkpoint)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for <stem>.png and <stem>.csv per image")
    p.add_argument("--stride", type=int, default=None,
                   help="crop grid stride in pixels of the resized image (default: the method's own, 32, or 48 "
                        "from 1024 px)")
    add_model_arguments(p)
    p.add_argument("--batch-size", type=int, default=16, help="crops per image-encoder call")


def explain_command(args: argparse.Namespace) -> int:
    for image in args.images:  # the flags and files first: a mistake is said before torch and the model load
        if not Path(image).is_file():
            raise IpceError(f"{image}: no such image file")
    if args.batch_size < 1:
        raise IpceError(f"--batch-size {args.batch_size}: must be at least 1")
    if args.stride is not None and args.stride < 1:
        raise IpceError(f"--stride {args.stride}: must be at least 1")
    check_prompt_and_checkpoints(args)
    from ipce.engine.explain import explain_images

    use_cores(args)
    scorer = scorer_from_args(args)
    scorer.check_prompt(args.prompt)
    started = time.perf_counter()
    done, errors = explain_images(scorer, [Path(i) for i in args.images], args.prompt, Path(args.out),
                                  stride=args.stride, progress=not args.no_progress)
    lo, hi = scorer.scale
    for image, qmap, png, table in done:
        print(f"{image}: score {qmap.score:.4f} on {lo:g}..{hi:g}, global view {qmap.global_score:.4f}, "
              f"{len(qmap.scores)} crops {min(qmap.scores):.4f}..{max(qmap.scores):.4f} -> {png}, {table}")
    print(f"explained {len(done)} of {len(args.images)} images in {time.perf_counter() - started:.1f} s")
    for image, problem in errors:
        print(f"ipce: skipped {problem}", file=sys.stderr)
    return partial_exit(len(args.images), [problem for _, problem in errors])
