"""Training on human choices: the data of a preference run, its splits, batches and loss.

A preference file's groups (ipce.datasets.preferences) become the distinct images they hold (one
`Record` each, scored once per batch) and, per group, those images' indices. Splits draw whole
prompts (every group of a prompt on one side). A training batch holds whole groups, up to
`--batch-size` images (a larger group is a batch of its own), and its loss is the Bradley-Terry
negative log-likelihood of every pair in it:

    loss = mean over pairs (i, j) of  -[y log sigmoid(s_i - s_j) + (1 - y) log sigmoid(s_j - s_i)]

with the scores `s` on the model's 0..5 and `y` = 1 when i was preferred, 0 when j was, 1/2 for a
tie. Ties are learned as 1/2 (the loss is least at equal scores) rather than left out: a tie says
two images are equally good, and pulling their scores together keeps the scale from stretching;
ImageRewardDB holds one tied pair for every 7.7 ordered ones.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ipce.datasets.preferences import PreferenceGroup, count_preferences, group_records

TIES = "learned as 1/2"
log = logging.getLogger(__name__)


@dataclass
class PreferenceData:
    """Groups of one split side with the distinct images they hold (`records`) and each group's
    indices into them (`members`)."""
    groups: list[PreferenceGroup]
    records: list
    members: list[list[int]]

    @classmethod
    def of(cls, groups) -> "PreferenceData":
        groups = list(groups)
        records, members = group_records(groups)
        return cls(groups, records, members)

    def describe(self) -> dict:
        counts = count_preferences(self.groups)
        return {"groups": counts.groups, "prompts": counts.prompts, "images": counts.images,
                "pairs": counts.pairs, "tied_pairs": counts.tied_pairs}


def split_groups(groups, config) -> dict[int, object]:
    """{number: Split of group indices}: the run's protocol and seed, every prompt's groups on one side."""
    from ipce.datasets.splits import holdout_splits, random_splits

    if config.protocol == "holdout":
        drawn = holdout_splits(groups, config.n_splits, tuple(config.holdout_ratios), config.seed, "prompt")
    else:
        drawn = random_splits(groups, config.n_splits, config.ratio, config.seed, "prompt")
    return dict(enumerate(drawn, start=1))


@dataclass(frozen=True)
class GroupBatch:
    """One training batch: the dataset positions of its images, and its pairs (i, j, y) as positions
    into that list (y: 1 when i was preferred, 0 when j was, 0.5 a tie)."""
    images: list[int]
    pairs: list[tuple[int, int, float]]


def group_batches(data: PreferenceData, batch_size: int, seed: int) -> list[GroupBatch]:
    """The groups in a seeded order packed into batches of at most `batch_size` images (a group of more
    images is a batch alone); an image in two groups of one batch is loaded once."""
    order = list(range(len(data.groups)))
    random.Random(seed).shuffle(order)
    batches, images, pairs, where = [], [], [], {}

    def close():
        if images:
            batches.append(GroupBatch(list(images), list(pairs)))
        images.clear(), pairs.clear(), where.clear()

    for g in order:
        members = data.members[g]
        new = len(set(members) - set(where))
        if images and len(images) + new > batch_size:
            close()
        for index in members:
            if index not in where:
                where[index] = len(images)
                images.append(index)
        pairs.extend((where[members[i]], where[members[j]], y) for i, j, y in data.groups[g].pairs())
    close()
    return batches


def bradley_terry_loss(scores: torch.Tensor, pairs: list[tuple[int, int, float]]) -> torch.Tensor:
    """Mean Bradley-Terry negative log-likelihood of `pairs` (positions into `scores`, model scale)."""
    i = torch.tensor([p[0] for p in pairs], device=scores.device)
    j = torch.tensor([p[1] for p in pairs], device=scores.device)
    y = torch.tensor([p[2] for p in pairs], device=scores.device, dtype=torch.float32)
    scores = scores.float()
    return F.binary_cross_entropy_with_logits(scores[i] - scores[j], y)


def positions_in(batch_indices: torch.Tensor, images: list[int]) -> list[int]:
    """Where each of a GroupBatch's `images` (dataset positions) sits in a loaded batch (`Batch.indices`)."""
    row = {int(index): k for k, index in enumerate(batch_indices.tolist())}
    return [row[index] for index in images]


