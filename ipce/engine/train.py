"""Training, split by split: set-up, loop, evaluation, checkpoints, resume, DDP, report.

Read top to bottom: `run` prepares data and splits and calls `train_split` for each split.
`train_split` reads as the loop: `set_up_split` (model, AdamW, scaler, resume via `load_state`), then per
epoch `train_one_epoch` (the original code's cosine schedule, `batch_loss` (L1), autocast, accumulation),
`evaluate` on the held-out part and `end_epoch` (best epoch as an ipce checkpoint, `save_state` of the
last epoch for --resume), then `finish_split` (test part, plots, result.json).
"""
from __future__ import annotations

import logging
import dataclasses
from dataclasses import dataclass, field
import json
import math
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ipce.config import TrainConfig
from ipce.datasets.loader import ViewDataset, make_loader
from ipce.models.views import ViewConfig
from ipce.engine.evaluate import metrics_of, predict_loader
from ipce.errors import DataError, IpceError, WeightsError
from ipce.models.backbone import TINY_CONFIGS, RANDOM_PREFIX, find_weights, load_backbone
from ipce.models.checkpoint import save_checkpoint
from ipce.models.correspondence import LEVELS, TEMPLATE, CorrespondenceScorer
from ipce.models.scale import MODEL_RANGE, ScoreScale, scale_of
from ipce.models.speed import apply_speed_options, speed_settings
from ipce.utils.distributed import dist_info, gather, is_main, setup_distributed
from ipce.utils.io import save_torch, write_csv, write_text
from ipce.utils.precision import autocast
from ipce.utils.progress import progress_bar


log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------- schedule
def schedule_positions(epochs: int, t_max: int) -> list[int]:
    """Cosine positions used per epoch: t advances by one per epoch, and a position whose
    rate would be exactly 0 (t = t_max, 3 t_max, ...) is skipped, as the original code did."""
    positions, t = [], 0
    for _ in range(epochs):
        while t % (2 * t_max) == t_max:
            t += 1
        positions.append(t)
        t += 1
    return positions


def epoch_lrs(epochs: int, base_lr: float, t_max: int) -> list[float]:
    return [base_lr * (1 + math.cos(math.pi * t / t_max)) / 2 for t in schedule_positions(epochs, t_max)]


# ---------------------------------------------------------------------------- data
def read_annotations(config: TrainConfig):
    """Every row of the run's annotations (`Annotations`: usable records, bad rows, duplicate warnings)."""
    from ipce.datasets.sources import dataset_info, load_custom, load_dataset

    if not config.annotations and not config.dataset:
        return None  # preferences alone (--preferences without MOS data)
    if config.annotations:
        # read with the score column optional, so that its absence is told with the flag that fixes it
        found = load_custom(config.annotations, config.images, config.image_col, config.prompt_col,
                            config.target_col, require_target=False, duplicates=config.duplicates)
        if found.records and found.records[0].target is None:
            raise DataError(f"{config.annotations}: no score column {config.target_col!r}; training needs scores: "
                            "pass --target-col NAME with the column that holds them")
        return found
    subset = dataset_info(config.dataset).train_subset
    return load_dataset(config.dataset, config.data_root, subset=subset, target=config.target,
                        duplicates=config.duplicates)


def check_score_scale(config: TrainConfig, records) -> None:
    """Stop before any work when the targets lie outside their scale: scores on 0..100 trained
    against the model's 0..5 give a saturated model without a word."""
    targets = [r.target for r in records]
    if not targets:
        return
    scale = scale_of(config.mos_range)
    low, high = min(targets), max(targets)
    if scale.lo <= low and high <= scale.hi:
        return
    where = (f"column {config.target_col!r} of {config.annotations}" if config.annotations
             else f"target {config.target or _default_target(config)!r} of {config.dataset}")
    seen = f"targets lie in {low:g}..{high:g} ({where})"
    if config.mos_range is None:
        raise DataError(f"{seen}, outside the model's {ScoreScale()}; pass --mos-range LO HI with the scale of "
                        f"your scores (e.g. --mos-range {suggested_range(low, high)})")
    raise DataError(f"{seen}, outside the scale {scale} (--mos-range); pass --mos-range LO HI with the range "
                    "your scores are on")


