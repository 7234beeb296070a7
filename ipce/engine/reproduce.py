"""The paper's table in one run: each row (a preset and a target) is one `ipce train` run
(ipce.engine.train.run) with the preset's recipe, in its own folder under the reproduction's
folder; the table (ours against the paper's, per row) is written at the end.

Read top to bottom: `plan` reads each row's data and splits (a row whose dataset is absent is
skipped), `estimate` counts the epochs and images and times a few real training and evaluation
steps of each backbone, `run` trains the rows (finished rows and splits are kept on --resume, the
split in progress resumes from its last epoch) and `write_table` writes table.md/json/png.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ipce.config import SPEED_FIELDS, TrainConfig, make_config
from ipce.errors import DataError, IpceError, WeightsError
from ipce.presets.registry import reproduce_rows

log = logging.getLogger(__name__)

# The paper's table (Peng et al. 2024, Table 2), then AGIQA-1K, which the original code trains too: each
# registry entry's `reproduce` targets, in the registry's order.
ROWS = reproduce_rows()
SPLIT_SOURCES = ("original", "random")
# what --resume may change; everything else is the saved reproduction's
RESUME_MAY_CHANGE = ("device", "workers", "progress", *SPEED_FIELDS)


@dataclass(frozen=True)
class ReproduceConfig:
    rows: tuple[str, ...] = ROWS          # "preset:target"
    splits: str = "original"              # original: the authors' split folders (shipped); random: seeded
    protocol: str = "paper"               # paper | holdout
    only_splits: tuple[int, ...] = ()     # split numbers to run (original: folder numbers); empty: all
    out: str = "reproduction"
    resume: bool = False
    estimate_only: bool = False
    warmup_steps: int = 2                 # timed steps per backbone (after one untimed)
    overrides: dict = field(default_factory=dict)  # TrainConfig fields given as flags (None: the recipe's)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def parse_rows(text: str) -> tuple[str, ...]:
    """'agiqa3k:quality,agiqa1k' -> ('agiqa3k:quality', 'agiqa1k:quality'); checked against the datasets."""
    from ipce.datasets.sources import dataset_info

    rows = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        preset, _, target = item.partition(":")
        try:
            info = dataset_info(preset)
        except DataError:
            raise IpceError(f"--rows {item}: unknown dataset {preset!r}; rows are PRESET:TARGET, e.g. "
                            f"{', '.join(ROWS[:2])}") from None
        target = target or info.default_target
        if target not in info.targets:
            raise IpceError(f"--rows {item}: {info.folder} has no target {target!r}; choose one of "
                            f"{', '.join(info.targets)}")
        rows.append(f"{info.key}:{target}")
    if not rows:
        raise IpceError("--rows: no row given; e.g. --rows agiqa3k:quality,aigcqa30k:quality")
    return tuple(dict.fromkeys(rows))


def row_folder(row: str) -> str:
    return row.replace(":", "-")


# ---------------------------------------------------------------------------- plan
@dataclass
class RowPlan:
    row: str
    config: TrainConfig | None = None     # None: not run
    status: str = "planned"               # planned; skipped (dataset absent); failed (unusable data)
    reason: str | None = None             # why not run (one line)
    sizes: list[tuple[int, int, int]] = field(default_factory=list)  # (train, val, test) per split run


def _base_config(rc: ReproduceConfig, preset: str, target: str) -> TrainConfig:
    overrides = {**rc.overrides, "target": target, "protocol": rc.protocol}
    if rc.splits == "random":
        overrides["splits"] = list(rc.only_splits)
    return make_config(preset, **overrides)


def export_splits(rc: ReproduceConfig, config: TrainConfig, folder: Path) -> list[int]:
    """The original split folders of the row's preset, written into `folder` (three-way for holdout)."""
    from ipce.datasets.splits import original_splits, write_original_split_dir

    numbers = original_splits(config.preset).numbers()
    if rc.only_splits:
        unknown = [k for k in rc.only_splits if k not in numbers]
        if unknown:
            raise IpceError(f"--only-splits: {config.preset} has no original split {unknown[0]}; its folders are "
                            f"{numbers[0]}..{numbers[-1]}")
        numbers = list(rc.only_splits)
    elif rc.overrides.get("n_splits"):
        numbers = numbers[:rc.overrides["n_splits"]]
    ratios = config.holdout_ratios if rc.protocol == "holdout" else None
    return write_original_split_dir(config.preset, folder, numbers, holdout_ratios=ratios, seed=config.seed)


