"""`ipce predict`: score many images with one checkpoint or an ensemble, and write challenge
submissions (`AIGC_DB_AIGCQA30K_VAL.py` / `_TEST.py` run `ipce predict --preset aigcqa30k
--subset val|test --submission`). The scoring is ipce.engine.predict; this module reads the
flags, prints and writes the files.

Data, one of (ipce.commands.flags):
  --preset NAME [--subset S] [--data-root DIR] [--target T]   a published dataset
  --annotations FILE --images DIR                              any CSV/XLSX with a header
  --images DIR --prompt TEXT                                   every image in a folder, one prompt
  --images DIR --prompts FILE                                  a folder and a CSV `image,prompt`

Output: `--out FILE.csv` with `image,prompt,score` (plus `score_1, score_2, ...` per
checkpoint when ensembling, and `mos` when the annotations carry scores); with scores, the
metrics are printed and a scatter plot is written to `<out stem>.png`. With `--submission`,
`--out DIR` gets output.txt, readme.txt and submission.zip (see ipce.engine.submission).

Unreadable images are skipped and listed in `<out stem>.errors.csv` (`path,problem`); the
exit status is 3 (EXIT_PARTIAL, partial results) when any was skipped. A submission needs every
image: it is refused (exit 1).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ipce.commands.flags import (CHECKPOINT_TERMS, EXIT_PARTIAL, add_data_source_arguments, add_device_argument,
                                 add_precision_argument, add_progress_argument, add_prompt_source_arguments,
                                 add_speed_arguments, add_weights_argument, add_workers_argument, records_from_args,
                                 resolve_device)
from ipce.datasets.checks import prompt_warnings
from ipce.errors import IpceError

if TYPE_CHECKING:
    from ipce.engine.predict import Prediction

EXIT_SKIPPED = EXIT_PARTIAL  # finished, with the unreadable images skipped (was 2, argparse's usage status)


# ----------------------------------------------------------------------------- flags

def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The models of `ipce predict` and how to run them."""
    p.add_argument("--checkpoint", action="append", required=True, metavar="CKPT",
                   help=f"{CHECKPOINT_TERMS}; repeat to ensemble")
    add_weights_argument(p)
    p.add_argument("--combine", choices=("mean", "product"), default="mean",
                   help="ensemble rule: mean, or product (q1*q2/5, the NTIRE 2024 final entry)")
    p.add_argument("--prompt-prefix", action="append", choices=("none", "generator"), default=None,
                   help="text seen by a model: the prompt (none) or '{generator} {prompt}' (generator, the file "
                        "name up to its first '_'); once for all checkpoints or once per checkpoint, in order "
                        "(default: what each checkpoint says)")
    p.add_argument("--resize", type=int, default=None, help="adaptive-resize size S (default: checkpoint's, else 512)")
    p.add_argument("--patches", type=int, default=None, help="evaluation crops (default: checkpoint's, else 15)")
    p.add_argument("--batch-size", type=int, default=16, help="images per batch (default: 16)")
    add_workers_argument(p)
    add_device_argument(p)
    add_precision_argument(p)
    add_speed_arguments(p)
    add_progress_argument(p)


