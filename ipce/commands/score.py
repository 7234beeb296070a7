"""`ipce score IMAGE ... --prompt TEXT --checkpoint CKPT`: a table on the terminal, optionally a CSV.
A prompt-free checkpoint (trained with a --template without {prompt}) needs no --prompt."""
from __future__ import annotations

import sys
from pathlib import Path

from ipce.datasets.checks import prompt_warnings
from ipce.errors import IpceError
from ipce.utils.io import write_csv


def score_command(args) -> int:
    from ipce.commands.flags import scorer_from_args

    for image in args.images:
        if Path(image).is_dir():
            raise IpceError(f"{image}: is a folder; `ipce score` takes image files, `ipce predict --images "
                            f"{image} --prompt TEXT` scores a whole folder")
        if not Path(image).is_file():
            raise IpceError(f"{image}: no such image file")
    if args.prompt is not None:
        for warning in prompt_warnings([args.prompt]):
            print(f"ipce: warning: {warning}", file=sys.stderr)
    if args.batch_size < 1:
        raise IpceError(f"--batch-size {args.batch_size}: must be at least 1")
    scorer = scorer_from_args(args)
    scores = scorer.score(args.images, args.prompt, progress=not args.no_progress)  # no prompt: a prompt-aware checkpoint is a one-line error
    width = max(len(str(i)) for i in args.images)
    lo, hi = scorer.scale
    scale = "0-5" if (lo, hi) == (0, 5) else f"scale {lo:g}..{hi:g}"  # the scale of the model's training scores
    print(f"{'image':<{width}}  score ({scale})")
    for image, score in zip(args.images, scores):
        print(f"{str(image):<{width}}  {score:.4f}")
    print(f"prompt: {args.prompt}" if args.prompt is not None else "prompt: none (a prompt-free checkpoint)")
    print(f"score: {scorer.meaning}")
    if args.out:
        write_csv(args.out, ["image", "prompt", "score"],
                  [[str(i), args.prompt or "", f"{s:.6f}"] for i, s in zip(args.images, scores)])
        print(f"wrote {args.out}")
    return 0