def plan(rc: ReproduceConfig, splits_root: Path) -> list[RowPlan]:
    """Each row's config (the preset's recipe, the flags, the splits) and split sizes; a row whose
    dataset is not under --data-root is skipped with the reason."""
    from ipce.engine.train import make_splits, read_annotations

    plans = []
    for row in rc.rows:
        preset, target = row.split(":")
        config = _base_config(rc, preset, target)
        try:
            found = read_annotations(config)
        except DataError as err:
            if err.kind != "missing-file":
                raise
            plans.append(RowPlan(row, status="skipped", reason=str(err)))
            continue
        if rc.splits == "original":
            folder = splits_root / (preset if rc.protocol == "paper" else f"{preset}-holdout")
            export_splits(rc, config, folder)
            config = dataclasses.replace(config, splits_dir=str(folder))
        try:
            numbered, _ = make_splits(config, found.records)
        except DataError as err:  # e.g. a split with no training record among the images here
            plans.append(RowPlan(row, status="failed", reason=str(err)))
            continue
        chosen = config.splits or list(numbered)
        sizes = [(len(numbered[k].train), len(numbered[k].val), len(numbered[k].test)) for k in chosen]
        small = [(k, size) for k, size in zip(chosen, sizes) if min(size[1], size[2] or size[1]) < 2]
        if small:  # SRCC and PLCC need two held-out images
            k, (_, val, test) = small[0]
            plans.append(RowPlan(row, status="failed", reason=f"split {k} holds {min(val, test or val)} held-out "
                                                              "image(s) of the data here; the metrics need 2"))
            continue
        plans.append(RowPlan(row, config=config, sizes=sizes))
    return plans


# ---------------------------------------------------------------------------- estimate
@dataclass(frozen=True)
class StepTimes:
    train_s_per_image: float
    eval_s_per_image: float
    note: str                              # what was timed


def _timing_model(config: TrainConfig, device):
    """(the row's scorer with its speed options, a note): its pretrained weights, or random weights
    of the same architecture when the file is absent (the same arithmetic, the same time)."""
    from ipce.engine.train import build_model
    from ipce.models.backbone import RANDOM_PREFIX, TINY_CONFIGS, find_weights
    from ipce.models.speed import apply_speed_options, speed_settings

    backbone, weights, note = config.backbone, config.weights, ""
    if not weights and backbone not in TINY_CONFIGS and not backbone.startswith(RANDOM_PREFIX):
        try:
            weights = str(find_weights(backbone))
        except WeightsError:
            backbone, note = RANDOM_PREFIX + backbone, ", random weights (no pretrained file here)"
    model, _ = build_model(dataclasses.replace(config, backbone=backbone, weights=weights), device)
    apply_speed_options(model, **speed_settings(config))
    return model, note


# the text of every timed step (its length is a typical prompt's)
_TIMING_PROMPT = "a photo of a red fox sitting in the snow at sunrise, highly detailed"