def suggested_range(low: float, high: float) -> str:
    """A round scale that holds low..high, for the example in the error."""
    lo = 0 if low >= 0 else math.floor(low)
    hi = next((c for c in (MODEL_RANGE[1], 10, 100) if high <= c), math.ceil(high))
    return f"{lo:g} {hi:g}"


def preflight(config: TrainConfig):
    """(the annotations, the weight file: --weights, else the file found for a named backbone, None for
    random weights), or one error listing every missing input (dataset, weights) with where to get it."""
    problems, found, weights = [], None, config.weights
    try:
        found = read_annotations(config)
    except DataError as err:
        problems.append(str(err))
    is_random = config.backbone in TINY_CONFIGS or config.backbone.startswith(RANDOM_PREFIX)
    if config.weights or not is_random:
        try:
            if config.weights:
                if not Path(config.weights).is_file():
                    raise WeightsError(f"{config.weights}: no such weight file (--weights)")
            else:
                weights = str(find_weights(config.backbone))
        except WeightsError as err:
            problems.append(str(err))
    if problems:
        raise IpceError("\n".join(problems))
    return found, weights


def check_files(config: TrainConfig, found):
    """Open every image of the usable rows before the first step and report every bad row and image
    at once; stop on any unless --skip-bad (which drops them). Duplicate warnings are printed."""
    from ipce.datasets.checks import check_annotations, filter_bad

    if is_main():
        for warning in found.warnings:
            log.warning("%s", warning.message)
    report = check_annotations(found, workers=max(config.workers, 1), progress=is_main() and config.progress)
    if report.ok:
        return found.records
    if not config.skip_bad:
        lines = [p.message for p in report.problems[:20]]  # each names its file (and row)
        more = len(report.problems) - len(lines)
        raise DataError(f"{len(report.problems)} bad records; fix them or pass --skip-bad to drop them:",
                        details=lines + ([f"... and {more} more"] if more > 0 else []))
    kept = filter_bad(found.records, report)
    if is_main():
        log.info("--skip-bad: dropped %d bad records of %d", found.rows - len(kept), found.rows)
    return kept


def make_splits(config: TrainConfig, records):
    """({number: split}, split-file checks): imported folders keep their numbers (the original AGIQA-1K
    folders start at 0); drawn splits are numbered from 1."""
    from ipce.datasets.splits import holdout_splits, random_splits, read_split_dir, unusable_splits

    if config.splits_dir:
        numbered, checks = read_split_dir(config.splits_dir, records, drop_overlap=config.drop_overlap)
        bad = unusable_splits(checks)
        if bad:
            raise DataError(f"{config.splits_dir}: split {bad[0].split} has no usable "
                            f"{'training' if bad[0].train == 0 else 'held-out'} record ({bad[0].line()}); "
                            "check that the split files belong to this dataset (`ipce splits --from`)")
        return dict(numbered), checks
    if config.protocol == "holdout":
        drawn = holdout_splits(records, config.n_splits, tuple(config.holdout_ratios), config.seed, config.group_by)
    else:
        drawn = random_splits(records, config.n_splits, config.ratio, config.seed, config.group_by)
    return dict(enumerate(drawn, start=1)), []


# ---------------------------------------------------------------------------- model
def build_model(config: TrainConfig, device: torch.device) -> tuple[CorrespondenceScorer, dict]:
    """(the scorer around the run's backbone, the backbone's open_clip config)."""
    clip, model_config, _ = load_backbone(config.backbone, config.weights)
    # the texts' template and levels are saved with the weights (save_checkpoint reads them off the model)
    model = CorrespondenceScorer(clip, template=config.template or TEMPLATE, levels=config.levels or LEVELS).to(device)
    if config.grad_checkpointing:
        clip.set_grad_checkpointing(True)
    return model, model_config


def checkpoint_meta(config: TrainConfig, model_config: dict, metrics: dict, epoch: int) -> dict:
    return {
        "backbone": config.backbone,
        "model_config": model_config,
        "quick_gelu": True,
        "resize": config.resize,
        "patches": config.eval_patches,
        "train_patches": config.train_patches,
        "prompt_prefix": config.prompt_prefix if config.prompt_prefix != "none" else None,
        "training": config.to_dict(),
        "precision": config.precision,  # what its metrics were computed in: scoring uses it by default
        "epoch": epoch,
        "metrics": metrics,
        "mos_range": list(scale_of(config.mos_range).range),  # the scale the model answers on
        "trained_on": trained_on(config),
    }


