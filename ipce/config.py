"""Training configuration: one dataclass, filled from a bundled preset and then from flags."""
from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ipce.errors import IpceError
from ipce.models.scale import scale_of
from ipce.presets import registry
from ipce.utils.precision import PRECISIONS

# TrainConfig's recipe defaults are the default preset's entry in the registry, not a copy of it.
_DEFAULT = registry.bundled()[registry.DEFAULT_PRESET]


@dataclass
class TrainConfig:
    # data
    preset: str = registry.DEFAULT_PRESET
    presets: str | None = None  # a user registry file read beside the bundled presets (and $IPCE_PRESETS)
    dataset: str | None = _DEFAULT["dataset"]  # a published dataset key; None with annotations/images (custom data)
    data_root: str = "data"
    annotations: str | None = None
    images: str | None = None
    image_col: str = "image"
    prompt_col: str = "prompt"
    target_col: str = "mos"
    target: str | None = None  # dataset target name (quality, alignment, ...); None: the dataset's default
    mos_range: tuple[float, float] | None = None  # the scores' scale LO..HI; None: the model's 0..5, unchecked
    prompt_prefix: str | None = None  # 'generator': the text is "{generator} {prompt}" (NTIRE second model)
    template: str | None = None  # the texts, with {level} and usually {prompt}; None: the method's own
    levels: tuple[str, ...] | None = None  # the level words, worst first; None: badly, poorly, fairly, well, perfectly
    skip_bad: bool = False
    duplicates: str = "keep"  # an image listed more than once: keep (as published), first, mean
    preferences: str | None = None  # human choices (ImageRewardDB JSON or a pair CSV), images in `images`
    preference_form: str = "auto"  # auto (.json: imagereward), imagereward or pairs
    caption_col: str | None = None  # pair tables: column names (None: Pick-a-Pic's)
    image0_col: str | None = None
    image1_col: str | None = None
    label_col: str | None = None
    preference_weight: float = 1.0  # the Bradley-Terry loss's weight beside the MOS loss (mixed runs)
    # model
    backbone: str = _DEFAULT["backbone"]
    weights: str | None = None
    resize: int = _DEFAULT["resize"]
    train_patches: int = 8
    eval_patches: int = _DEFAULT["eval_patches"]
    flip: bool = _DEFAULT["flip"]
    # optimisation (the original code's)
    epochs: int = _DEFAULT["epochs"]
    batch_size: int = _DEFAULT["batch_size"]  # global batch (all processes together)
    lr: float = 5e-6
    weight_decay: float = 1e-3
    t_max: int = 5
    accumulate: int = 1
    precision: str = "fp32"
    grad_checkpointing: bool = False
    fused_adamw: bool = False  # AdamW's fused kernel (one per step instead of a few per tensor list)
    feed: str = "float"  # float: views made by the loader; uint8: its 8-bit pixels, views made on the device
    log_every: int = 1  # training steps between reads of the loss on the host (each read waits for the device)
    # protocol
    protocol: str = "paper"  # paper: 80/20, best epoch on the held-out part; holdout: train/val/test
    n_splits: int = 10
    ratio: float = 0.8
    holdout_ratios: tuple[float, float, float] = (0.7, 0.1, 0.2)
    splits: list[int] = field(default_factory=list)  # which splits to run (1-based); empty: all
    group_by: str | None = None
    splits_dir: str | None = None
    drop_overlap: bool = False  # records on both sides of an imported split leave its held-out part
    seed: int = registry.SPLIT_SEED
    # running
    device: str = "auto"  # auto (cuda when available, else cpu), cpu, cuda or cuda:N (ipce.utils.device)
    workers: int = 2
    out: str | None = None
    resume: bool = False
    keep_last: bool = False  # keep each finished split's resumable last.pt (default: removed once it finished)
    tensorboard: bool = False
    compile: bool = False  # torch.compile of both towers (ipce.models.speed)
    channels_last: bool = False  # channels-last image-tower convolutions (ipce.models.speed)
    attention: str = "mha"  # mha (nn.MultiheadAttention) or sdpa (ipce.models.attention)
    compile_regional: bool = False  # torch.compile of each residual block (ipce.models.speed)
    eval_batch_size: int | None = None
    progress: bool = True  # progress bars (--no-progress: none)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# The TrainConfig fields of the speed flags: a resumed run may change them (none changes a score