# ----------------------------------------------------------------------------- a run's preference data

def load_for_training(config, workers: int, progress: bool) -> list[PreferenceGroup]:
    """The run's preference groups, every entry and image checked before the first step: any problem
    stops the run (one error listing them) unless --skip-bad, which leaves them out and says how much."""
    from ipce.datasets.preferences import PairColumns, check_preference_images, drop_images, load_preferences
    from ipce.errors import DataError, IpceError

    if not config.images:
        raise IpceError("--images: required with --preferences (the folder the image names are relative to)")
    columns = PairColumns(config.caption_col, config.image0_col, config.image1_col, config.label_col)
    found = load_preferences(config.preferences, config.images, config.preference_form, columns)
    for warning in found.warnings:
        log.warning("%s", warning.message)
    bad, image_problems, _ = check_preference_images(found, workers=workers, progress=progress)
    problems = [*found.problems, *image_problems]
    if problems and not config.skip_bad:
        lines = [p.message for p in problems[:20]]
        more = len(problems) - len(lines)
        raise DataError(f"{len(problems)} problems in {config.preferences}; fix them or pass --skip-bad to leave "
                        "them out:", details=lines + ([f"... and {more} more"] if more > 0 else []))
    groups, dropped = drop_images(found.groups, bad)
    read, kept = count_preferences(found.groups), count_preferences(groups)
    if problems:
        log.warning("--skip-bad: left out %d of %d entries, %d unreadable images, %d ordered and %d tied pairs, "
                    "%d groups left with one image", len(found.problems), found.rows, len(bad),
                    read.pairs - kept.pairs, read.tied_pairs - kept.tied_pairs, dropped)
    if not groups:
        raise DataError(f"{config.preferences}: no usable group of two or more images")
    log.info("preferences: %s", kept.line())
    return groups


def preference_metrics_of_scores(data: PreferenceData, order, pred) -> dict:
    """Preference metrics of `data`'s groups from scores `pred` of its records at positions `order`."""
    from ipce.engine.evaluate import preference_metrics_of

    found = preference_metrics_of(data.groups, data.members, dict(zip(order, pred)))
    return {k: found[k] for k in ("pair_accuracy", "pair_accuracy_ties", "kendall_tau", "pairs", "tied_pairs")}


def write_groups(path, data: PreferenceData) -> None:
    """The groups as ImageRewardDB's JSON (names as in the file read): a split side `ipce predict
    --preferences` and `ipce check-data --preferences` read back."""
    import json

    from ipce.utils.io import write_text

    entries = [{"id": g.key or f"row-{g.row}", "prompt": g.prompt, "generations": list(g.names),
                "ranking": [int(r) if float(r).is_integer() else r for r in g.ranks]} for g in data.groups]
    write_text(path, json.dumps(entries, indent=1, ensure_ascii=False) + "\n")


def choice_value(record: dict) -> float:
    """The number the best epoch is chosen by: (SRCC + PLCC) / 2 with MOS data alone, the pairwise
    accuracy with preferences alone, and with both their mean with the accuracy as 2 * acc - 1 (a
    correlation-like -1..1: 0 at chance, as SRCC). -inf when the record has neither (no epoch yet)."""
    import math

    mos, acc = record.get("srcc_plcc_mean"), record.get("pair_accuracy")
    values = [v for v in (mos, None if acc is None else 2 * acc - 1) if v is not None]
    if not values or any(isinstance(v, float) and math.isnan(v) for v in values):
        return -math.inf if not values else math.nan
    if acc is not None and mos is None:
        return acc
    return sum(values) / len(values)