def time_steps(config: TrainConfig, device, steps: int = 2) -> StepTimes:
    """Seconds per image of real training steps (forward, L1 loss, backward, AdamW) at the recipe's
    batch size (per step: --batch-size / --accumulate; one image on a CPU, where ViT-L-14 at batch 3
    needs ~20 GB), and of evaluation, on `device`; one untimed step first."""
    model, random = _timing_model(config, device)
    batch = max(1, config.batch_size // config.accumulate)
    if device.type == "cpu":  # per-image time barely depends on the batch there, activation memory does
        batch = 1
    model.train()
    train_s = _seconds_per_step(_training_step(model, config, device, batch), device, steps) / batch
    eval_batch = config.eval_batch_size or config.batch_size
    model.eval()
    eval_s = _seconds_per_step(_evaluation_step(model, config, device, eval_batch), device, steps) / eval_batch
    model = None  # freed (the steps above are done with it, and with the optimizer)
    if device.type == "cuda":
        import torch

        torch.cuda.empty_cache()  # the rows' training starts with the memory free
    note = (f"{config.backbone} {config.precision}, batch {batch} x {config.train_patches + 1} views: "
            f"{1 / train_s:.3g} img/s training, {1 / eval_s:.3g} img/s evaluation ({config.eval_patches + 1} "
            f"views){random}")
    return StepTimes(train_s, eval_s, note)


def _random_views(device, batch: int, patches: int) -> tuple:
    """(crops, global view, prompts) of `batch` random images with `patches` crops each, on `device`."""
    import torch

    return (torch.rand(batch, patches, 3, 224, 224, device=device), torch.rand(batch, 3, 224, 224, device=device),
            [_TIMING_PROMPT] * batch)


def _training_step(model, config: TrainConfig, device, batch: int):
    """A function that runs one training step of `model` on `batch` random images: forward, L1 loss,
    backward and an AdamW step (its optimizer made here, as training makes it)."""
    import torch
    import torch.nn.functional as F

    from ipce.engine.train import make_optimizer
    from ipce.utils.precision import autocast

    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], config)
    crops, global_view, prompts = _random_views(device, batch, config.train_patches)
    targets = torch.rand(batch, device=device) * 5

    def step():
        with autocast(device, config.precision):
            scores = model(crops, global_view, prompts)
        F.l1_loss(scores.float(), targets).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _evaluation_step(model, config: TrainConfig, device, batch: int):
    """A function that scores `batch` random images with their evaluation crops, without gradients."""
    import torch

    from ipce.utils.precision import autocast

    crops, global_view, prompts = _random_views(device, batch, config.eval_patches)

    def step():
        with torch.no_grad(), autocast(device, config.precision):
            model(crops, global_view, prompts)

    return step


def _seconds_per_step(step, device, steps: int) -> float:
    """Mean seconds of `steps` calls of `step` after one untimed call (allocations, kernel choice,
    caches), waiting for the device before and after."""
    import torch

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step()
    sync()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return (time.perf_counter() - started) / steps


def _timing_key(config: TrainConfig) -> tuple:
    return (config.backbone, config.weights, config.batch_size, config.accumulate, config.train_patches,
            config.eval_patches, config.eval_batch_size, config.precision, config.compile, config.channels_last,
            config.grad_checkpointing, config.attention, config.compile_regional, config.fused_adamw)


def duration(seconds: float) -> str:
    """'about 4,793 h (200 days)', 'about 41 h', 'about 2.5 h', 'about 25 min', 'about 40 s'."""
    if seconds >= 3600 * 72:
        return f"about {seconds / 3600:,.0f} h ({seconds / 86400:,.0f} days)"
    if seconds >= 3600 * 1.5:
        return f"about {seconds / 3600:.0f} h" if seconds >= 36000 else f"about {seconds / 3600:.1f} h"
    if seconds >= 90:
        return f"about {seconds / 60:.0f} min"
    return f"about {max(seconds, 1):.0f} s"


def device_name(device) -> str:
    import os

    import torch

    if device.type == "cuda":
        return f"this GPU ({torch.cuda.get_device_name(device)})"
    return f"this CPU ({torch.get_num_threads()} threads of {os.cpu_count()} cores)"


def _span(sizes: list[int]) -> str:
    """'2382-2389', or '864' when every split has the same size."""
    return f"{min(sizes)}" if min(sizes) == max(sizes) else f"{min(sizes)}-{max(sizes)}"


