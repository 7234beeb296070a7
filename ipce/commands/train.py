"""`ipce train`: flags -> TrainConfig -> ipce.engine.train.run. The entry scripts
train_aigc_<name>.py run `ipce train --preset <name>`."""
from __future__ import annotations

import argparse
import dataclasses

from ipce.commands.flags import (DATA_SOURCE_FLAGS, add_data_source_arguments, add_device_argument,
                                 add_group_by_argument, add_n_splits_argument, add_precision_argument,
                                 add_preference_arguments, number_list,
                                 add_progress_argument, add_speed_arguments, add_weights_argument,
                                 add_threads_argument, add_workers_argument, train_overrides, use_cores)
from ipce.config import SPEED_FIELDS, TrainConfig, load_presets, make_config, preset_names


def _default(field: str) -> str:
    """'(default: X)' for a TrainConfig field: the default preset's value (custom data takes it too),
    then each preset that differs, e.g. '(default: 20; agiqa3k 30, aigcqa30k 80)'."""
    presets = load_presets()
    base = TrainConfig.preset

    def shown(value) -> str:
        if isinstance(value, bool):
            return "on" if value else "off"
        if isinstance(value, (list, tuple)):
            return " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
        return f"{value:g}" if isinstance(value, float) else str(value)

    fallback = next(f for f in dataclasses.fields(TrainConfig) if f.name == field)
    fallback = fallback.default_factory() if fallback.default is dataclasses.MISSING else fallback.default
    first = presets.get(base, {}).get(field, fallback)
    others = [f"{name} {shown(values.get(field, fallback))}" for name, values in sorted(presets.items())
              if name != base and values.get(field, fallback) != first]
    return f"(default: {shown(first)}{'; ' + ', '.join(others) if others else ''})"


def add_train_arguments(p: argparse.ArgumentParser, leave_out: tuple[str, ...] = ()) -> None:
    """The flags of `ipce train`: each one that is given overrides the preset's recipe (TrainConfig),
    so every flag defaults to None and its help names the recipe's value. `leave_out`: flags another
    command that trains (`ipce reproduce`) sets itself: --preset, the custom-data flags, --mos-range,
    --protocol, --splits, --splits-dir, --out, --resume."""
    _add_preset_arguments(p, leave_out)
    _add_data_arguments(p.add_argument_group("data"), leave_out)
    _add_model_arguments(p.add_argument_group("model"))
    _add_optimisation_arguments(p.add_argument_group("optimisation"))
    _add_protocol_arguments(p.add_argument_group("protocol"), leave_out)
    _add_running_arguments(p.add_argument_group("running"), leave_out)


def _add_preset_arguments(p: argparse.ArgumentParser, leave_out: tuple[str, ...]) -> None:
    """--preset (with tab completion of the preset names) and --presets, unless --preset is left out."""
    names = preset_names()
    if "--preset" not in leave_out:
        preset = p.add_argument("--preset", default=None, metavar="NAME",
                                help=f"dataset recipe: {', '.join(names)} (default: {TrainConfig.preset}; custom "
                                     f"data takes {TrainConfig.preset}'s)")
        preset.completer = lambda **_: names  # tab completion (argcomplete); an unknown name is a one-line error
        p.add_argument("--presets", default=None, metavar="FILE",
                       help="a TOML file of your own presets, one [name] table per dataset in presets.toml's schema "
                            "(e.g. annotations, images, mos_range, epochs), read beside the bundled ones and "
                            "$IPCE_PRESETS; then --preset name trains on it")


