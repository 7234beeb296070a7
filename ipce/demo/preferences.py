"""The demo on human choices (`ipce demo --preferences`): preference pairs drawn from the demo's
synthetic set, a preference model trained on them, its held-out pairwise accuracy.

Pairs: every two images of the set that share a prompt. A simulated rater sees each image's MOS
plus Normal(0, RATER_SD) and prefers the higher; when the two noisy values lie within TIE_MARGIN
the pair is a tie. The pairs are written as a pair table in Pick-a-Pic's naming (`caption`,
`image_0`, `image_1`, `label_0`), the form `ipce train --preferences` reads, and the tiny CLIP
(pretrained as in `ipce demo`) is trained on them with the holdout protocol: the epoch is chosen on
the validation pairs and the accuracy reported on test pairs of prompts it never saw.
"""
from __future__ import annotations

import csv
import itertools
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

RATER_SD = 0.5     # the rater's noise on the MOS scale (0..5)
TIE_MARGIN = 0.1   # noisy values closer than this: a tie


@dataclass
class PairTable:
    path: Path
    pairs: int
    ties: int
    agree: float  # the share of untied pairs whose label follows the MOS order: the ceiling a model can reach


def draw_pairs(annotations: Path, path: Path, seed: int = 0) -> PairTable:
    """Every two images of one prompt in the demo's `annotations`, labelled by a noisy rater (module
    doc), written to `path` as a Pick-a-Pic-style CSV."""
    from ipce.utils.io import write_csv

    with annotations.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    by_prompt: dict[str, list[dict]] = {}
    for row in rows:
        by_prompt.setdefault(row["prompt"], []).append(row)
    rng = np.random.default_rng(seed)
    table, agree = [], []
    for prompt, members in by_prompt.items():
        for a, b in itertools.combinations(members, 2):
            seen = np.array([float(a["mos"]), float(b["mos"])]) + rng.normal(0, RATER_SD, 2)
            label = 0.5 if abs(seen[0] - seen[1]) < TIE_MARGIN else float(seen[0] > seen[1])
            table.append([prompt, a["image"], b["image"], label])
            if label != 0.5 and a["mos"] != b["mos"]:
                agree.append(label == float(float(a["mos"]) > float(b["mos"])))
    write_csv(path, ["caption", "image_0", "image_1", "label_0"], table)
    return PairTable(path, len(table), sum(row[3] == 0.5 for row in table), float(np.mean(agree)))


def preference_config(out: Path, recipe: dict, pairs: Path, images: Path, weights: Path, workers: int,
                      precision: str, device: str, progress: bool):
    from ipce.config import make_config

    return make_config(
        None, preferences=str(pairs), images=str(images), backbone=recipe["backbone"], weights=str(weights),
        epochs=recipe["epochs"], lr=recipe["lr"], batch_size=recipe["batch_size"],
        train_patches=recipe["train_patches"], eval_patches=recipe["eval_patches"], resize=recipe["resize"],
        precision=precision, channels_last=recipe["channels_last"], workers=workers, splits=[1],
        protocol="holdout", out=str(out / "preference-run"), seed=0, device=device, progress=progress)


def run_preference_demo(out: str | Path = "demo-out", quick: bool = False, workers: int = 2,
                        precision: str = "bf16", device: str = "auto", progress: bool = True) -> dict:
    """Generate (or reuse) the demo's set and pretrained tiny CLIP, draw the pairs, train on them and
    return what the run reports: test pairwise accuracy and its counts, the raters' ceiling, timing."""
    import torch

    from ipce.demo.run import FULL, QUICK, QUICK_NOTE, demo_data, pretrained_tiny
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
    table = draw_pairs(annotations, out / "preferences" / "pairs.csv")
    log.info("ipce demo: %d pairs of images of one prompt (%d ties) in %s; the noisy rater follows the MOS order on "
             "%.0f%% of the untied ones", table.pairs, table.ties, table.path, 100 * table.agree)
    config = preference_config(out, recipe, table.path, annotations.parent / "images", weights, workers, precision,
                               device, progress)
    summary = run(config)
    test = summary["splits"][0]
    return {"pair_accuracy": test["pair_accuracy"], "pair_accuracy_ties": test["pair_accuracy_ties"],
            "kendall_tau": test["kendall_tau"], "test_pairs": test["pairs"], "test_tied_pairs": test["tied_pairs"],
            "rater_agreement": table.agree, "pairs": table.pairs, "ties": table.ties, "best_epoch": test["epoch"],
            "seconds": time.perf_counter() - started, "quick": quick, "run": config.out}