def estimate(plans: list[RowPlan], device, steps: int) -> tuple[list[str], dict]:
    """(the lines to print, the same as numbers): per row the splits, epochs and images; the
    warm-up's speed per backbone; the expected time (data loading not counted)."""
    timings: dict[tuple, StepTimes] = {}
    lines, rows, total_s = [], [], 0.0
    for p in plans:
        if p.config is None:
            continue
        key = _timing_key(p.config)
        if key not in timings:
            log.info("warm-up: timing %d training and %d evaluation steps of %s (recipe batch %d) on %s ...",
                     steps, steps, p.config.backbone, p.config.batch_size, device.type)
            timings[key] = time_steps(p.config, device, steps)
        t, epochs = timings[key], p.config.epochs
        train_images = sum(epochs * train for train, _, _ in p.sizes)
        eval_images = sum(epochs * val + test for _, val, test in p.sizes)
        seconds = train_images * t.train_s_per_image + eval_images * t.eval_s_per_image
        total_s += seconds
        rows.append({"row": p.row, "backbone": p.config.backbone, "splits": len(p.sizes), "epochs": epochs,
                     "train_images": train_images, "eval_images": eval_images, "seconds": seconds})
        train, val, test = (_span([size[i] for size in p.sizes]) for i in range(3))
        test = f" / test {test}" if any(size[2] for size in p.sizes) else ""
        lines.append(f"  {p.row:28s} {p.config.backbone:10s} {len(p.sizes)} splits x {epochs} epochs (train "
                     f"{train} / val {val}{test}): {train_images:,} training + {eval_images:,} evaluation "
                     f"images, {duration(seconds)}")
    epochs = sum(r["splits"] * r["epochs"] for r in rows)
    train_images = sum(r["train_images"] for r in rows)
    eval_images = sum(r["eval_images"] for r in rows)
    head = (f"estimate: {len(rows)} row{'s' if len(rows) != 1 else ''}, {sum(r['splits'] for r in rows)} splits, "
            f"{epochs:,} epochs, {train_images:,} training and {eval_images:,} evaluation images")
    tail = [f"warm-up: {t.note}" for t in timings.values()]
    tail.append(f"expected time: {duration(total_s)} on {device_name(device)} (training and evaluation steps; "
                "image decoding not counted)")
    numbers = {"rows": rows, "epochs": epochs, "train_images": train_images, "eval_images": eval_images,
               "seconds": total_s, "device": device_name(device),
               "warmup": [t.note for t in timings.values()]}
    return [head, *lines, *tail], numbers


# ---------------------------------------------------------------------------- run
def _saved(rc: ReproduceConfig) -> ReproduceConfig:
    """With --resume: the saved reproduction, with only RESUME_MAY_CHANGE taken from the flags."""
    path = Path(rc.out) / "reproduce.json"
    if not path.is_file():
        raise IpceError(f"--resume: {path} not found; pass --out with the folder of the reproduction to resume")
    saved = json.loads(path.read_text(encoding="utf-8"))
    overrides = saved.pop("overrides")
    overrides.update({k: rc.overrides[k] for k in RESUME_MAY_CHANGE if rc.overrides.get(k) is not None})
    saved.update(out=rc.out, resume=True, estimate_only=rc.estimate_only, overrides=overrides)
    saved["rows"], saved["only_splits"] = tuple(saved["rows"]), tuple(saved["only_splits"])
    return ReproduceConfig(**saved)


def run(rc: ReproduceConfig) -> dict:
    """Plan, estimate, train every row (kept when finished, resumed when started), write the table;
    returns the table. With `estimate_only`, returns after the estimate ({"estimate": ...})."""
    from ipce.utils.device import resolve_device
    from ipce.utils.io import write_json

    import torch

    if rc.splits not in SPLIT_SOURCES:
        raise IpceError(f"--splits {rc.splits}: use original or random")
    out = Path(rc.out)
    if rc.resume:
        rc = _saved(rc)
    elif (out / "reproduce.json").is_file() and not rc.estimate_only:
        raise IpceError(f"{out}: holds a reproduction already (reproduce.json); pass --resume to continue it, or "
                        "choose another --out")
    device = torch.device(resolve_device(rc.overrides.get("device")))
    with tempfile.TemporaryDirectory(prefix="ipce-splits-") as scratch:
        plans = plan(rc, Path(scratch) if rc.estimate_only else out / "splits")
    for p in plans:
        if p.reason:
            log.info("%s %s: %s", p.status, p.row, p.reason)
    if not any(p.config is not None for p in plans):
        raise IpceError(f"none of the {len(plans)} rows can run (each is listed above with why); put the datasets "
                        "under --data-root (data/README.md) or choose rows whose data is there (--rows)")
    if not rc.estimate_only and not rc.resume:  # from here on, --resume continues this reproduction
        write_json(out / "reproduce.json", {**rc.to_dict(), "resume": False, "estimate_only": False}, fsync=True)
    if rc.resume and not rc.estimate_only:
        log.info("resuming the reproduction in %s (its estimate was printed when it started)", out)
    else:
        lines, numbers = estimate(plans, device, rc.warmup_steps)
        log.info("%s", "\n".join(lines))
        if rc.estimate_only:
            return {"estimate": numbers}
    results = [train_row(p, out) if p.config is not None else {"row": p.row, "status": p.status,
                                                                "reason": p.reason} for p in plans]
    table = make_table(rc, results)
    write_table(out, table)
    return table


