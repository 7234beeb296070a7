"""`ipce predict`: score many images with one checkpoint or an ensemble, and write challenge
submissions (`AIGC_DB_AIGCQA30K_VAL.py` / `_TEST.py` are thin scripts over this module).

Data, one of:
  --preset NAME [--subset S] [--data-root DIR] [--target T]   a published dataset
  --annotations FILE --images DIR                              any CSV/XLSX with a header
  --images DIR --prompt TEXT                                   every image in a folder, one prompt
  --images DIR --prompts FILE                                  a folder and a CSV `image,prompt`

Output: `--out FILE.csv` with `image,prompt,score` (plus `score_1, score_2, ...` per
checkpoint when ensembling, and `mos` when the annotations carry scores); with scores, the
metrics are printed and a scatter plot is written to `<out stem>.png`. With `--submission`,
`--out DIR` gets output.txt, readme.txt and submission.zip (see ipce.engine.submission).

Unreadable images are skipped and listed in `<out stem>.errors.csv` (`path,problem`); the
exit status is 2 when any was skipped. A submission needs every image: it is refused (exit 1).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from ipce.errors import IpceError

FOLDER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
EXIT_SKIPPED = 2


# ----------------------------------------------------------------------------- flags

def add_speed_arguments(p: argparse.ArgumentParser | argparse._ArgumentGroup, default: bool | None = False) -> None:
    """`--compile` and `--channels-last` (ipce.utils.speed), for train, predict and score.
    `default` None lets `ipce train --resume` tell a flag not given from one given."""
    p.add_argument("--compile", action="store_true", default=default,
                   help="torch.compile both towers (needs a C++ compiler on a CPU)")
    p.add_argument("--channels-last", action="store_true", default=default,
                   help="channels-last convolutions in the image tower (CUDA; on the CPU only ResNet towers gain)")


def add_model_arguments(p: argparse.ArgumentParser, checkpoint_help: str | None = None) -> None:
    """Flags shared by `ipce predict` and the submission scripts: models and how to run them."""
    p.add_argument("--checkpoint", action="append", required=True, metavar="CKPT",
                   help=checkpoint_help or "ipce or seed checkpoint file, or a backbone name (tiny, random:ViT-B-32, "
                                           "ViT-L-14); repeat to ensemble")
    p.add_argument("--combine", choices=("mean", "product"), default="mean",
                   help="ensemble rule: mean, or product (q1*q2/5, the NTIRE 2024 final entry); default mean")
    p.add_argument("--prompt-prefix", action="append", choices=("none", "generator"), default=None,
                   help="text seen by a model: the prompt (none) or '{generator} {prompt}' (generator, the file "
                        "name up to its first '_'); once for all checkpoints or once per checkpoint, in order "
                        "(default: what each checkpoint says)")
    p.add_argument("--resize", type=int, default=None, help="adaptive-resize size S (default: checkpoint's, else 512)")
    p.add_argument("--patches", type=int, default=None, help="evaluation crops (default: checkpoint's, else 15)")
    p.add_argument("--batch-size", type=int, default=16, help="images per batch (default: 16)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (default: 2)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda when available)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="evaluation precision (default: fp32)")
    add_speed_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_predict_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `ipce predict`."""
    p.add_argument("--preset", default=None, help="agiqa1k, agiqa3k, aigciqa2023 or aigcqa30k")
    p.add_argument("--subset", default=None, help="aigcqa30k: train, val or test (default: train)")
    p.add_argument("--data-root", default="data", help="folder holding the dataset folders (default: data)")
    p.add_argument("--target", default=None, help="preset: which score, e.g. quality, alignment")
    p.add_argument("--annotations", default=None, help="custom CSV/XLSX with a header (with --images)")
    p.add_argument("--images", default=None, help="folder of the images (names in the annotations are relative to it)")
    p.add_argument("--prompt", default=None, help="with --images DIR: score every image in DIR against this prompt")
    p.add_argument("--prompts", default=None, help="with --images DIR: CSV with columns image,prompt")
    p.add_argument("--image-col", default="image", help="custom: image column (default: image)")
    p.add_argument("--prompt-col", default="prompt", help="custom: prompt column (default: prompt)")
    p.add_argument("--target-col", default=None, help="custom: score column (default: mos, when present)")
    p.add_argument("--out", default=None,
                   help="CSV of scores (default: predictions.csv); with --submission a folder "
                        "(default: submissions/<subset>)")
    p.add_argument("--submission", action="store_true",
                   help="write output.txt, readme.txt and submission.zip (NTIRE 2024 format) into --out")
    add_model_arguments(p)