def trained_on(config: TrainConfig) -> dict:
    """What a checkpoint learned from: MOS data (with its scale), human preferences, or both."""
    from ipce.engine.preferences import TIES

    mos = config.annotations or config.dataset
    return {"mos": {"data": mos, "range": list(scale_of(config.mos_range).range)} if mos else None,
            "preferences": {"data": config.preferences, "loss": "bradley-terry", "ties": TIES,
                            "weight": config.preference_weight} if config.preferences else None}


# ---------------------------------------------------------------------------- files
def write_predictions(path: Path, records, indices, preds) -> None:
    rows = [[records[i].name, records[i].prompt, records[i].target, f"{p:.6f}"] for i, p in zip(indices, preds)]
    write_csv(path, ["image", "prompt", "mos", "score"], rows)


# ---------------------------------------------------------------------------- one split
def evaluate(model, records, config: TrainConfig, device, desc: str):
    """Held-out predictions (every rank's share gathered) and their metrics."""
    order, pred = score_records(model, records, config, device, desc)
    return order, pred, metrics_of(pred, [records[i].target for i in order])


def evaluate_run(state: "SplitRun", model, config: TrainConfig, device, side: str = "val"):
    """The held-out metrics of a split side (val or test) over the run's data: MOS metrics, preference
    metrics (`pair_accuracy`, ...), or both; with the MOS predictions (order, pred) for files and plots."""
    from ipce.engine.preferences import preference_metrics_of_scores

    records = state.val_records if side == "val" else state.test_records
    prefs = state.pref_val if side == "val" else state.pref_test
    order, pred, metrics = [], [], {}
    if records:
        order, pred, metrics = evaluate(model, records, config, device, desc=f"split {state.k} {side}")
    if prefs is not None:
        p_order, p_pred = score_records(model, prefs.records, config, device, desc=f"split {state.k} {side} prefs")
        metrics.update(preference_metrics_of_scores(prefs, p_order, p_pred))
    return order, pred, metrics


def score_records(model, records, config: TrainConfig, device, desc: str):
    """Scores of `records` (every rank's share gathered) on the data's scale: (positions, scores)."""
    from torch.utils.data.distributed import DistributedSampler

    _, world, _ = dist_info()
    dataset = ViewDataset(records, ViewConfig(config.resize, config.eval_patches), config.prompt_prefix,
                          pixels=config.feed == "uint8")
    sampler = DistributedSampler(dataset, shuffle=False) if world > 1 else None
    batch = max(1, (config.eval_batch_size or config.batch_size) // world)
    loader = make_loader(dataset, batch, shuffle=False, workers=config.workers, device=device, sampler=sampler)
    net = model.module if hasattr(model, "module") else model
    net.eval()

    def score(b):
        with autocast(device, config.precision):
            return net(*b.views_on(device, config.eval_patches), b.prompts)

    indices, preds, _, _ = predict_loader(score, loader, desc=desc, progress=is_main() and config.progress)
    merged = {}
    for part_idx, part_pred in gather((indices.tolist(), preds.tolist())):
        merged.update(zip(part_idx, part_pred))  # the sampler pads with repeats: keep each index once
    order = sorted(merged)
    scale = scale_of(config.mos_range)
    return order, [scale.to_data(merged[i]) for i in order]  # files, metrics and plots are on the data's scale


@dataclass
class SplitRun:
    """What one split's training holds between epochs: the model (and its DDP wrapper `net`), the
    optimizer, the loss scaler, the training views, the epochs' rates, and the history so far."""
    k: int
    split_dir: Path
    model: CorrespondenceScorer
    model_config: dict
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    train_set: ViewDataset | None  # MOS training views (None: preferences alone)
    val_records: list
    lrs: list[float]
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=dict)  # the best epoch's record (ipce.engine.preferences.choice_value)
    start_epoch: int = 0
    writer: object = None
    test_records: list = field(default_factory=list)
    pref_train: object = None  # PreferenceData of each side (ipce.engine.preferences), None without --preferences
    pref_val: object = None
    pref_test: object = None
    pref_set: ViewDataset | None = None  # the preference training images' views

    @property
    def train_images(self) -> int:
        return (len(self.train_set) if self.train_set else 0) + (len(self.pref_set) if self.pref_set else 0)

    @property
    def state_path(self) -> Path:
        return self.split_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.split_dir / "best.safetensors"


