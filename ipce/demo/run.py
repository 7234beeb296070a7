"""The demo's work: the synthetic AIGC quality set (cached), a short stand-in for CLIP's web
pretraining of the tiny CLIP (ipce/demo/pretrain.py; cached), fine-tuning with the paper's
protocol on one split, and the analyses of the result: held-out images scored against their own
prompt and a mismatched one, and the metrics and per-defect effects on a second generated set.
`ipce demo` (ipce/commands/demo.py) prints and writes what `run_demo` returns.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# The demo's recipe. The tiny model is only briefly pretrained, so it takes a higher learning
# rate than fine-tuning a real CLIP (5e-6), but not much higher: at 1e-4 the fine-tuning undid
# part of the pretraining (docs/DESIGN.md, section 4). Fewer crops and resizing to at least
# 224 px (not 512) keep it quick; the global view shows each simple picture whole. The ResNet
# tower sees the quality defects the tiny ViT missed; channels-last makes its narrow
# convolutions ~30 % faster on the CPU.
FULL = {"backbone": "tiny-resnet", "n": 600, "pretrain_steps": 1000, "epochs": 3, "lr": 3e-5, "train_patches": 2, "eval_patches": 4,
        "batch_size": 16, "resize": 224, "channels_last": True}
QUICK = {"backbone": "tiny-resnet", "n": 160, "pretrain_steps": 60, "epochs": 2, "lr": 3e-5, "train_patches": 2, "eval_patches": 2,
         "batch_size": 16, "resize": 224, "channels_last": True}
FRESH = {"full": 200, "quick": 40}  # images of a second generated set (seed 1), scored at the end
PRETRAIN_VERSION = 4  # part of the cache key of the pretrained weights: bump when pretraining changes
QUICK_NOTE = ("ipce demo --quick is a smoke test of the pipeline: a few steps, so its numbers mean nothing; "
              "run `ipce demo` for the real result")


def demo_data(out_dir: Path, n: int, seed: int, workers: int, progress: bool, what: str = "synthetic AIGC images") -> Path:
    """The generated set of `n` images (seed `seed`) in `out_dir`, with a line saying whether it
    came from the cache (decided before generating) or is new; returns its annotations path."""
    from ipce.demo.synthetic import SyntheticConfig, generate, is_cached

    config = SyntheticConfig(n=n, seed=seed)
    state = "cached" if is_cached(out_dir, config) else "new"
    log.info("ipce demo: generating %d %s in %s (%s)", n, what, out_dir, state)
    return generate(out_dir, config, workers=workers, progress=progress)


def pretrained_tiny(out: Path, recipe: dict, precision: str, device: str = "cpu", progress: bool = True) -> Path:
    """The tiny CLIP after the pretraining stand-in, as a weight file (cached by its config; the device is
    part of the key only when it is not the CPU, so the CPU's cached files stay valid). `progress`: a
    bar of the pretraining steps."""
    import torch

    from ipce.demo.pretrain import PretrainConfig, pretrain
    from ipce.models.backbone import load_backbone
    from ipce.models.checkpoint import save_checkpoint
    from ipce.models.correspondence import CorrespondenceScorer

    config = PretrainConfig(steps=recipe["pretrain_steps"], seed=0)
    key = hashlib.sha256(json.dumps({**config.to_dict(), "precision": precision, "backbone": recipe["backbone"],
                                     "channels_last": recipe["channels_last"], "version": PRETRAIN_VERSION,
                                     **({"device": device.split(":")[0]} if device != "cpu" else {})},
                                    sort_keys=True).encode())
    path = out / "pretrained" / f"{recipe['backbone']}-{key.hexdigest()[:12]}.safetensors"
    if path.is_file():
        log.info("ipce demo: pretrained tiny CLIP in %s (cached)", path)
        return path
    log.info("ipce demo: pretraining the tiny CLIP for %d steps on rendered captioned pictures (new)", config.steps)
    torch.manual_seed(config.seed)
    clip, model_config, _ = load_backbone(recipe["backbone"])
    model = CorrespondenceScorer(clip)
    history = pretrain(model, config, precision, device=device, channels_last=recipe["channels_last"],
                       progress=progress)
    save_checkpoint(path, model, {"model_config": model_config, "backbone": recipe["backbone"],
                                  "pretrain": config.to_dict(), "history": history})
    return path


def demo_config(out: Path, recipe: dict, annotations: Path, weights: Path, workers: int, precision: str,
                device: str = "cpu", progress: bool = True):
    from ipce.config import make_config

    return make_config(
        None, annotations=str(annotations), images=str(annotations.parent / "images"),
        backbone=recipe["backbone"], weights=str(weights), epochs=recipe["epochs"], lr=recipe["lr"], batch_size=recipe["batch_size"],
        train_patches=recipe["train_patches"], eval_patches=recipe["eval_patches"], resize=recipe["resize"],
        precision=precision, channels_last=recipe["channels_last"], workers=workers, splits=[1], out=str(out / "run"), seed=0,
        device=device, progress=progress,
    )


def pair_table(scorer, run_dir: Path, annotations: Path, seed: int = 0) -> tuple[float, dict, list[dict]]:
    """Held-out images scored against their own prompt and a mismatched one, which differs in
    one attribute drawn as the dataset's misalignments are (colour, shape, count, background).
    Returns the pair accuracy, the accuracy per altered attribute, and the rows."""
    from ipce.demo.synthetic import MISALIGN_KINDS, mismatched_prompt

    with annotations.open(encoding="utf-8", newline="") as f:
        by_name = {row["image"]: row for row in csv.DictReader(f)}
    with (run_dir / "split1" / "val_predictions.csv").open(encoding="utf-8", newline="") as f:
        held_out = [by_name[row["image"]] for row in csv.DictReader(f)]
    rng = np.random.default_rng(seed)
    kinds = [MISALIGN_KINDS[i] for i in rng.integers(len(MISALIGN_KINDS), size=len(held_out))]
    wrong = [mismatched_prompt({**row, "count": int(row["count"])}, rng, (kind,)) for row, kind in zip(held_out, kinds)]
    paths = [annotations.parent / "images" / row["image"] for row in held_out]
    own = scorer.score(paths, [row["prompt"] for row in held_out])
    other = scorer.score(paths, wrong)
    rows = [{"image": row["image"], "prompt": row["prompt"], "defects": row["defects"], "mos": float(row["mos"]),
             "own": a, "wrong_prompt": w, "altered": kind, "wrong": b}
            for row, w, kind, a, b in zip(held_out, wrong, kinds, own, other)]
    # Only where the image really shows its prompt is "own above mismatched" the right answer.
    aligned = [r for r in rows if "wrong_" not in r["defects"]] or rows
    accuracy = float(np.mean([r["own"] > r["wrong"] for r in aligned]))
    per_kind = {kind: float(np.mean([r["own"] > r["wrong"] for r in aligned if r["altered"] == kind]))
                for kind in MISALIGN_KINDS if any(r["altered"] == kind for r in aligned)}
    return accuracy, per_kind, rows


def fresh_metrics(scorer, out: Path, n: int, workers: int, progress: bool = False) -> dict:
    """SRCC/PLCC of `scorer` (the best checkpoint) on `n` images of a set generated with another seed,
    and what each defect costs there (`defect_effects`). The held-out part also chose the best
    epoch, which flatters it (docs/DESIGN.md, section 4); these images played no part in
    training or in choosing. `progress`: bars for generating and scoring them."""
    from ipce.utils.metrics import compute_metrics
    from ipce.utils.progress import progress_bar

    annotations = demo_data(out / f"data-fresh-{n}", n, 1, workers, progress, "fresh images of a second set")
    with annotations.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    paths = [annotations.parent / "images" / row["image"] for row in rows]
    prompts = [row["prompt"] for row in rows]
    # scored in the scorer's own batches, so the bar changes nothing in what is computed
    step, scores = scorer.batch_size, []
    with progress_bar(total=len(rows), desc="scoring fresh images", unit="img", enabled=progress) as bar:
        for start in range(0, len(rows), step):
            scores += [float(x) for x in scorer.score(paths[start:start + step], prompts[start:start + step])]
            bar.update(len(paths[start:start + step]))
    mos = [float(row["mos"]) for row in rows]
    metrics = compute_metrics(scores, mos)
    return {"fresh_srcc": metrics["srcc"], "fresh_plcc": metrics["plcc"], "fresh_images": n,
            "fresh_effects": defect_effects([row["defects"] for row in rows], mos, scores)}


def defect_effects(defects: list[str], mos: list[float], scores: list[float]) -> dict:
    """What each defect kind does to the MOS and to the model's score: least squares over all
    images of value ~ constant + one 0/1 term per kind present (an image may have two), so a
    kind the model does not see has a score effect near 0 beside the MOS's (~-1.75 for a
    misalignment).
    Returns {kind: {"images", "mos", "score"}} for every kind, None where no image has it."""
    from ipce.demo.synthetic import MISALIGN_KINDS, QUALITY_KINDS

    kinds = [f"wrong_{kind}" for kind in MISALIGN_KINDS] + list(QUALITY_KINDS)
    named = [{item.split(":")[0] for item in d.split(";")} for d in defects]  # "blur:0.62;wrong_count:3"
    has = np.array([[kind in names for kind in kinds] for names in named], float)
    present = [j for j in range(len(kinds)) if has[:, j].any()]
    design = np.column_stack([np.ones(len(defects)), has[:, present]])
    fits = {name: np.linalg.lstsq(design, np.asarray(values, float), rcond=None)[0][1:]
            for name, values in (("mos", mos), ("score", scores))}
    effects = {kind: {"images": int(has[:, j].sum()), "mos": None, "score": None} for j, kind in enumerate(kinds)}
    for column, j in enumerate(present):
        effects[kinds[j]].update(mos=float(fits["mos"][column]), score=float(fits["score"][column]))
    return effects


def demo_pictures(scorer, out: Path, seed: int = 0) -> dict:
    """The two pictures of the README, from `scorer` (the demo's model) on freshly drawn pictures:
    a quality map (`ipce explain`'s) of a picture of three stars whose left half is blurred, and a
    contact sheet (`ipce rank --sheet`'s) of three prompts, each with five candidates: clean,
    blurred, noisy, low-contrast, and one drawn with another colour than its prompt says.
    Returns {"quality_map": png, "contact_sheet": png, "map_image": the mapped picture, "map_prompt": its prompt}."""
    from ipce.datasets.sources import Record, generator_of
    from ipce.demo.synthetic import alter_attrs, degrade, make_prompt, prompt_text, render
    from ipce.engine.rank import rank_records, ranking_sheet
    from ipce.utils.io import atomic_file, write_csv
    from ipce.utils.maps import render_quality_map

    rng = np.random.default_rng(seed)
    folder = out / "pictures"
    candidates = folder / "candidates"
    candidates.mkdir(parents=True, exist_ok=True)
    records = []
    for p in range(3):
        prompt, attrs = make_prompt(rng)
        clean = render(attrs, (400, 360), rng)
        versions = {"clean": clean, "wrong-colour": render(alter_attrs(attrs, "colour", rng), (400, 360), rng)}
        for kind in ("blur", "noise", "contrast"):
            versions[kind] = degrade(clean, kind, 0.6, rng)[0]
        for kind, image in versions.items():
            path = candidates / f"p{p}_{kind}.png"
            image.save(path)
            records.append(Record(image=path.resolve(), prompt=prompt, target=None, name=path.name,
                                  generator=generator_of(path.name)))
    rows, _ = rank_records(scorer, records, progress=False)
    sheet = out / "contact_sheet.png"
    ranking_sheet(rows, sheet)
    write_csv(folder / "ranked.csv", ["image", "prompt", "score", "rank"],
              [[r.record.name, r.record.prompt, f"{r.score:.7f}", r.rank] for r in rows])

    attrs = {"count": 3, "colour": "yellow", "shape": "star", "background": "blue"}
    prompt = prompt_text(attrs)
    picture = render(attrs, (640, 360), rng)
    half = picture.crop((0, 0, 320, 360))
    picture.paste(degrade(half, "blur", 0.9, rng)[0], (0, 0))
    picture.save(folder / "half_blurred.png")
    qmap = scorer.explain(folder / "half_blurred.png", prompt)
    write_csv(folder / "half_blurred.csv", ["x", "y", "size", "score"], qmap.rows())
    quality_map = out / "quality_map.png"
    with atomic_file(quality_map) as tmp:
        render_quality_map(picture, qmap).save(tmp, format="PNG")
    return {"quality_map": str(quality_map), "contact_sheet": str(sheet),
            "map_image": str(folder / "half_blurred.png"), "map_prompt": prompt}


@dataclass
class DemoResult:
    summary: dict       # what summary.json holds: metrics, pair accuracy, the fresh set's figures, timing, run folder
    pairs: list[dict]   # the held-out images scored against their own and a mismatched prompt (`pair_table`)


def run_demo(out: str | Path = "demo-out", quick: bool = False, workers: int = 2, precision: str = "bf16",
             device: str = "auto", progress: bool = True) -> DemoResult:
    """Generate, pretrain, fine-tune on split 1 and analyse the best checkpoint, under `out`, on `device`
    (auto: cuda when available, else cpu); `progress=False`: no progress bars."""
    import torch

    from ipce.api import load_scorer
    from ipce.engine.train import run

    from ipce.utils.device import resolve_device

    started = time.perf_counter()
    device = resolve_device(device)
    out = Path(out)
    recipe = QUICK if quick else FULL
    if quick:
        log.info("%s", QUICK_NOTE)
    torch.manual_seed(0)
    annotations = demo_data(out / ("data-quick" if quick else "data"), recipe["n"], 0, workers, progress)
    weights = pretrained_tiny(out, recipe, precision, device, progress)
    config = demo_config(out, recipe, annotations, weights, workers, precision, device, progress)
    summary = run(config)
    run_dir = Path(config.out)
    best = summary["splits"][0]
    scorer = load_scorer(run_dir / "split1" / "best.safetensors", device=device,
                         channels_last=recipe["channels_last"])
    accuracy, per_kind, rows = pair_table(scorer, run_dir, annotations)
    fresh = fresh_metrics(scorer, out, FRESH["quick" if quick else "full"], workers, progress)
    pictures = demo_pictures(scorer, out)
    seconds = time.perf_counter() - started
    result = {"srcc": best["srcc"], "plcc": best["plcc"], "krcc": best["krcc"], "rmse": best["rmse"],
              "pair_accuracy": accuracy, "pair_accuracy_by_altered": per_kind, **fresh,
              "seconds": seconds, "best_epoch": best["epoch"], "quick": quick,
              "images": recipe["n"], "held_out": len(rows), "run": str(run_dir), **pictures}
    return DemoResult(result, rows)