def add_predict_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `ipce predict`."""
    add_data_source_arguments(p, leave_out=("--duplicates",))
    add_prompt_source_arguments(p)
    p.add_argument("--out", default=None,
                   help="CSV of scores (default: predictions.csv); with --submission a folder "
                        "(default: submissions/<subset>)")
    p.add_argument("--submission", action="store_true",
                   help="write output.txt, readme.txt and submission.zip (NTIRE 2024 format) into --out")
    add_model_arguments(p)


# ----------------------------------------------------------------------------- the command

def _prefixes(args):
    prefixes = args.prompt_prefix
    if not prefixes:
        return None
    if len(prefixes) == 1:
        return prefixes[0]
    if len(prefixes) != len(args.checkpoint):
        raise IpceError(f"--prompt-prefix: got {len(prefixes)} values for {len(args.checkpoint)} checkpoints; "
                        "give one for all or one per --checkpoint")
    return prefixes


def _validate(args) -> None:
    from ipce.datasets.views import ViewConfig  # imported here: it brings torch, which `ipce --help` does not need

    # ViewConfig holds the --resize/--patches check; building one here fails before any record is read
    ViewConfig(**{k: v for k, v in (("resize", args.resize), ("patches", args.patches)) if v is not None})
    if args.batch_size < 1:
        raise IpceError(f"--batch-size {args.batch_size}: must be at least 1")
    if args.workers < 0:
        raise IpceError(f"--workers {args.workers}: must be 0 or more")


def _write_errors(path: Path, prediction: Prediction) -> None:
    from ipce.utils.io import write_csv

    if prediction.errors:
        write_csv(path, ["path", "problem"],
                  [[str(prediction.records[i].image), problem] for i, problem in prediction.errors])
    else:
        path.unlink(missing_ok=True)  # a list from an earlier run would now be wrong


def _prediction_rows(prediction: Prediction, with_target: bool):
    ensemble = len(prediction.per_model) > 1
    header = ["image", "prompt", "score"] + ([f"score_{m + 1}" for m in range(len(prediction.per_model))]
                                            if ensemble else []) + (["mos"] if with_target else [])
    rows = []
    for j, (i, score) in enumerate(zip(prediction.indices, prediction.scores)):
        record = prediction.records[i]
        row = [record.name, record.prompt, f"{score:.7f}"]
        if ensemble:
            row += [f"{each[j]:.7f}" for each in prediction.per_model]
        if with_target:
            row.append("" if record.target is None else repr(record.target))
        rows.append(row)
    return header, rows


def _report_metrics(prediction: Prediction, plot_path: Path) -> None:
    from ipce.engine.evaluate import metrics_of
    from ipce.utils.report import plot_scatter

    pred, mos = prediction.scored_targets()
    if len(pred) < 2:
        if pred:
            print("metrics: need at least 2 scored images with a MOS")
        return
    m = metrics_of(pred, mos)
    shown = {k: "n/a" if math.isnan(v) else f"{v:.4f}" for k, v in m.items()}  # NaN: undefined
    print(f"SRCC {shown['srcc']}  PLCC {shown['plcc']}  KRCC {shown['krcc']}  RMSE {shown['rmse']}  "
          f"(n={len(pred)})")
    plot_scatter(pred, mos, plot_path, title=f"{plot_path.stem}: n={len(pred)}")
    print(f"scatter plot: {plot_path}")


def predict_command(args: argparse.Namespace) -> int:
    from ipce.api import load_scorer
    from ipce.engine.predict import check_generators, predict_records
    from ipce.utils.io import write_csv

    _validate(args)
    records, source = records_from_args(args)
    for warning in prompt_warnings(r.prompt for r in records):  # once per run, with counts
        print(f"ipce: warning: {warning}", file=sys.stderr)
    if getattr(args, "prompts", None):
        from ipce.engine.predict import unlisted_images

        missed = unlisted_images(args.images, records)
        if missed:
            print(f"ipce: warning: {len(missed)} image file(s) in {args.images} are not listed in {args.prompts} "
                  f"and are not scored (e.g. {missed[0].name}); add rows image,prompt for them", file=sys.stderr)
    if not records:
        raise IpceError(f"{source}: no images listed")
    submission = bool(getattr(args, "submission", False))
    if submission:
        folder = Path(args.out or f"submissions/{args.subset or 'custom'}")
        if folder.exists() and not folder.is_dir():
            raise IpceError(f"--out {folder}: a file; with --submission --out names a folder")
        csv_path, errors_path, plot_path = folder / "predictions.csv", folder / "errors.csv", folder / "predictions.png"
    else:
        csv_path = Path(args.out or "predictions.csv")
        if csv_path.is_dir():
            raise IpceError(f"--out {csv_path}: a folder; give a CSV file name (or use --submission)")
        errors_path = csv_path.with_name(f"{csv_path.stem}.errors.csv")
        plot_path = csv_path.with_name(f"{csv_path.stem}.png")

    device = resolve_device(args.device)
    scorer = load_scorer(args.checkpoint, device=device, resize=args.resize, patches=args.patches,
                         combine=args.combine, prompt_prefix=_prefixes(args), precision=args.precision,
                         batch_size=args.batch_size, compile=args.compile, channels_last=args.channels_last,
                         weights=args.weights)
    check_generators(scorer, records)
    models = ", ".join(f"{c} ({m.views.resize} px, {m.views.patches} crops"
                       f"{', generator prefix' if m.prompt_prefix == 'generator' else ''})"
                       for c, m in zip(args.checkpoint, scorer.members))
    combine = f", combine {scorer.combine}" if len(scorer.members) > 1 else ""
    lo, hi = scorer.scale
    scale = "" if (lo, hi) == (0, 5) else f", scores on {lo:g}..{hi:g} (the models' training scale)"
    print(f"scoring {len(records)} images of {source} on {device} with {models}{combine}{scale}")

    prediction = predict_records(scorer, records, batch_size=args.batch_size, workers=args.workers,
                                 progress=not args.no_progress)
    done, skipped = len(prediction.indices), len(prediction.errors)
    rate = done / prediction.seconds if prediction.seconds > 0 else float("inf")
    print(f"scored {done} of {len(records)} images in {prediction.seconds:.1f} s ({rate:.2f} images/s)")
    _write_errors(errors_path, prediction)
    if skipped:
        first = prediction.errors[0][1]
        print(f"skipped {skipped} unreadable image(s), listed in {errors_path}; first: {first}")
    if submission and skipped:
        raise IpceError(f"submission refused: {skipped} of {len(records)} images could not be scored (listed in "
                        f"{errors_path}); the challenge needs a score for every image: fix them and rerun")

    with_target = any(r.target is not None for r in records)
    header, rows = _prediction_rows(prediction, with_target)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    write_csv(csv_path, header, rows)
    print(f"wrote {csv_path}")
    if with_target:
        _report_metrics(prediction, plot_path)
    if submission:
        from ipce.engine.submission import describe_scorer, write_submission

        paths = write_submission(folder, [r.name for r in prediction.records], prediction.scores,
                                 runtime_per_image=prediction.seconds / len(records),
                                 cpu=scorer.device.type == "cpu",
                                 description=describe_scorer(scorer, args.checkpoint))
        print(f"wrote {paths['output']}, {paths['readme']} and {paths['zip']}")
    return EXIT_SKIPPED if skipped else 0
