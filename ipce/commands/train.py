"""`ipce train`: flags -> TrainConfig -> ipce.engine.train.run. The entry scripts
train_aigc_<name>.py run `ipce train --preset <name>`."""
from __future__ import annotations

import argparse
import dataclasses

from ipce.commands.flags import (add_data_source_arguments, add_precision_argument, add_speed_arguments,
                               add_weights_argument)
from ipce.config import TrainConfig, make_config, preset_names


def _splits(text: str) -> list[int]:
    """'1,3,5-7' -> [1, 3, 5, 6, 7]."""
    out = []
    for part in text.split(","):
        if "-" in part:
            lo, hi = part.split("-", 1)
            out += list(range(int(lo), int(hi) + 1))
        elif part.strip():
            out.append(int(part))
    return out


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `ipce train`: each one that is given overrides the preset's recipe (TrainConfig),
    so every flag defaults to None."""
    p.add_argument("--preset", choices=preset_names(), default=None,
                   help="dataset recipe (default agiqa1k; custom data uses its recipe)")
    data = p.add_argument_group("data")
    add_data_source_arguments(data, defaults=False, leave_out=("--preset", "--subset"))
    data.add_argument("--mos-range", nargs=2, type=float, metavar=("LO", "HI"),
                      help="the scale of the scores, e.g. 0 100 or 1 10: mapped onto the model's 0..5 for "
                           "training, predictions mapped back (default: the preset's; custom data 0..5)")
    data.add_argument("--prompt-prefix", choices=["none", "generator"],
                      help="'generator': the text is \"{generator} {prompt}\" (the NTIRE second model)")
    data.add_argument("--skip-bad", action="store_true", default=None, help="drop unreadable records instead of stopping")
    model = p.add_argument_group("model")
    model.add_argument("--backbone", help="open_clip name (ViT-B-32, ViT-L-14, ...), tiny, or random:NAME")
    add_weights_argument(model)
    model.add_argument("--resize", type=int, help="adaptive-resize size S")
    model.add_argument("--train-patches", type=int, help="random crops per image in training (default 8)")
    model.add_argument("--eval-patches", type=int, help="evenly strided crops in evaluation (default 15)")
    model.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                       help="random horizontal flips in training (preset's default)")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=int)
    opt.add_argument("--batch-size", type=int, help="global batch size (all processes)")
    opt.add_argument("--lr", type=float)
    opt.add_argument("--weight-decay", type=float)
    opt.add_argument("--accumulate", type=int, help="gradient accumulation steps")
    add_precision_argument(opt, defaults=False)
    opt.add_argument("--grad-checkpointing", action="store_true", default=None)
    proto = p.add_argument_group("protocol")
    proto.add_argument("--protocol", choices=["paper", "holdout"])
    proto.add_argument("--splits", type=_splits, help="which splits to run, e.g. 1 or 1,3 or 1-5 (default all)")
    proto.add_argument("--n-splits", type=int, help="number of random splits (default 10)")
    proto.add_argument("--group-by", choices=["prompt"], help="keep all images of a prompt on one side")
    proto.add_argument("--splits-dir", help="import split files <dir>/<k>/train.csv, val.csv (e.g. the original "
                                            "Database/ folders, read as published)")
    proto.add_argument("--drop-overlap", action="store_true", default=None,
                       help="with --splits-dir: take records that are on both sides of a split out of its "
                            "held-out part (default: kept, as published)")
    proto.add_argument("--seed", type=int)
    run = p.add_argument_group("running")
    run.add_argument("--device", help="cpu, cuda, cuda:1 ...")
    run.add_argument("--workers", type=int, help="DataLoader workers (default 2)")
    run.add_argument("--out", help="run folder (default runs/<preset>-<time>)")
    run.add_argument("--resume", action="store_true", default=None, help="continue the run in --out")
    run.add_argument("--tensorboard", action="store_true", default=None)
    add_speed_arguments(run, defaults=False)


def _overrides(args: argparse.Namespace) -> dict:
    """{field: value} for every TrainConfig field that is a flag of `args` (None: not given); the
    preset is read apart, as the recipe the others override."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
            if f.name != "preset" and hasattr(args, f.name)}


def config_from_args(args: argparse.Namespace):
    """The config of the flags; with --resume, the saved config of the run in --out (only
    --device, --workers and the speed flags may change on resume)."""
    import json
    from pathlib import Path

    preset = getattr(args, "preset", None)
    overrides = _overrides(args)
    saved_path = Path(args.out or "") / "config.json"
    if args.resume and args.out and saved_path.is_file():
        saved = json.loads(saved_path.read_text())
        saved_preset = saved.pop("preset")
        saved.update({k: overrides[k] for k in ("device", "workers", "compile", "channels_last")
                      if overrides[k] is not None})
        saved.update(resume=True, out=args.out)
        return make_config(None if saved_preset == "custom" else saved_preset, **saved)
    return make_config(preset, **overrides)


def train_command(args: argparse.Namespace) -> int:
    from ipce.engine.train import run

    run(config_from_args(args))
    return 0

