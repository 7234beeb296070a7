"""Scoring many records with a scorer: the records of an image folder, the plan of a resumable run,
and the batched loop over loaders (one per distinct view config of the scorer's models) that
streams each block's rows to a part file and skips unreadable images (ipce.engine.parts)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from ipce.datasets.sources import IMAGE_EXTENSIONS
from ipce.errors import DataError, IpceError


def folder_records(folder: str | Path, prompt: str):
    """One record per image file directly in `folder` (sorted by name), all with `prompt`."""
    from ipce.datasets.sources import Record, generator_of

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: images folder not found; check --images", kind="missing-file", path=folder)
    if not prompt.strip():
        raise IpceError("--prompt: the prompt is empty")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.is_dir())
    if not files:
        raise IpceError(f"{folder}: no image files ({', '.join(s[1:] for s in IMAGE_EXTENSIONS)}) in --images")
    return [Record(image=Path(os.path.abspath(p)), prompt=prompt, target=None, name=p.name,
                   generator=generator_of(p.name)) for p in files]


def unlisted_images(folder: str | Path, records) -> list[Path]:
    """The image files directly in `folder` that no record names (a prompts file that misses some)."""
    listed = {os.path.normcase(str(r.image)) for r in records}
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.is_dir())
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


@dataclass
class Plan:
    """What a run has to do, decided once (by rank 0) from the output's sidecar and part files."""
    attempt: int = 0                 # the number of this run's part files
    blocks: list[int] = field(default_factory=list)  # the blocks left to score, all ranks together
    already: int = 0                 # records that had their row before this run (--resume)
    cleared: bool = False            # a run without --resume removed an earlier run's part files
    complete: dict | None = None     # --resume into a finished output: its sidecar (nothing to do)
    stale: str | None = None         # --resume into an output marked complete that is missing or changed
    error: str | None = None         # a one-line refusal, raised on every rank


def plan_run(store, settings: dict, records: int, batch_size: int, resume: bool) -> Plan:
    """Read (or, without --resume, reset) the output's state and write this run's settings."""
    from ipce.engine.parts import Resumed, blocks_left, differing_setting

    saved = store.read_settings() if resume else None
    stale = None
    if saved is not None:
        differs = differing_setting(saved.get("settings", {}), settings)
        if differs:
            return Plan(error=f"--resume into {store.out}: {differs}; pass the settings it was made with, or "
                              "rerun without --resume to start over")
        if saved.get("complete") and not store.files():
            stale = _changed_output(store.out, saved)
            if stale is None:
                return Plan(complete=saved)
        found = store.scan(records)
        cleared = False
    else:
        cleared = store.clear()
        found = Resumed(attempt=0, done=bytearray(records), already=0)
    store.write_settings(settings, complete=False)
    return Plan(attempt=found.attempt, blocks=blocks_left(found.done, batch_size), already=found.already,
                cleared=cleared, stale=stale)


def _changed_output(out: Path, saved: dict) -> str | None:
    """Why a finished output cannot be taken as done (missing, or not the size it was written
    with), or None when it can."""
    if not out.is_file():
        return f"{out} is missing although {out.name}.ipce.json says complete: scoring every image again"
    size = out.stat().st_size
    if saved.get("out_bytes") != size:
        return (f"{out} holds {size} bytes, not the {saved.get('out_bytes', 'unknown')} it was written with: "
                "scoring every image again")
    return None


def rank_share(blocks: list[int], rank: int, world: int) -> list[int]:
    """The blocks rank `rank` of `world` scores: every world-th, dealt from the highest rank down, so
    that where the count does not divide rank 0 (which also merges the output at the end) has one
    block fewer than the others. The shares differ by one block at most and together are `blocks`."""
    return blocks[world - 1 - rank::world]


class RankBar:
    """Rank 0's progress bar standing for all ranks: each image it scores counts `world` times (an
    estimate: the ranks' shares differ by one block at most), never past the total."""

    def __init__(self, bar, world: int):
        self.bar, self.world = bar, world

    def update(self, n: int) -> None:
        step = n * self.world
        if self.bar.total is not None:
            step = min(step, max(self.bar.total - self.bar.n, 0))
        self.bar.update(step)


def score_blocks(scorer, records, blocks: list[int], batch_size: int, writer, workers: int = 2,
                 bar=None) -> tuple[int, int, float]:
    """Score the given blocks of `records` (block b: records b*batch_size ... (b+1)*batch_size - 1, one
    batch), appending each block's rows to `writer` (a CsvAppender of ipce.engine.parts' columns) as it
    finishes; unreadable images get a row with their problem. Returns (scored, unreadable, seconds)."""
    import torch

    from ipce.datasets.loader import ViewDataset, make_loader
    from ipce.engine.evaluate import predict_loader
    from ipce.engine.parts import block_indices
    from ipce.utils.stream import one_line

    records = list(records)
    batches = [block_indices(b, batch_size, len(records)) for b in blocks]
    configs = scorer.view_configs
    loaders = [make_loader(ViewDataset(records, cfg, tolerant=True), batch_size, shuffle=False, workers=workers,
                           device=scorer.device, batches=batches) for cfg in configs]
    counts = [0, 0]

    def score_fn(batch) -> torch.Tensor:
        # text features are cached within a block only: met first in another block, a prompt is encoded in
        # other length groups and rounds differently, and a resumed or multi-process file would differ
        scorer.forget_texts()
        chunk = [records[i] for i in batch.indices.tolist()]
        combined, per_model = scorer.score_views(batch.views, [r.prompt for r in chunk],
                                                 [r.generator for r in chunk])
        return torch.cat([combined[:, None], per_model.T], dim=1)

    def write(batch, out: torch.Tensor) -> None:
        blank = [""] * (1 + len(scorer.members))
        rows = [[i, "", *map(repr, values)] for i, values in zip(batch.indices.tolist(), out.tolist())]
        rows += [[i, one_line(problem), *blank] for i, problem in batch.errors]
        writer.write_rows(sorted(rows, key=lambda row: row[0]))  # the whole block in one write
        counts[0] += len(batch)
        counts[1] += len(batch.errors)

    for member in scorer.members:
        member.model.eval()  # text features are cached per prompt in eval mode (here: per block)
    _, _, _, seconds = predict_loader(score_fn, _AlignedLoaders(loaders, configs), desc="predict", on_batch=write,
                                      keep=False, progress=bar is not None, bar=bar)
    return counts[0], counts[1], seconds