def submission_parser(subset: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=f"NTIRE 2024 AIGC quality (AIGCQA-30K {subset}): write output.txt, readme.txt and "
                    f"submission.zip; the same as `ipce predict --preset aigcqa30k --subset {subset} --submission`. "
                    "The final entry: two ViT-L/14 checkpoints, --prompt-prefix none --prompt-prefix generator "
                    "--combine product --resize 512 --patches 15.")
    p.add_argument("--data-root", default="./data", help="folder holding AIGCQA-30K-Image/ (default: ./data)")
    p.add_argument("--out", default=f"submissions/{subset}", help=f"output folder (default: submissions/{subset})")
    add_model_arguments(p, "ipce or seed checkpoint; repeat for an ensemble")
    return p


def script_main(subset: str, argv: list[str] | None = None) -> int:
    """`python AIGC_DB_AIGCQA30K_<SUBSET>.py [flags]`."""
    args = submission_parser(subset).parse_args(argv)
    args.preset, args.subset, args.submission, args.target = "aigcqa30k", subset, True, None
    args.annotations = args.images = args.prompt = args.prompts = args.target_col = None
    args.image_col, args.prompt_col = "image", "prompt"
    try:
        return predict_command(args)
    except IpceError as err:
        print(f"ipce: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ipce: interrupted", file=sys.stderr)
        return 130


# ----------------------------------------------------------------------------- records

def folder_records(folder: str | Path, prompt: str):
    """One record per image file directly in `folder` (sorted by name), all with `prompt`."""
    import os

    from ipce.datasets.images import make_data_error
    from ipce.datasets.sources import Record, generator_of

    folder = Path(folder)
    if not folder.is_dir():
        raise make_data_error(f"{folder}: images folder not found; check --images", kind="missing-file", path=folder)
    if not prompt.strip():
        raise IpceError("--prompt: the prompt is empty")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in FOLDER_SUFFIXES and not p.is_dir())
    if not files:
        raise IpceError(f"{folder}: no image files ({', '.join(s[1:] for s in FOLDER_SUFFIXES)}) in --images")
    return [Record(image=Path(os.path.abspath(p)), prompt=prompt, target=None, name=p.name,
                   generator=generator_of(p.name)) for p in files]


def records_from_args(args: argparse.Namespace):
    """(records, description) for the four data forms."""
    from ipce.datasets.sources import read_custom, read_dataset

    given = {flag: getattr(args, attr, None) for flag, attr in
             (("--preset", "preset"), ("--annotations", "annotations"), ("--prompt", "prompt"),
              ("--prompts", "prompts"))}
    chosen = [flag for flag, value in given.items() if value is not None]
    if len(chosen) > 1:
        raise IpceError(f"{' and '.join(chosen)}: give only one of --preset, --annotations, --prompt, --prompts")
    if not chosen:
        raise IpceError("no data given: pass --preset NAME, --annotations FILE --images DIR, "
                        "--images DIR --prompt TEXT or --images DIR --prompts FILE")
    images = args.images
    if args.preset is not None:
        if images:
            raise IpceError("--images: not used with --preset (the preset knows its folders; use --data-root DIR)")
        root = args.data_root or "data"
        records = read_dataset(args.preset, root, subset=args.subset, target=args.target)
        return records, f"{args.preset}{f' ({args.subset})' if args.subset else ''} under {root}"
    if not images:
        raise IpceError(f"--images: required with {chosen[0]} (the folder of the images)")
    if args.prompt is not None:
        return folder_records(images, args.prompt), f"{images} (prompt {args.prompt!r})"
    table = args.annotations if args.annotations is not None else args.prompts
    records = read_custom(table, images, image_col=args.image_col or "image",
                          prompt_col=args.prompt_col or "prompt", target_col=args.target_col or "mos",
                          require_target=args.target_col is not None)
    return records, f"{table} (images in {images})"


# ----------------------------------------------------------------------------- prediction

@dataclass
class Prediction:
    records: list               # every record asked for, in order
    indices: list[int]          # positions of the scored records, ascending
    scores: list[float]         # combined score of each scored record
    per_model: list[list[float]]  # [M][len(indices)]
    errors: list[tuple[int, str]]  # (record position, one-line problem) of unreadable images
    seconds: float


