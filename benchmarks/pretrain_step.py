"""Time one step of the demo's pretraining (ipce/demo/pretrain.py) on the CPU, per layout.

    python benchmarks/pretrain_step.py [--steps 40] [--threads 2]

Rows: the tiny ResNet tower channels-first; channels-last with every batch norm channels-last;
channels-last as shipped (`use_channels_last`: batch norms of at most NARROW_BATCH_NORM
channels run channels-first). Each row: a fresh model (seed 0), the demo's batch of 32
pictures, bf16 autocast, AdamW; a few untimed warm-up steps, then the mean of `--steps`.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ipce.demo.pretrain import PretrainConfig, pretrain_optimizer, pretrain_step, render_pool
from ipce.models import speed
from ipce.models.backbone import load_backbone
from ipce.models.correspondence import CorrespondenceScorer


def step_seconds(layout: str, pool, attrs, steps: int, warm: int = 5) -> float:
    torch.manual_seed(0)
    model = CorrespondenceScorer(load_backbone("tiny-resnet")[0]).train()
    if layout != "channels-first":
        narrow = 0 if layout == "channels-last, batch norms too" else speed.NARROW_BATCH_NORM
        speed.use_channels_last(model, narrow_batch_norm=narrow)
    config, rng, device = PretrainConfig(), np.random.default_rng(0), torch.device("cpu")
    optimizer = pretrain_optimizer(model, config)
    for i in range(warm + steps):
        if i == warm:
            started = time.perf_counter()
        pretrain_step(model, optimizer, pool, attrs, rng, config, "bf16", device)
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="timed steps per row")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pool, attrs = render_pool(256, 224, np.random.default_rng(0))
    print(f"demo pretraining step, batch 32, bf16, {args.threads} threads, mean of {args.steps} steps")
    for layout in ("channels-first", "channels-last, batch norms too", "channels-last (shipped)"):
        print(f"{layout:32s} {step_seconds(layout, pool, attrs, args.steps) * 1000:6.1f} ms")


if __name__ == "__main__":
    main()