def _add_data_arguments(data: argparse._ArgumentGroup, leave_out: tuple[str, ...]) -> None:
    """The data group: where the records come from, their score scale, the prompt text, bad records
    and preference data."""
    add_data_source_arguments(data, defaults=False, leave_out=tuple({"--preset", "--subset", *leave_out}
                                                                    & {f for f, _, _ in DATA_SOURCE_FLAGS}))
    if "--mos-range" not in leave_out:
        data.add_argument("--mos-range", nargs=2, type=float, metavar=("LO", "HI"),
                          help="the scale of the scores, e.g. 0 100 or 1 10: mapped onto the model's 0..5 for "
                               "training, predictions mapped back (default: the preset's; custom data 0..5)")
    data.add_argument("--prompt-prefix", choices=["none", "generator"],
                      help="'generator': the text is \"{generator} {prompt}\" (the NTIRE second model) "
                           "(default: none)")
    data.add_argument("--skip-bad", action="store_true", default=None, help="drop unreadable records instead of stopping")
    if "--preferences" not in leave_out:
        add_preference_arguments(data)
        data.add_argument("--preference-weight", type=float, metavar="W",
                          help="weight of the preference (Bradley-Terry) loss beside the MOS loss when both "
                               "--preferences and MOS data train one model (default: 1)")


def _add_model_arguments(model: argparse._ArgumentGroup) -> None:
    """The model group: backbone and weights, the texts compared with the image, and the views (resize,
    crops, flips)."""
    model.add_argument("--backbone", help=f"open_clip name (ViT-B-32, ViT-L-14, ...), tiny, or random:NAME "
                                          f"{_default('backbone')}")
    add_weights_argument(model)
    model.add_argument("--template", help="the texts compared with the image, with {level} and {prompt}; without "
                                          "{prompt} (e.g. \"a photo of {level} quality\") the model scores without "
                                          "a prompt (default: \"a photo that {level} matches '{prompt}'\")")
    model.add_argument("--levels", type=lambda text: tuple(w.strip() for w in text.split(",")), metavar="A,B,...",
                       help="the level words of the texts, worst first (default: badly,poorly,fairly,well,perfectly)")
    model.add_argument("--resize", type=int, help=f"adaptive-resize size S {_default('resize')}")
    model.add_argument("--train-patches", type=int,
                       help=f"random crops per image in training {_default('train_patches')}")
    model.add_argument("--eval-patches", type=int,
                       help=f"evenly strided crops in evaluation {_default('eval_patches')}")
    model.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                       help=f"random horizontal flips in training {_default('flip')}")


def _add_optimisation_arguments(opt: argparse._ArgumentGroup) -> None:
    """The optimisation group: the schedule (epochs, batch, AdamW, cosine), precision and memory, how
    the views reach the device, and evaluation batches."""
    opt.add_argument("--epochs", type=int, help=f"training epochs per split {_default('epochs')}")
    opt.add_argument("--batch-size", type=int,
                     help=f"global batch size, all processes together {_default('batch_size')}")
    opt.add_argument("--lr", type=float, help=f"AdamW learning rate at the top of the cosine schedule {_default('lr')}")
    opt.add_argument("--weight-decay", type=float, help=f"AdamW weight decay {_default('weight_decay')}")
    opt.add_argument("--t-max", type=int, metavar="EPOCHS",
                     help=f"cosine schedule: epochs from --lr down to 0, then back up {_default('t_max')}")
    opt.add_argument("--accumulate", type=int, help=f"gradient accumulation steps {_default('accumulate')}")
    add_precision_argument(opt, defaults=False)
    opt.add_argument("--grad-checkpointing", action="store_true", default=None,
                     help="recompute activations in the backward pass: less memory, slower steps")
    opt.add_argument("--feed", choices=("float", "uint8"),
                     help="float: the loader's workers make the views; uint8: they send each resized image's 8-bit "
                          "pixels and the crops and normalization are made on the device (the same numbers, a "
                          "twelfth of the bytes; measured on the CPU only) " + _default("feed"))
    opt.add_argument("--fused-adamw", action="store_true", default=None,
                     help="AdamW's fused kernel (equal to the default within float rounding; measured on the "
                          "CPU only)")
    opt.add_argument("--log-every", type=int, metavar="STEPS",
                     help="steps between reads of the training loss on the host (the progress bar's loss); the "
                          "loss is summed on the device in between, so a GPU step waits for nothing "
                          f"{_default('log_every')}")
    opt.add_argument("--eval-batch-size", type=int, help="images per evaluation batch (default: --batch-size)")