def train_row(p: RowPlan, out: Path) -> dict:
    """One row: its summary, from its finished run folder or from training (resumed when started)."""
    from ipce.engine import train

    row_dir = out / row_folder(p.row)
    done = row_dir / "summary.json"
    if done.is_file():
        log.info("%s: finished earlier, kept (%s)", p.row, done)
        return {"row": p.row, "status": "done", "summary": json.loads(done.read_text(encoding="utf-8"))}
    config = dataclasses.replace(p.config, out=str(row_dir), resume=(row_dir / "config.json").is_file())
    log.info("\n== %s: %s in %s", p.row, "resuming" if config.resume else "training", row_dir)
    try:
        return {"row": p.row, "status": "done", "summary": train.run(config)}
    except IpceError as err:  # bad images, a missing weight file: the other rows still run
        log.info("%s: failed: %s", p.row, err)
        return {"row": p.row, "status": "failed", "reason": str(err)}


# ---------------------------------------------------------------------------- table
def _stat(summary: dict, key: str) -> dict:
    s = summary["summary"].get(key) or {}
    return {"mean": s.get("mean"), "std": s.get("std"), "n": s.get("n", 0)}


def split_notes(data: dict) -> list[str]:
    """What the split files held, in a few lines: repeated splits, images on both sides, rows of the
    split files without a record in the data, and the data's duplicate warnings."""
    checks = data.get("split_files", [])
    notes = [f"split {c['split']} is the same split as split {c['same_as']}" for c in checks
             if c.get("same_as") is not None]
    grouped: dict[tuple, list[int]] = {}
    for c in checks:
        if c["overlap"]:
            named = tuple(c["examples"].get("overlap", []))
            grouped.setdefault(("overlap", c["overlap"], named), []).append(c["split"])
        if c["missing"]:
            grouped.setdefault(("missing", c["missing"], ()), []).append(c["split"])
    for (kind, count, names), splits in grouped.items():
        where = f"split{'s' if len(splits) > 1 else ''} {', '.join(map(str, splits))}"
        if kind == "overlap":
            notes.append(f"{where}: {count} held-out image(s) also in train ({', '.join(names)})")
        else:
            notes.append(f"{where}: {count} split-file row(s) name no image of the data here (missing)")
    return notes + [f"warning: {w}" for w in data.get("warnings", [])]


PROTOCOL_NOTES = {
    "paper": "protocol paper (as published): each split's epoch is chosen on the same held-out part it is "
             "reported on, which flatters the numbers",
    "holdout": "protocol holdout: each split's epoch is chosen on a validation part and reported on a test part "
               "never used for the choice (original splits: the original held-out part is the test part, the "
               "validation part is carved from the original training rows)",
}


