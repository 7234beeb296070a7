"""`ipce rank --checkpoint CKPT --images DIR (--prompt TEXT | --prompts FILE) --out ranked.csv`:
the images of each prompt ranked best first (Scorer.rank), `image,prompt,score,rank`, optionally
only the best `--top K` of each and a contact sheet (`--sheet PNG`). Unreadable images are left
out and listed in <out stem>.errors.csv; then the exit status is 3 (partial results), 1 when
none could be read (ipce.commands.flags.partial_exit)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ipce.commands.flags import (add_model_arguments, add_prompt_source_arguments, check_prompt_and_checkpoints,
                                 partial_exit, records_from_args, scorer_from_args, use_cores)
from ipce.errors import IpceError

SHEET_COLUMNS = 10  # thumbnails per prompt on the sheet without --top


def add_rank_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", required=True, metavar="DIR", help="folder of the candidate images")
    add_prompt_source_arguments(p)
    p.add_argument("--out", default="ranked.csv", help="CSV of image,prompt,score,rank")
    p.add_argument("--top", type=int, default=None, metavar="K", help="keep the best K images of each prompt")
    p.add_argument("--sheet", default=None, metavar="PNG",
                   help=f"also draw a contact sheet: per prompt its images in rank order, the score under each "
                        f"(the best --top, else the best {SHEET_COLUMNS})")
    add_model_arguments(p)
    p.add_argument("--batch-size", type=int, default=16, help="images per batch")


def _records(args, scorer):
    """The records of the flags; without --prompt and --prompts, every image of --images with no
    prompt, for a prompt-free checkpoint (a prompt-aware one: a one-line error)."""
    if args.prompt is not None or args.prompts is not None:
        return records_from_args(args)[0]
    scorer.check_prompt(None)
    from dataclasses import replace

    from ipce.engine.predict import folder_records

    return [replace(r, prompt="") for r in folder_records(args.images, "no prompt")]


def rank_command(args: argparse.Namespace) -> int:
    if args.top is not None and args.top < 1:  # the flags and files first: before torch and the model load
        raise IpceError(f"--top {args.top}: must be at least 1")
    if args.batch_size < 1:
        raise IpceError(f"--batch-size {args.batch_size}: must be at least 1")
    out = Path(args.out)
    if out.is_dir():
        raise IpceError(f"--out {out}: a folder; give a CSV file name")
    if not Path(args.images).is_dir():
        raise IpceError(f"{args.images}: images folder not found; check --images")
    if args.prompts is not None and not Path(args.prompts).is_file():
        raise IpceError(f"{args.prompts}: prompts file not found; check --prompts")
    check_prompt_and_checkpoints(args)
    from ipce.engine.rank import rank_records, ranking_sheet
    from ipce.utils.io import write_csv

    use_cores(args)
    scorer = scorer_from_args(args)
    records = _records(args, scorer)
    if not records:
        raise IpceError(f"{args.prompts or args.images}: no images listed")
    rows, errors = rank_records(scorer, records, args.top, progress=not args.no_progress)
    write_csv(out, ["image", "prompt", "score", "rank"],
              [[r.record.name, r.record.prompt, f"{r.score:.7f}", r.rank] for r in rows])
    prompts = len({r.prompt for r in records})
    print(f"ranked {len(records) - len(errors)} images of {prompts} prompt(s) -> {out}")
    errors_path = out.with_name(f"{out.stem}.errors.csv")
    where = f", listed in {errors_path}" if errors else ""
    if errors:
        write_csv(errors_path, ["path", "problem"], [[str(rec.image), problem] for rec, problem in errors])
        print(f"skipped {len(errors)} unreadable image(s), listed in {errors_path}; first: {errors[0][1]}",
              file=sys.stderr)
    else:
        errors_path.unlink(missing_ok=True)  # a list from an earlier run would now be wrong
    if args.sheet:
        ranking_sheet(rows, args.sheet, columns=args.top or SHEET_COLUMNS)
        print(f"contact sheet: {args.sheet}")
    return partial_exit(len(records), [problem for _, problem in errors], where)