def _add_protocol_arguments(proto: argparse._ArgumentGroup, leave_out: tuple[str, ...]) -> None:
    """The protocol group: which splits, their fractions, grouping, imported split files and the seed."""
    if "--protocol" not in leave_out:
        proto.add_argument("--protocol", choices=["paper", "holdout"],
                           help="paper: each split trains on --ratio of the data, the best epoch is chosen on the "
                                "rest; holdout: train/val/test parts (--holdout-ratios) " + _default("protocol"))
    if "--splits" not in leave_out:
        proto.add_argument("--splits", type=number_list, help="which splits to run, e.g. 1 or 1,3 or 1-5 (default: all)")
    add_n_splits_argument(proto, defaults=False)
    proto.add_argument("--ratio", type=float,
                       help=f"paper protocol: training fraction of each split {_default('ratio')}")
    proto.add_argument("--holdout-ratios", nargs=3, type=float, metavar=("TRAIN", "VAL", "TEST"),
                       help=f"holdout protocol: the three fractions {_default('holdout_ratios')}")
    add_group_by_argument(proto)
    if "--splits-dir" not in leave_out:
        proto.add_argument("--splits-dir", help="import split files <dir>/<k>/train.csv, val.csv (e.g. the "
                                                "original Database/ folders, read as published)")
    proto.add_argument("--drop-overlap", action="store_true", default=None,
                       help="with --splits-dir: take records that are on both sides of a split out of its "
                            "held-out part (default: kept, as published)")
    proto.add_argument("--seed", type=int, help=f"seed of the splits and of training {_default('seed')}")


def _add_running_arguments(run: argparse._ArgumentGroup, leave_out: tuple[str, ...]) -> None:
    """The running group: device, workers and threads, the run folder and resuming, what is kept and
    logged, the progress bar and the speed flags."""
    add_device_argument(run, defaults=False)
    add_workers_argument(run, defaults=False)
    add_threads_argument(run)
    if "--out" not in leave_out:
        run.add_argument("--out", help="run folder (default: runs/<preset>-<time>)")
    if "--resume" not in leave_out:
        run.add_argument("--resume", action="store_true", default=None,
                         help="continue the run in --out (only --device, --workers, --no-progress and the speed "
                              "flags may change)")
    run.add_argument("--keep-last", action="store_true", default=None,
                     help="keep each finished split's last.pt, the resumable state (about 3x a checkpoint) "
                          "(default: removed once the split finished; a run that stops early keeps it for "
                          "--resume)")
    run.add_argument("--tensorboard", action="store_true", default=None,
                     help="also write TensorBoard logs into the run folder")
    add_progress_argument(run, defaults=False)
    add_speed_arguments(run, defaults=False)


def _overrides(args: argparse.Namespace) -> dict:
    """{field: value} for every TrainConfig field that is a flag of `args` (flags.train_overrides)."""
    return train_overrides(args)


def config_from_args(args: argparse.Namespace):
    """The config of the flags; with --resume, the saved config of the run in --out (only
    --device, --workers, --no-progress and the speed flags may change on resume)."""
    import json
    from pathlib import Path

    preset = getattr(args, "preset", None)
    overrides = _overrides(args)
    saved_path = Path(args.out or "") / "config.json"
    if args.resume and args.out and saved_path.is_file():
        saved = json.loads(saved_path.read_text())
        saved_preset = saved.pop("preset")
        saved.update({k: overrides[k] for k in ("device", "workers", "progress", *SPEED_FIELDS)
                      if overrides.get(k) is not None})
        saved.update(resume=True, out=args.out)
        return make_config(None if saved_preset == "custom" else saved_preset, **saved)
    return make_config(preset, **overrides)


def train_command(args: argparse.Namespace) -> int:
    from ipce.engine.train import run

    from ipce.utils.threads import split_cores

    config = config_from_args(args)
    if args.workers is None and not getattr(args, "resume", None):  # not given: the split of the usable cores
        config = dataclasses.replace(config, workers=split_cores(args.threads, None)[1])
    use_cores(argparse.Namespace(threads=args.threads, workers=config.workers))  # torch threads beside the workers
    run(config)
    return 0

