"""Scoring many records with a scorer: the records of an image folder, and the batched loop over
loaders (one per distinct view config of the scorer's models) that skips unreadable images."""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from ipce.errors import DataError, IpceError

FOLDER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def folder_records(folder: str | Path, prompt: str):
    """One record per image file directly in `folder` (sorted by name), all with `prompt`."""
    from ipce.datasets.sources import Record, generator_of

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: images folder not found; check --images", kind="missing-file", path=folder)
    if not prompt.strip():
        raise IpceError("--prompt: the prompt is empty")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in FOLDER_SUFFIXES and not p.is_dir())
    if not files:
        raise IpceError(f"{folder}: no image files ({', '.join(s[1:] for s in FOLDER_SUFFIXES)}) in --images")
    return [Record(image=Path(os.path.abspath(p)), prompt=prompt, target=None, name=p.name,
                   generator=generator_of(p.name)) for p in files]


def unlisted_images(folder: str | Path, records) -> list[Path]:
    """The image files directly in `folder` that no record names (a prompts file that misses some)."""
    listed = {os.path.normcase(str(r.image)) for r in records}
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in FOLDER_SUFFIXES and not p.is_dir())
    return [p for p in files if os.path.normcase(os.path.abspath(p)) not in listed]


def check_generators(scorer, records) -> None:
    """Refuse records without a generator when a model of `scorer` prefixes the prompt with it."""
    if not any(m.prompt_prefix == "generator" for m in scorer.members):
        return
    for record in records:
        if not record.generator:
            where = f"{record.source}, row {record.row}: " if record.source else ""
            raise IpceError(f"{where}{record.name}: --prompt-prefix generator needs the generator in the file name "
                            "(the part before the first '_', e.g. DALLE3_0001.png)")


@dataclass
class Prediction:
    records: list               # every record asked for, in order
    indices: list[int]          # positions of the scored records, ascending
    scores: list[float]         # combined score of each scored record
    per_model: list[list[float]]  # [M][len(indices)]
    errors: list[tuple[int, str]]  # (record position, one-line problem) of unreadable images
    seconds: float

    def scored_targets(self) -> tuple[list[float], list[float]]:
        """(scores, targets) of the scored records that carry a target, in record order."""
        pairs = [(s, self.records[i].target) for i, s in zip(self.indices, self.scores)
                 if self.records[i].target is not None]
        return [s for s, _ in pairs], [t for _, t in pairs]


class _AlignedLoaders:
    """Iterates loaders over the same records in the same order (one per view config) and
    hands back a copy of the first loader's batch with `views = {config: (crops, global_view)}`."""

    def __init__(self, loaders, configs):
        self.loaders, self.configs = loaders, configs
        self.dataset = loaders[0].dataset

    def __len__(self) -> int:
        return len(self.loaders[0])

    def __iter__(self):
        for batches in zip(*self.loaders):
            yield replace(batches[0], views={cfg: (b.crops, b.global_view) for cfg, b in zip(self.configs, batches)})


def predict_records(scorer, records, batch_size: int = 16, workers: int = 2, progress: bool = True) -> Prediction:
    """Score `records` with `scorer` (one loader per distinct view config); unreadable images are skipped."""
    import torch

    from ipce.datasets.loader import ViewDataset, make_loader
    from ipce.engine.evaluate import predict_loader

    records = list(records)
    configs = scorer.view_configs
    loaders = [make_loader(ViewDataset(records, cfg, tolerant=True), batch_size, shuffle=False, workers=workers,
                           device=scorer.device) for cfg in configs]

    def score_fn(batch) -> torch.Tensor:
        chunk = [records[i] for i in batch.indices.tolist()]
        combined, per_model = scorer.score_views(batch.views, [r.prompt for r in chunk],
                                                 [r.generator for r in chunk])
        return torch.cat([combined[:, None], per_model.T], dim=1)

    for member in scorer.members:
        member.model.eval()  # text features are cached per prompt in eval mode
    indices, out, errors, seconds = predict_loader(score_fn, _AlignedLoaders(loaders, configs), desc="predict",
                                                   progress=progress)
    order = indices.argsort()
    indices, out = indices[order], out[order]
    per_model = out[:, 1:].T.tolist() if len(out) else [[] for _ in scorer.members]
    return Prediction(records, indices.tolist(), out[:, 0].tolist() if len(out) else [], per_model,
                      sorted(errors), seconds)