# beyond float rounding; --feed changes none at all).
SPEED_FIELDS = ("compile", "channels_last", "attention", "compile_regional", "feed")


# The environment variable naming user registry files (several joined by os.pathsep), read beside the
# bundled presets.toml: each [name] table is one dataset's recipe, in presets.toml's schema.
PRESETS_ENV = "IPCE_PRESETS"
_PATH_KEYS = ("annotations", "images", "preferences", "splits_dir", "data_root", "weights")


def load_presets(extra: str | None = None) -> dict[str, dict]:
    """Every preset: the bundled presets.toml, then each file of $IPCE_PRESETS, then `extra` (--presets
    FILE); a later entry of the same name replaces an earlier one."""
    presets = registry.bundled()
    files = [f for f in os.environ.get(PRESETS_ENV, "").split(os.pathsep) if f.strip()]
    for file in [*files, *([extra] if extra else [])]:
        presets.update(_read_registry(file))
    return presets


def _read_registry(file: str) -> dict[str, dict]:
    """A user registry file's entries, checked: one line naming the file and key on a bad one. Relative
    paths (annotations, images, ...) are relative to the file's folder; an entry with `annotations` and no
    `dataset` is custom data."""
    path = Path(file).expanduser()
    try:
        entries = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise IpceError(f"{path}: cannot read the presets file ({err.strerror or err}); check --presets or "
                        f"${PRESETS_ENV}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise IpceError(f"{path}: not a TOML presets file ({err}); write one [name] table per dataset, "
                        "as in ipce/presets/presets.toml") from None
    fields = {f.name: f for f in dataclasses.fields(TrainConfig) if f.name not in ("preset", "presets")}
    for name, entry in entries.items():
        if not isinstance(entry, dict):
            raise IpceError(f"{path}: {name}: not a table; write [{name}] and its settings under it")
        for key, value in entry.items():
            if key not in fields:
                raise IpceError(f"{path}: [{name}] {key}: unknown setting; use TrainConfig's names "
                                "(ipce train's flags with _ for -, e.g. batch_size)")
            if not _fits(fields[key], value):
                raise IpceError(f"{path}: [{name}] {key} = {value!r}: expected {fields[key].type}")
            if key in _PATH_KEYS and not Path(value).expanduser().is_absolute():
                entry[key] = str(path.resolve().parent / value)
        if entry.get("annotations") and "dataset" not in entry:
            entry["dataset"] = None
    return entries


def _fits(field: dataclasses.Field, value) -> bool:
    """Whether a TOML value suits a TrainConfig field (its annotation, read as text)."""
    kind = str(field.type)
    if kind.startswith("bool"):
        return isinstance(value, bool)
    if kind.startswith("int"):
        return isinstance(value, int) and not isinstance(value, bool)
    if kind.startswith("float"):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind.startswith(("tuple", "list")):
        return isinstance(value, list)
    return isinstance(value, str)


def preset_names(extra: str | None = None) -> list[str]:
    return sorted(load_presets(extra))


def make_config(preset: str | None = None, **overrides) -> TrainConfig:
    """The preset's recipe with `overrides` (None values ignored) applied on top."""
    presets = load_presets(overrides.get("presets"))
    name = preset or "agiqa1k"
    if name not in presets:
        raise IpceError(f"--preset {name}: unknown preset; choose one of {', '.join(sorted(presets))} (or add "
                        f"it in a file given by --presets FILE or ${PRESETS_ENV})")
    values = {"preset": name, **registry.recipe(presets[name])}
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    for key, value in overrides.items():
        if key not in known:
            raise IpceError(f"unknown setting {key!r}")
        if value is not None:
            values[key] = value
    if overrides.get("preferences") and not overrides.get("annotations") and preset is None:
        values["dataset"] = None  # preferences alone: no MOS data (with --preset NAME, its MOS data train beside)
        values["mos_range"] = overrides.get("mos_range")
        values["preset"] = "custom"
    if overrides.get("annotations"):
        values["dataset"] = None
        values["mos_range"] = overrides.get("mos_range")  # the preset's range is its dataset's, not this file's
        if preset is None:
            values["preset"] = "custom"
    if values.get("presets"):
        values["presets"] = str(Path(values["presets"]).expanduser().resolve())  # a resumed run finds it anywhere
    if values.get("mos_range") is not None:
        values["mos_range"] = tuple(float(v) for v in values["mos_range"])  # TOML and JSON give lists
    config = TrainConfig(**values)
    validate(config)
    return config