def set_up_split(config: TrainConfig, records, split, k: int, split_dir: Path, device: torch.device,
                 prefs=None) -> SplitRun:
    """The split's model (seeded by split), optimizer and scaler, resumed from `last.pt` under --resume,
    wrapped for DDP; its training views (MOS records of `split`, preference groups of `prefs`: (groups,
    their split) or None); its TensorBoard writer."""
    from torch.nn.parallel import DistributedDataParallel

    _, world, _ = dist_info()
    split_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed + k)
    model, model_config = build_model(config, device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, config)
    scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
    views = ViewConfig(config.resize, config.train_patches, train=True, flip=config.flip)
    train_set = ViewDataset([records[i] for i in split.train], views, config.prompt_prefix,
                            seed=config.seed + k, pixels=config.feed == "uint8") if split is not None else None
    state = SplitRun(k, split_dir, model, model_config, model, optimizer, scaler, train_set,
                     [records[i] for i in split.val] if split is not None else [],
                     epoch_lrs(config.epochs, config.lr, config.t_max),
                     test_records=[records[i] for i in split.test] if split is not None and split.test else [])
    if prefs is not None:
        set_up_preferences(state, config, *prefs, views)
    if config.resume and state.state_path.is_file():
        load_state(state)
    apply_speed_options(model, **speed_settings(config))  # before DDP wraps it
    if world > 1:
        state.net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.tensorboard and is_main():
        state.writer = tensorboard_writer(split_dir)
    return state


def set_up_preferences(state: SplitRun, config: TrainConfig, groups, split, views: ViewConfig) -> None:
    """The split's preference groups by side, the training images' views, and the held-out groups
    written as ImageRewardDB JSON (`val_preferences.json`, `test_preferences.json`) for `ipce predict`."""
    from ipce.engine.preferences import PreferenceData, write_groups

    sides = {"train": split.train, "val": split.val, "test": split.test or []}
    data = {side: PreferenceData.of([groups[i] for i in indices]) if len(indices) else None
            for side, indices in sides.items()}
    state.pref_train, state.pref_val, state.pref_test = data["train"], data["val"], data["test"]
    state.pref_set = ViewDataset(state.pref_train.records, views, config.prompt_prefix, seed=config.seed + state.k + 7919,
                                 pixels=config.feed == "uint8")
    if is_main():
        for side in ("val", "test"):
            if data[side] is not None:
                write_groups(state.split_dir / f"{side}_preferences.json", data[side])


def make_optimizer(params, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW at the recipe's rate and decay; `--fused-adamw`: its fused kernel (torch's default
    otherwise: the per-list `foreach` one)."""
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay,
                             fused=True if config.fused_adamw else None)


def tensorboard_writer(split_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise IpceError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter(str(split_dir / "tensorboard"))


def save_state(state: SplitRun, epoch: int) -> None:
    """`last.pt`: everything --resume needs to continue after `epoch` as if never stopped."""
    save_torch(state.state_path, {"model": state.model.clip.state_dict(), "optimizer": state.optimizer.state_dict(),
                                  "scaler": state.scaler.state_dict(), "epoch": epoch, "history": state.history,
                                  "best": state.best, "torch_rng": torch.get_rng_state()})


def load_state(state: SplitRun) -> None:
    """Continue from `last.pt`: weights, optimizer, scaler, history, best epoch and the random state."""
    saved = torch.load(state.state_path, map_location="cpu", weights_only=True)
    state.model.clip.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scaler.load_state_dict(saved["scaler"])
    state.history = saved["history"]
    state.best, state.start_epoch = saved["best"], saved["epoch"] + 1
    torch.set_rng_state(saved["torch_rng"])
    if is_main():
        log.info("split %d: resuming after epoch %d from %s", state.k, state.start_epoch, state.state_path)


def batch_loss(scores: torch.Tensor, targets: torch.Tensor, scale: ScoreScale) -> torch.Tensor:
    """The training loss of one batch: L1 between the model's scores and the targets mapped to the
    model's 0..5."""
    return F.l1_loss(scores.float(), scale.to_model(targets))