class _AlignedLoaders:
    """Iterates loaders over the same records in the same order (one per view config) and
    hands back the first loader's batch with `.views = {config: (crops, glob)}`."""

    def __init__(self, loaders, configs):
        self.loaders, self.configs = loaders, configs
        self.dataset = loaders[0].dataset

    def __len__(self) -> int:
        return len(self.loaders[0])

    def __iter__(self):
        for batches in zip(*self.loaders):
            first = batches[0]
            first.views = {cfg: (b.crops, b.glob) for cfg, b in zip(self.configs, batches)}
            yield first


def predict_records(scorer, records, batch_size: int = 16, workers: int = 2, progress: bool = True) -> Prediction:
    """Score `records` with `scorer` (one loader per distinct view config); unreadable images are skipped."""
    import torch

    from ipce.datasets.loader import ViewDataset, make_loader
    from ipce.engine.evaluate import predict_loader

    records = list(records)
    configs = scorer.view_configs
    loaders = [make_loader(ViewDataset(records, cfg, tolerant=True), batch_size, shuffle=False, workers=workers,
                           device=scorer.device) for cfg in configs]

    def score_fn(batch) -> torch.Tensor:
        chunk = [records[i] for i in batch.indices.tolist()]
        combined, per_model = scorer.score_views(batch.views, [r.prompt for r in chunk],
                                                 [r.generator for r in chunk])
        return torch.cat([combined[:, None], per_model.T], dim=1)

    for member in scorer.members:
        member.model.eval()  # text features are cached per prompt in eval mode
    indices, out, errors, seconds = predict_loader(score_fn, _AlignedLoaders(loaders, configs), desc="predict",
                                                   progress=progress)
    order = indices.argsort()
    indices, out = indices[order], out[order]
    per_model = out[:, 1:].T.tolist() if len(out) else [[] for _ in scorer.members]
    return Prediction(records, indices.tolist(), out[:, 0].tolist() if len(out) else [], per_model,
                      sorted(errors), seconds)


def _check_generators(scorer, records) -> None:
    if not any(m.prompt_prefix == "generator" for m in scorer.members):
        return
    for record in records:
        if not record.generator:
            where = f"{record.source}, row {record.row}: " if record.source else ""
            raise IpceError(f"{where}{record.name}: --prompt-prefix generator needs the generator in the file name "
                            "(the part before the first '_', e.g. DALLE3_0001.png)")


def _resolve_device(device: str | None) -> str:
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


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
    if args.resize is not None and args.resize < 224:
        raise IpceError(f"--resize {args.resize}: must be at least 224 (the crop size)")
    if args.patches is not None and args.patches < 1:
        raise IpceError(f"--patches {args.patches}: must be at least 1")
    if args.batch_size < 1:
        raise IpceError(f"--batch-size {args.batch_size}: must be at least 1")
    if args.workers < 0:
        raise IpceError(f"--workers {args.workers}: must be 0 or more")


def _write_errors(path: Path, prediction: Prediction) -> None:
    from ipce.commands.score import write_csv_atomic

    if prediction.errors:
        write_csv_atomic(path, ["path", "problem"],
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

    pairs = [(s, prediction.records[i].target) for i, s in zip(prediction.indices, prediction.scores)
             if prediction.records[i].target is not None]
    if len(pairs) < 2:
        if pairs:
            print("metrics: need at least 2 scored images with a MOS")
        return
    pred, mos = zip(*pairs)
    m = metrics_of(pred, mos)
    print(f"SRCC {m['srcc']:.4f}  PLCC {m['plcc']:.4f}  KRCC {m['krcc']:.4f}  RMSE {m['rmse']:.4f}  "
          f"(n={len(pairs)})")
    plot_scatter(pred, mos, plot_path, title=f"{plot_path.stem}: n={len(pairs)}")
    print(f"scatter plot: {plot_path}")


def predict_command(args: argparse.Namespace) -> int:
    from ipce.api import load_scorer

    _validate(args)
    records, source = records_from_args(args)
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

    device = _resolve_device(args.device)
    scorer = load_scorer(args.checkpoint, device=device, resize=args.resize, patches=args.patches,
                         combine=args.combine, prompt_prefix=_prefixes(args), precision=args.precision,
                         batch_size=args.batch_size, compile=args.compile, channels_last=args.channels_last)
    _check_generators(scorer, records)
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

    from ipce.commands.score import write_csv_atomic

    with_target = any(r.target is not None for r in records)
    header, rows = _prediction_rows(prediction, with_target)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(csv_path, header, rows)
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