def make_table(rc: ReproduceConfig, results: list[dict]) -> dict:
    """The table as data: per row ours (mean, std, per split), the paper's, the difference, notes."""
    from ipce.datasets.sources import dataset_info
    from ipce.presets.registry import paper_result

    rows = []
    for result in results:
        preset, target = result["row"].split(":")
        paper = paper_result(preset, target)
        row = {"row": result["row"], "dataset": dataset_info(preset).folder, "target": target,
               "status": result["status"], "protocol": rc.protocol, "splits": rc.splits,
               "paper": {"srcc": paper[0], "plcc": paper[1]} if paper else None}
        if result["status"] != "done":
            rows.append({**row, "reason": result["reason"]})
            continue
        summary = result["summary"]
        ours = {k: _stat(summary, k) for k in ("srcc", "plcc")}
        row.update(ours=ours, per_split=[{"split": s["split"], "srcc": s.get("srcc"), "plcc": s.get("plcc")}
                                         for s in summary["splits"]],
                   difference={k: ours[k]["mean"] - paper[i] for i, k in enumerate(("srcc", "plcc"))
                               if paper and ours[k]["mean"] is not None} or None,
                   notes=split_notes(summary.get("data", {})))
        rows.append(row)
    return {"protocol": rc.protocol, "splits": rc.splits, "protocol_note": PROTOCOL_NOTES[rc.protocol],
            "rows": rows}


def _cell(stat: dict | None) -> str:
    if not stat or stat.get("mean") is None or not math.isfinite(stat["mean"]):
        return "–"
    return f"{stat['mean']:.4f} ± {stat['std']:.4f}" if stat.get("n", 0) > 1 else f"{stat['mean']:.4f}"


def _number(value, signed: bool = False) -> str:
    return "–" if value is None else f"{value:+.4f}" if signed else f"{value:.4f}"


def table_markdown(table: dict) -> str:
    header = ["row", "protocol", "splits", "SRCC (ours)", "PLCC (ours)", "SRCC (paper)", "PLCC (paper)",
              "SRCC diff", "PLCC diff"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    notes, by_dataset = [], {}  # a dataset's rows share its splits: each note once, under the dataset
    for r in table["rows"]:
        paper, diff = r.get("paper") or {}, r.get("difference") or {}
        if r["status"] != "done":
            cells = [r["row"], r["protocol"], "–", r["status"], "–", _number(paper.get("srcc")),
                     _number(paper.get("plcc")), "–", "–"]
            notes.append(f"- {r['row']}: {r['status']}: {r['reason']}")
        else:
            cells = [r["row"], r["protocol"], f"{r['splits']} ({len(r['per_split'])})", _cell(r["ours"]["srcc"]),
                     _cell(r["ours"]["plcc"]), _number(paper.get("srcc")), _number(paper.get("plcc")),
                     _number(diff.get("srcc"), True), _number(diff.get("plcc"), True)]
            for note in r["notes"]:
                by_dataset.setdefault(r["dataset"], list())
                if note not in by_dataset[r["dataset"]]:
                    by_dataset[r["dataset"]].append(note)
        lines.append("| " + " | ".join(cells) + " |")
    notes += [f"- {dataset}: {note}" for dataset, found in by_dataset.items() for note in found]
    text = "# The paper's table, reproduced\n\n" + "\n".join(lines) + "\n\n"
    text += ("Ours: mean ± std over splits (sample std); diff: ours minus the paper's (Peng et al., CVPRW 2024, "
             "Table 2; AGIQA-1K is not in it). " + table["protocol_note"][0].upper() + table["protocol_note"][1:]
             + ".\n")
    return text + ("\n## Notes\n\n" + "\n".join(notes) + "\n" if notes else "")


def write_table(out: Path, table: dict) -> None:
    from ipce.utils.io import write_json, write_text
    from ipce.utils.report import plot_reproduction

    text = table_markdown(table)
    write_json(out / "table.json", table, fsync=True)
    write_text(out / "table.md", text, fsync=True)
    done = [r for r in table["rows"] if r["status"] == "done"]
    if done:
        plot_reproduction([{"label": r["row"], "srcc": [s["srcc"] for s in r["per_split"]],
                            "plcc": [s["plcc"] for s in r["per_split"]],
                            "paper": (r["paper"]["srcc"], r["paper"]["plcc"]) if r["paper"] else None}
                           for r in done], out / "table.png", title=f"ours ({table['protocol']} protocol, "
                                                                    f"{table['splits']} splits) against the paper")
    log.info("\n%s\ntable in %s, %s%s", text, out / "table.md", out / "table.json", f", {out / 'table.png'}" if done else "")
