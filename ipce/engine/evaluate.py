"""Predictions over a loader, and their metrics."""
from __future__ import annotations

import time
from typing import Callable

import torch
from tqdm.auto import tqdm

from ipce.datasets.loader import Batch
from ipce.utils.metrics import compute_metrics

ScoreFn = Callable[[Batch], torch.Tensor]


@torch.no_grad()
def predict_loader(score_fn: ScoreFn, loader, desc: str = "eval", progress: bool = True,
                   on_batch: Callable[[Batch, torch.Tensor], None] | None = None):
    """Run `score_fn` over every batch: (indices [N], scores [N, ...], errors, seconds).

    Unreadable samples (a tolerant dataset) come back in `errors` as (index, message);
    `on_batch` sees each batch with its scores (e.g. to write results as they come).
    """
    indices, scores, errors = [], [], []
    start = time.perf_counter()
    total = len(loader.dataset) if hasattr(loader, "dataset") else None
    with tqdm(total=total, desc=desc, unit="img", disable=not progress, dynamic_ncols=True, leave=False) as bar:
        for batch in loader:
            errors.extend(batch.errors)
            if len(batch):
                out = score_fn(batch).float().cpu()
                indices.append(batch.indices)
                scores.append(out)
                if on_batch is not None:
                    on_batch(batch, out)
            bar.update(len(batch) + len(batch.errors))
    if scores:
        return torch.cat(indices), torch.cat(scores), errors, time.perf_counter() - start
    return torch.empty(0, dtype=torch.long), torch.empty(0), errors, time.perf_counter() - start


def metrics_of(pred, mos) -> dict:
    """The metrics of ipce.utils.metrics for aligned predictions and scores."""
    return compute_metrics([float(p) for p in pred], [float(m) for m in mos])
