"""`ipce score IMAGE ... --prompt TEXT --checkpoint CKPT`: a table on the terminal, optionally a CSV.
A prompt-free checkpoint (trained with a --template without {prompt}) needs no --prompt. An
unreadable image is named on stderr (and in <out stem>.errors.csv with --out) and the others
scored: exit status 3, 1 when none could be read (ipce.commands.flags.partial_exit)."""
from __future__ import annotations

import sys
from pathlib import Path

from ipce.commands.flags import check_prompt_and_checkpoints, partial_exit, use_cores
from ipce.errors import DataError, IpceError


def score_command(args) -> int:
    from ipce.commands.flags import scorer_from_args

    for image in args.images:
        if Path(image).is_dir():
            raise IpceError(f"{image}: is a folder; `ipce score` takes image files, `ipce predict --images "
                            f"{image} --prompt TEXT` scores a whole folder")
        if not Path(image).is_file():
            raise IpceError(f"{image}: no such image file")
    check_prompt_and_checkpoints(args)
    from ipce.datasets.checks import prompt_warnings  # torch: only once the flags and files are known to be right
    from ipce.utils.io import write_csv

    if args.prompt is not None:
        for warning in prompt_warnings([args.prompt]):
            print(f"ipce: warning: {warning}", file=sys.stderr)
    if args.batch_size < 1:
        raise IpceError(f"--batch-size {args.batch_size}: must be at least 1")
    use_cores(args)
    scorer = scorer_from_args(args)
    scorer.check_prompt(args.prompt)
    images, scores, errors = _score_readable(scorer, args.images, args.prompt, progress=not args.no_progress)
    width = max(len(str(i)) for i in args.images)
    lo, hi = scorer.scale
    scale = "0-5" if (lo, hi) == (0, 5) else f"scale {lo:g}..{hi:g}"  # the scale of the model's training scores
    print(f"{'image':<{width}}  score ({scale})")
    for image, score in zip(images, scores):
        print(f"{str(image):<{width}}  {score:.4f}")
    print(f"prompt: {args.prompt}" if args.prompt is not None else "prompt: none (a prompt-free checkpoint)")
    print(f"score: {scorer.meaning}")
    for _, problem in errors:
        print(f"ipce: skipped {problem}", file=sys.stderr)
    where = ""
    if args.out:
        out = Path(args.out)
        write_csv(out, ["image", "prompt", "score"],
                  [[str(i), args.prompt or "", f"{s:.6f}"] for i, s in zip(images, scores)])
        print(f"wrote {out}")
        errors_path = out.with_name(f"{out.stem}.errors.csv")
        if errors:
            write_csv(errors_path, ["path", "problem"], [[str(i), problem] for i, problem in errors])
            where = f", listed in {errors_path}"
        else:
            errors_path.unlink(missing_ok=True)  # a list from an earlier run would now be wrong
    if errors:
        print(f"scored {len(images)} of {len(args.images)} images; {len(errors)} unreadable{where}", file=sys.stderr)
    return partial_exit(len(args.images), [problem for _, problem in errors], where)


def _score_readable(scorer, paths, prompt, progress: bool = True) -> tuple[list[str], list[float], list[tuple[str, str]]]:
    """(the paths that could be read, their scores, [(path, problem)] of the others), a batch at a time."""
    from ipce.datasets.images import open_rgb
    from ipce.datasets.sources import generator_of
    from ipce.utils.progress import progress_bar
    from ipce.utils.stream import one_line

    images, scores, errors = [], [], []
    starts = range(0, len(paths), scorer.batch_size)
    for start in progress_bar(starts, enabled=progress and len(starts) > 1, desc="score", unit="batch"):
        opened, pictures = [], []
        for path in paths[start:start + scorer.batch_size]:
            try:
                pictures.append(open_rgb(path))
                opened.append(path)
            except DataError as exc:
                errors.append((path, one_line(str(exc))))
        if pictures:
            scores += scorer.score(pictures, prompt, [generator_of(str(i)) for i in opened])
            images += opened
    return images, scores, errors
