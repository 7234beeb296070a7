"""ipce inside a Ray Data pipeline: `ScoreBatch` for `Dataset.map_batches` (the ray extra).

    import ray
    from ipce.ray import ScoreBatch

    ds = ray.data.read_parquet("generations/")            # an image column (bytes or paths), a prompt column
    ds = ds.map_batches(ScoreBatch, fn_constructor_kwargs={"checkpoint": "best.safetensors"},
                        batch_size=64, concurrency=4)     # num_gpus=1 and device="cuda" on GPU workers
    ds.write_parquet("scores/")

Ray starts `concurrency` actors; each loads the scorer once and scores the batches it is given. A
batch gains a `score` column (NaN where the image cannot be read) and an `error` column (the one-line
reason, "" for a scored image), so one bad image among thousands is reported, not fatal. The scores are
`load_scorer(checkpoint).score(...)`'s. `ipce predict --engine ray` is the command-line way for
WebDataset and Parquet shards; this is the way into a pipeline of one's own.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ipce.api import load_scorer
from ipce.datasets.images import decode_rgb, open_rgb
from ipce.errors import DataError, IpceError


class ScoreBatch:
    """A `map_batches` callable (a class: Ray keeps one instance, one scorer, per actor).

    `checkpoint` and `load_options` as `ipce.load_scorer` takes them (device, precision, resize,
    patches, ...); `image_column` holds image bytes or paths, `prompt_column` the prompts (None: a
    prompt-free model); the results go to `score_column` and `error_column`."""

    def __init__(self, checkpoint: str, image_column: str = "image", prompt_column: str | None = "prompt",
                 score_column: str = "score", error_column: str = "error", **load_options):
        self.scorer = load_scorer(checkpoint, **load_options)
        self.image_column, self.prompt_column = image_column, prompt_column
        self.score_column, self.error_column = score_column, error_column

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for column in (self.image_column, self.prompt_column):
            if column is not None and column not in batch:
                raise IpceError(f"ScoreBatch: the batch has no column {column!r} (columns: "
                                f"{', '.join(batch)}); pass image_column= or prompt_column=")
        cells = list(batch[self.image_column])
        prompts = [str(p) for p in batch[self.prompt_column]] if self.prompt_column else None
        pictures, errors = [], [""] * len(cells)
        for i, cell in enumerate(cells):
            try:
                pictures.append(_decode(cell, i))
            except DataError as err:
                pictures.append(None)
                errors[i] = str(err)
        good = [i for i, picture in enumerate(pictures) if picture is not None]
        scores = np.full(len(cells), math.nan)
        if good:
            found = self.scorer.score([pictures[i] for i in good],
                                      [prompts[i] for i in good] if prompts is not None else None,
                                      generators=[_generator(cells[i]) for i in good])
            scores[good] = found
        return {**batch, self.score_column: scores, self.error_column: np.asarray(errors, dtype=object)}


def _decode(cell, row: int):
    """A cell's image: bytes decoded in memory, a path opened; either checked as ipce checks files."""
    if isinstance(cell, (bytes, bytearray, memoryview)):
        return decode_rgb(bytes(cell), f"row {row}")
    if isinstance(cell, (str, Path)):
        return open_rgb(cell)
    raise DataError(f"row {row}: the image cell is {type(cell).__name__}, not image bytes or a path",
                    kind="not-an-image")


def _generator(cell) -> str | None:
    """The generator of a path's file name, as `Scorer.score` finds it for a path (bytes: none)."""
    from ipce.datasets.sources import generator_of

    return generator_of(str(cell)) if isinstance(cell, (str, Path)) else None