def epoch_loaders(state: SplitRun, config: TrainConfig, epoch: int, device: torch.device) -> list:
    """The epoch's loaders, each with its kind: ("mos", loader, None) over the MOS views, ("pref", loader,
    batches) over whole preference groups (ipce.engine.preferences.group_batches); every order seeded by
    the epoch, so a resumed run draws the same."""
    from torch.utils.data.distributed import DistributedSampler

    from ipce.engine.preferences import group_batches

    rank, world, _ = dist_info()
    order_seed = config.seed * 1000 + state.k * 100 + epoch  # the epoch's order, independent of resumes
    loaders = []
    if state.train_set is not None:
        state.train_set.set_epoch(epoch)
        sampler = DistributedSampler(state.train_set, shuffle=True, seed=order_seed) if world > 1 else None
        loaders.append(("mos", make_loader(state.train_set, max(1, config.batch_size // world // config.accumulate),
                                           shuffle=True, workers=config.workers, seed=order_seed, device=device,
                                           sampler=sampler), None))
    if state.pref_set is not None:
        state.pref_set.set_epoch(epoch)
        batches = group_batches(state.pref_train, max(1, config.batch_size // config.accumulate), order_seed)
        mine = batches[rank::world][:max(1, len(batches) // world)]  # every rank takes as many steps
        loaders.append(("pref", make_loader(state.pref_set, 0, False, workers=config.workers, device=device,
                                            batches=[b.images for b in mine]), mine))
    return loaders


def interleave(loaders: list):
    """(kind, batch, its GroupBatch or None) from every loader, spread evenly over the epoch."""
    iters = [(kind, iter(loader), batches, len(loader)) for kind, loader, batches in loaders]
    done = [0] * len(iters)
    while any(d < n for d, (_, _, _, n) in zip(done, iters)):
        i = min((d / n, i) for i, (d, (_, _, _, n)) in enumerate(zip(done, iters)) if d < n)[1]
        kind, it, batches, _ = iters[i]
        yield kind, next(it), None if batches is None else batches[done[i]]
        done[i] += 1


def step_loss(state: SplitRun, config: TrainConfig, kind: str, batch, group_batch, device) -> torch.Tensor:
    """One batch's loss: L1 against the MOS (model scale), or the weighted Bradley-Terry loss of its pairs."""
    from ipce.engine.preferences import bradley_terry_loss, positions_in

    with autocast(device, config.precision):
        scores = state.net(*batch.views_on(device, config.train_patches), batch.prompts)
    if kind == "mos":
        return batch_loss(scores, batch.targets.to(device), scale_of(config.mos_range))
    where = positions_in(batch.indices, group_batch.images)
    pairs = [(where[i], where[j], y) for i, j, y in group_batch.pairs]
    return config.preference_weight * bradley_terry_loss(scores, pairs)


def train_one_epoch(state: SplitRun, config: TrainConfig, epoch: int, device: torch.device) -> dict:
    """One pass over the training views at the epoch's rate (MOS batches and preference batches spread
    over it); returns the epoch's mean losses: `train_loss` (MOS, L1 on the data's scale) and
    `train_pref_loss` (Bradley-Terry, per pair), each where the run has that data."""
    _, world, _ = dist_info()
    scale, lr = scale_of(config.mos_range), state.lrs[epoch]
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    loaders = epoch_loaders(state, config, epoch, device)
    steps = sum(len(loader) for _, loader, _ in loaders)
    state.model.train()
    # the losses stay on the device, summed in float64 (the arithmetic of a Python float sum); the host
    # reads one every `log_every` steps for the bar, and the sums at the end
    sums = {kind: [torch.zeros((), dtype=torch.float64, device=device), 0] for kind in ("mos", "pref")}
    bar = progress_bar(total=state.train_images, desc=f"split {state.k} epoch {epoch + 1}/{config.epochs}",
                       unit="img", enabled=is_main() and config.progress, leave=False)
    state.optimizer.zero_grad(set_to_none=True)
    for step, (kind, batch, group_batch) in enumerate(interleave(loaders)):
        loss = step_loss(state, config, kind, batch, group_batch, device)
        state.scaler.scale(loss / config.accumulate).backward()
        if (step + 1) % config.accumulate == 0 or step + 1 == steps:
            state.scaler.step(state.optimizer)
            state.scaler.update()
            state.optimizer.zero_grad(set_to_none=True)
        weight = len(batch) if kind == "mos" else len(group_batch.pairs)
        sums[kind][0] += loss.detach().double() * weight
        sums[kind][1] += weight
        bar.update(len(batch) * world)
        if (step + 1) % config.log_every == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}")
    bar.close()
    losses = {}
    for kind, key in (("mos", "train_loss"), ("pref", "train_pref_loss")):
        if any(k == kind for k, _, _ in loaders):
            total, count = sum(gather(sums[kind][0].item())), sum(gather(sums[kind][1]))
            mean = total / max(count, 1)
            losses[key] = scale.to_data_error(mean) if kind == "mos" else mean / config.preference_weight
    return losses


def epoch_line(record: dict) -> str:
    """The epoch's line: the losses and held-out metrics the run has."""
    shown = [f"{label} {record[key]:.4f}" for key, label in
             (("train_loss", "loss"), ("train_pref_loss", "pref loss"), ("srcc", "srcc"), ("plcc", "plcc"),
              ("pair_accuracy", "pair acc")) if record.get(key) is not None]
    return f"split {{k}} epoch {record['epoch']}: {'  '.join(shown)}  ({record['train_images_per_s']:.1f} img/s)"


def end_epoch(state: SplitRun, config: TrainConfig, metrics: dict, order, pred) -> None:
    """After an epoch's evaluation: keep the checkpoint and predictions of a better epoch (chosen by
    ipce.engine.preferences.choice_value), append the history, write the resume state and report (rank
    0); every rank then agrees on the best."""
    from ipce.engine.preferences import choice_value

    record = state.history[-1]
    epoch = record["epoch"]
    best = choice_value(state.best)
    improved = choice_value(record) > best or not math.isfinite(best)
    if is_main():
        if improved:
            state.best = dict(record)
            save_checkpoint(state.best_path, state.model, checkpoint_meta(config, state.model_config, metrics, epoch))
            if state.val_records:
                write_predictions(state.split_dir / "val_predictions.csv", state.val_records, order, pred)
        write_text(state.split_dir / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in state.history))
        if state.writer is not None:
            for key in ("train_loss", "train_pref_loss", "srcc", "plcc", "srcc_plcc_mean", "pair_accuracy",
                        "pair_accuracy_ties", "kendall_tau", "lr"):
                if record.get(key) is not None:
                    state.writer.add_scalar(key, record[key], epoch)
        save_state(state, epoch - 1)
        log.info("%s", epoch_line(record).replace("{k}", str(state.k)))
    state.best = gather(state.best)[0]  # every rank agrees with rank 0


def train_split(config: TrainConfig, records, split, k: int, split_dir: Path, device: torch.device,
                prefs=None) -> dict:
    """Train on one split (MOS records of `split`; preference groups of `prefs`: (groups, their split) or
    None): set up (or resume), then per epoch train, evaluate the held-out part and keep the best; finally
    test the best epoch (holdout) and write the split's result. Returns the result."""
    from ipce.engine.preferences import choice_value

    state = set_up_split(config, records, split, k, split_dir, device, prefs)
    for epoch in range(state.start_epoch, config.epochs):
        started = time.perf_counter()
        losses = train_one_epoch(state, config, epoch, device)
        train_seconds = time.perf_counter() - started
        order, pred, metrics = evaluate_run(state, state.model, config, device, "val")
        record = {"epoch": epoch + 1, "lr": state.lrs[epoch], **losses,
                  "train_images_per_s": state.train_images / train_seconds, **metrics}
        state.history.append({**record, "choice": choice_value(record)})
        end_epoch(state, config, metrics, order, pred)
    if state.writer is not None:
        state.writer.close()
    return finish_split(state, config, device)


def finish_split(state: SplitRun, config: TrainConfig, device: torch.device) -> dict:
    """The split's result (the best epoch's metrics; under holdout, the best checkpoint's test metrics),
    its plots and result.json; the resume state goes unless --keep-last."""
    k, best = state.k, state.best
    result = {"split": k, **best}
    if state.test_records or state.pref_test is not None:
        from ipce.models.checkpoint import load_checkpoint

        best_model, _ = load_checkpoint(state.best_path, device)
        apply_speed_options(best_model, **speed_settings(config))
        order, pred, test_metrics = evaluate_run(state, best_model, config, device, "test")
        result = {"split": k, "epoch": best["epoch"], "val_choice": best.get("choice"), **test_metrics}
        if "srcc_plcc_mean" in best:
            result["val_srcc_plcc_mean"] = best["srcc_plcc_mean"]
        if is_main() and state.test_records:
            write_predictions(state.split_dir / "test_predictions.csv", state.test_records, order, pred)
    if is_main():
        plot_split(state.split_dir, state.history, k)
        write_text(state.split_dir / "result.json", json.dumps(result, indent=2))
        drop_last_state(state.state_path, config.keep_last)
    return result


def drop_last_state(state_path: Path, keep: bool) -> None:
    """After a split finished (its result.json written), remove its resumable state `last.pt` (about
    three times a checkpoint: weights, optimizer moments) unless `keep` (--keep-last), and say so.
    A split that stops early keeps it, for --resume; a finished one resumes from result.json."""
    if not state_path.is_file():
        return
    if keep:
        log.info("kept %s (--keep-last)", state_path)
    else:
        state_path.unlink()
        log.info("removed %s: the split finished, the resume state is not needed (--keep-last keeps it)", state_path)


def plot_split(split_dir: Path, history: list[dict], k: int) -> None:
    import csv

    from ipce.utils.report import plot_learning_curves, plot_scatter

    plot_learning_curves(history, split_dir / "learning_curves.png", title=f"split {k}")
    for name in ("test_predictions.csv", "val_predictions.csv"):
        path = split_dir / name
        if path.is_file():
            rows = list(csv.DictReader(path.open(encoding="utf-8")))
            plot_scatter([float(r["score"]) for r in rows], [float(r["mos"]) for r in rows],
                         split_dir / "scatter.png", title=f"split {k}, best epoch ({name.split('_')[0]})")
            break


# ---------------------------------------------------------------------------- the run
def default_out(config: TrainConfig) -> Path:
    return Path("runs") / f"{config.preset}-{time.strftime('%Y%m%d-%H%M%S')}"


def run(config: TrainConfig) -> dict:
    """Train every selected split and write the summary; returns the summary."""
    device = setup_distributed(config.device)
    out = Path(config.out) if config.out else default_out(config)
    if config.resume:
        saved = out / "config.json"
        if not saved.is_file():
            raise IpceError(f"--resume: {saved} not found; pass --out with the folder of the run to resume")
    found, weights = preflight(config)
    # the resolved weight file, as config.json and the checkpoints record it; the caller's config is left as given
    config = dataclasses.replace(config, weights=weights)
    records, splits, split_checks = [], {}, []
    if found is not None:
        check_score_scale(config, found.records)
        records = check_files(config, found)
        splits, split_checks = make_splits(config, records)
    prefs, pref_splits = preference_splits(config)
    chosen = config.splits or list(splits or pref_splits)
    splits = splits or dict.fromkeys(pref_splits)
    unknown = [k for k in chosen if k not in splits]
    if unknown:
        raise IpceError(f"--splits {','.join(map(str, chosen))}: no split {unknown[0]}; the splits are numbered "
                        f"{min(splits)}..{max(splits)}")
    if is_main():
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")
        for check in split_checks:
            log.info("%s: %s", config.splits_dir, check.line())
        held = f"{len(records)} records" + (f", {len(prefs)} preference groups" if prefs else "")
        log.info("ipce train: %s, splits %s, %d epochs, out %s", held, chosen, config.epochs, out)
    results = []
    for k in chosen:
        split_dir = out / f"split{k}"
        done = split_dir / "result.json"
        if config.resume and done.is_file():
            results.append(json.loads(done.read_text()))
            continue
        results.append(train_split(config, records, splits[k], k, split_dir, device,
                                   (prefs, pref_splits[k]) if prefs else None))
    summary = {}
    if is_main():
        data = {"rows": found.rows if found else 0, "records": len(records),
                "warnings": [w.message for w in found.warnings] if found else [],
                "split_files": [c.to_dict() for c in split_checks]}
        if prefs:
            from ipce.datasets.preferences import count_preferences

            data["preferences"] = dataclasses.asdict(count_preferences(prefs))
        summary = write_summary(out, config, results, data)
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    return summary


def preference_splits(config: TrainConfig):
    """(the run's preference groups, {number: split of the groups by prompt}), or ([], {}) without
    --preferences."""
    if not config.preferences:
        return [], {}
    from ipce.engine.preferences import load_for_training, split_groups

    if config.splits_dir:
        raise IpceError("--splits-dir: split folders name MOS records; a --preferences run draws its splits by "
                        "prompt (--seed, --ratio, --protocol)")
    groups = load_for_training(config, workers=max(config.workers, 1), progress=is_main() and config.progress)
    return groups, split_groups(groups, config)


def write_summary(out: Path, config: TrainConfig, results: list[dict], data: dict | None = None) -> dict:
    """summary.json and summary.md: per split and mean/std, the paper's row, the protocol, and what the
    data held (`data`: rows, records, duplicate warnings, split-file counts)."""
    from ipce.utils.metrics import summarize
    from ipce.utils.io import write_json
    from ipce.presets.registry import paper_result
    from ipce.utils.report import split_table

    target = config.target or _default_target(config)
    paper = paper_result(config.preset, target) or paper_result(config.dataset or "", target)
    mos_keys = ("srcc", "plcc", "krcc", "rmse", "plcc_logistic", "rmse_logistic", "srcc_plcc_mean")
    pref_keys = ("pair_accuracy", "pair_accuracy_ties", "kendall_tau")
    keys = [*(mos_keys if config.annotations or config.dataset else ()), *(pref_keys if config.preferences else ())]
    stats = summarize([{k: r.get(k) for k in keys} for r in results], keys=keys)
    shown = [k for k in ("srcc", "plcc", "krcc", "rmse", "srcc_plcc_mean", *pref_keys) if k in keys]
    table = split_table(results, stats, paper=paper if "srcc" in keys else None, keys=shown)
    if config.protocol == "paper" and not config.splits_dir:
        note = ("Protocol 'paper' (as published): each split's epoch was chosen on the same held-out part "
                "it is reported on, which flatters the numbers; use --protocol holdout for an unbiased estimate.")
    elif config.protocol == "holdout":
        note = "Protocol 'holdout': epoch chosen on validation, numbers reported on the test part."
    else:
        note = "Splits imported from " + str(config.splits_dir) + "; epoch chosen on each held-out part."
    summary = {"preset": config.preset, "target": target, "protocol": config.protocol, "splits": results,
               "summary": stats, "paper": {"srcc": paper[0], "plcc": paper[1]} if paper else None, "note": note,
               "data": data or {}}
    write_json(out / "summary.json", summary, fsync=True)
    write_text(out / "summary.md", f"# {summary_title(config, target)}\n\n{table}\n\n{note}\n{data_notes(data or {})}",
               fsync=True)
    log.info("\n%s\n\n%s\nresults in %s", table, note, out)
    return summary


def summary_title(config: TrainConfig, target: str) -> str:
    """The summary's title: the dataset and target, e.g. "AGIQA-3K (quality)"; custom data: the
    annotation file's name and the target column, e.g. "my.csv (mos)"."""
    prefs = f" + preferences {Path(config.preferences).name}" if config.preferences else ""
    if config.dataset:
        from ipce.datasets.sources import dataset_info

        return f"{dataset_info(config.dataset).folder} ({target}){prefs}"
    if config.annotations:
        return f"{Path(config.annotations).name} ({config.target_col}){prefs}"
    if config.preferences:
        return f"preferences {Path(config.preferences).name}"
    return f"{config.preset} ({target})"


def data_notes(data: dict) -> str:
    """The summary's lines on the data: duplicate warnings and what each imported split file held."""
    lines = [f"- warning: {w}" for w in data.get("warnings", [])]
    for check in data.get("split_files", []):
        same = f", the same split as {check['same_as']}" if check.get("same_as") is not None else ""
        lines.append(f"- split {check['split']}: train {check['train']}, val {check['val']}, missing "
                     f"{check['missing']}, overlap {check['overlap']}{same}")
    return "\n## Data\n\n" + "\n".join(lines) + "\n" if lines else ""


def _default_target(config: TrainConfig) -> str:
    if config.dataset:
        from ipce.datasets.sources import dataset_info

        return dataset_info(config.dataset).default_target
    return config.target_col