def validate(config: TrainConfig) -> None:
    checks = [
        (config.precision in PRECISIONS,
         f"--precision {config.precision}: use {', '.join(PRECISIONS[:-1])} or {PRECISIONS[-1]}"),
        (config.protocol in ("paper", "holdout"), f"--protocol {config.protocol}: use paper or holdout"),
        (config.group_by in (None, "prompt", "generator"), f"--group-by {config.group_by}: use prompt or generator"),
        (config.prompt_prefix in (None, "none", "generator"),
         f"--prompt-prefix {config.prompt_prefix}: use none or generator"),
        (config.epochs >= 1, "--epochs must be at least 1"),
        (config.preference_weight > 0, "--preference-weight must be positive"),
        (config.preference_form in ("auto", "imagereward", "pairs"),
         f"--preference-form {config.preference_form}: use auto, imagereward or pairs"),
        (config.batch_size >= 1, "--batch-size must be at least 1"),
        (config.accumulate >= 1, "--accumulate must be at least 1"),
        (config.feed in ("float", "uint8"), f"--feed {config.feed}: use float or uint8"),
        (config.log_every >= 1, f"--log-every {config.log_every}: must be at least 1"),
        (config.lr > 0, "--lr must be positive"),
        (config.resize >= 224, f"--resize {config.resize}: must be at least 224 (the crop size)"),
        (config.train_patches >= 1, f"--train-patches {config.train_patches}: must be at least 1"),
        (config.eval_patches >= 1, f"--eval-patches {config.eval_patches}: must be at least 1"),
        (0 < config.ratio < 1, "--ratio must be between 0 and 1"),
        (config.splits_dir is not None or all(1 <= s <= config.n_splits for s in config.splits),
         f"--splits {config.splits}: splits are numbered 1..{config.n_splits}"),
        (config.duplicates in ("keep", "first", "mean"),
         f"--duplicates {config.duplicates}: use keep, first or mean"),
        ((config.annotations is None) == (config.images is None) or config.dataset is not None
         or (config.preferences is not None and config.images is not None),
         "custom data needs both --annotations FILE and --images DIR"),
        (config.preferences is None or config.images is not None,
         "--preferences needs --images DIR (the folder its image names are relative to)"),
    ]
    for ok, message in checks:
        if not ok:
            raise IpceError(message)
    check_template(config.template, config.levels)
    if config.mos_range is not None:
        if len(config.mos_range) != 2:
            raise IpceError(f"--mos-range {config.mos_range}: give two numbers LO HI")
        scale_of(config.mos_range)  # raises on HI <= LO or non-finite values


def check_template(template: str | None, levels) -> None:
    """A template names {level} and at most {prompt} (without it the model is prompt-free); at least
    two distinct levels."""
    import string

    if template is not None:
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
        except ValueError as err:
            raise IpceError(f"--template {template!r}: {err}; write the fields as {{level}} and {{prompt}}") from None
        if "level" not in fields or fields - {"level", "prompt"}:
            raise IpceError(f"--template {template!r}: use the fields {{level}} (required) and {{prompt}} (optional; "
                            "without it the model needs no prompt), e.g. \"a photo of {level} quality\"")
    if levels is not None and (len(levels) < 2 or len(set(levels)) != len(levels) or not all(str(v).strip() for v in levels)):
        raise IpceError(f"--levels {','.join(map(str, levels))}: give at least two distinct words, worst first, "
                        "e.g. bad,poor,fair,good,excellent")
