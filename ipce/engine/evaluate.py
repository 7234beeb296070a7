"""Predictions over a loader, and their metrics."""
from __future__ import annotations

import time
from typing import Callable

import torch

from ipce.datasets.loader import Batch
from ipce.utils.progress import progress_bar

ScoreFn = Callable[[Batch], torch.Tensor]


@torch.no_grad()
def predict_loader(score_fn: ScoreFn, loader, desc: str = "eval", progress: bool = True,
                   on_batch: Callable[[Batch, torch.Tensor], None] | None = None, keep: bool = True,
                   bar=None):
    """Run `score_fn` over every batch: (indices [N], scores [N, ...], errors, seconds).

    Unreadable samples (a tolerant dataset) come back in `errors` as (index, message);
    `on_batch` sees every batch with its scores (none when no sample of it could be read), e.g.
    to write results as they come; with `keep=False` nothing is kept (empty indices, scores and
    errors: memory does not grow with the loader). `bar`: an open progress bar to advance by each
    batch's sample count, instead of one made here over the loader's dataset.
    """
    indices, scores, errors = [], [], []
    start = time.perf_counter()
    total = len(loader.dataset) if hasattr(loader, "dataset") else None
    own = bar is None
    if own:
        bar = progress_bar(total=total, desc=desc, unit="img", enabled=progress, leave=False)
    try:
        for batch in loader:
            out = score_fn(batch).float().cpu() if len(batch) else torch.empty(0)
            if keep:
                errors.extend(batch.errors)
                if len(batch):
                    indices.append(batch.indices)
                    scores.append(out)
            if on_batch is not None:
                on_batch(batch, out)
            bar.update(len(batch) + len(batch.errors))
    finally:
        if own:
            bar.close()
    if scores:
        return torch.cat(indices), torch.cat(scores), errors, time.perf_counter() - start
    return torch.empty(0, dtype=torch.long), torch.empty(0), errors, time.perf_counter() - start


def metrics_of(pred, mos) -> dict:
    """The metrics of ipce.utils.metrics for aligned predictions and scores."""
    from ipce.utils.metrics import compute_metrics  # here: scipy, which scoring alone does not need

    return compute_metrics([float(p) for p in pred], [float(m) for m in mos])


def preference_metrics_of(groups, members, scores: dict[int, float]) -> dict:
    """ipce.utils.metrics.preference_metrics of `groups` (PreferenceGroup) whose images are the records
    `members[g]` scored `scores[record index]`; images without a score (unreadable) are left out of
    their group, a group left with one image entirely: `left_out_pairs`, `left_out_tied_pairs` and
    `left_out_groups` count them."""
    from ipce.utils.metrics import preference_metrics

    group_scores, group_ranks, whole = [], [], 0
    for group, indices in zip(groups, members):
        keep = [k for k, index in enumerate(indices) if index in scores]
        whole += len(keep) < 2
        if len(keep) >= 2:
            group_scores.append([scores[indices[k]] for k in keep])
            group_ranks.append([group.ranks[k] for k in keep])
    found = preference_metrics(group_scores, group_ranks)
    outcomes = [o for g in groups for _, _, o in g.pairs()]
    tied = sum(o == 0.5 for o in outcomes)
    return {**found, "left_out_pairs": len(outcomes) - tied - found["pairs"],
            "left_out_tied_pairs": tied - found["tied_pairs"], "left_out_groups": whole}
