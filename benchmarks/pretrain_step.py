"""Time one step of the demo's pretraining (ipce/engine/pretrain.py) on the CPU, per layout.

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

from ipce.api import autocast
from ipce.engine.pretrain import PretrainConfig, draw_batch, plain_attention, pretrain_loss, render_pool
from ipce.models.backbone import load_backbone
from ipce.models.correspondence import CorrespondenceScorer
from ipce.utils import speed


def step_seconds(layout: str, pool, attrs, steps: int, warm: int = 5) -> float:
    torch.manual_seed(0)
    model = CorrespondenceScorer(load_backbone("tiny-resnet")[0]).train()
    narrow = speed.NARROW_BATCH_NORM
    if layout == "channels-last, batch norms too":
        speed.NARROW_BATCH_NORM = 0
    try:
        if layout != "channels-first":
            speed.use_channels_last(model)
    finally:
        speed.NARROW_BATCH_NORM = narrow
    model.clip.token_embedding.weight.requires_grad_(False)  # as pretrain() does
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    config, rng, device = PretrainConfig(), np.random.default_rng(0), torch.device("cpu")
    memory_format = torch.channels_last if model.channels_last else torch.contiguous_format
    for i in range(warm + steps):
        if i == warm:
            started = time.perf_counter()
        batch = draw_batch(pool, attrs, config.batch, rng, config.quality_captions, config.group)
        batch.pictures = batch.pictures.contiguous(memory_format=memory_format)
        with autocast(device, "bf16"), plain_attention(device):
            loss, _ = pretrain_loss(model, batch, config.swap_clean_only, config.look_loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
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
