"""Records -> batches of views. Crops come from a per-sample generator seeded by
(seed, epoch, index), so the same seed gives the same crops whatever the worker count,
and a resumed run draws what an uninterrupted one would have."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from ipce.datasets.images import open_rgb
from ipce.datasets.sources import Record, prefixed_prompt
from ipce.models.views import ViewConfig, make_pixels, make_views, views_from_pixels
from ipce.errors import DataError


@dataclass
class Batch:
    crops: torch.Tensor  # [B, P, 3, 224, 224]
    global_view: torch.Tensor  # [B, 3, 224, 224]
    prompts: list[str]  # the texts the model sees (prefix applied)
    targets: torch.Tensor  # [B] float (NaN where the record has none)
    indices: torch.Tensor  # [B] positions in the dataset's record list
    errors: list[tuple[int, str]]  # (index, one-line problem) of samples that could not be read
    views: dict | None = None  # {ViewConfig: (crops, global_view)}: loaders of several view configs, aligned
    # --feed uint8 (crops and global_view None): each image's 8-bit pixels [H, W, 3] and crop corners
    pixels: list[torch.Tensor] | None = None
    positions: list[list[tuple[int, int]]] | None = None

    def __len__(self) -> int:
        return len(self.prompts)

    def pin_memory(self) -> "Batch":
        if self.pixels is not None:
            self.pixels = [p.pin_memory() for p in self.pixels]
        else:
            self.crops, self.global_view = self.crops.pin_memory(), self.global_view.pin_memory()
        return self

    def views_on(self, device: str | torch.device, patches: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(crops [B, P, 3, 224, 224], global views [B, 3, 224, 224]) on `device`: the float views
        moved there, or the 8-bit pixels moved there and the views made there (the same numbers;
        `patches`: P of an empty batch)."""
        if self.pixels is None:
            return self.crops.to(device, non_blocking=True), self.global_view.to(device, non_blocking=True)
        if not self.pixels:
            return torch.empty(0, patches, 3, 224, 224, device=device), torch.empty(0, 3, 224, 224, device=device)
        views = [views_from_pixels(p.to(device, non_blocking=True), corners)
                 for p, corners in zip(self.pixels, self.positions)]
        return torch.stack([c for c, _ in views]), torch.stack([g for _, g in views])


class ViewDataset(Dataset):
    """One item per record: its views, its text, its target.

    With `tolerant=True` an unreadable image gives an item carrying the error instead of
    raising, so one bad file in thousands is reported and the rest still scored.
    """

    def __init__(self, records: Sequence[Record], views: ViewConfig, prompt_prefix: str | None = None,
                 seed: int = 0, tolerant: bool = False, pixels: bool = False):
        # pixels: items carry 8-bit pixels and crop corners (`make_pixels`), the views made where
        # the batch goes (`Batch.views_on`); not for CLIP's own input (mode "clip")
        self.pixels = pixels and views.mode != "clip"
        self.records = list(records)
        self.views = views
        self.prompt_prefix = prompt_prefix
        self.seed = seed
        self.epoch = 0
        self.tolerant = tolerant

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def text_of(self, record: Record) -> str:
        return prefixed_prompt(record.prompt, self.prompt_prefix, record.generator)

    def __getitem__(self, index: int):
        record = self.records[index]
        generator = torch.Generator().manual_seed(hash((self.seed, self.epoch, index)) & 0x7FFF_FFFF_FFFF)
        try:
            make = make_pixels if self.pixels else make_views
            crops, global_view = make(open_rgb(record.image), self.views, generator)  # or pixels, corners
        except DataError as err:
            if not self.tolerant:
                raise
            return index, None, None, str(err)
        return index, crops, global_view, None


def collate(items, dataset: ViewDataset) -> Batch:
    errors = [(index, err) for index, _, _, err in items if err is not None]
    good = [(index, crops, global_view) for index, crops, global_view, err in items if err is None]
    records = [dataset.records[i] for i, _, _ in good]
    if dataset.pixels:
        pixels, corners = [p for _, p, _ in good], [c for _, _, c in good]
        crops = global_view = None
    elif good:
        crops = torch.stack([c for _, c, _ in good])
        global_view = torch.stack([g for _, _, g in good])
    else:
        crops, global_view = torch.empty(0, dataset.views.patches, 3, 224, 224), torch.empty(0, 3, 224, 224)
    targets = torch.tensor([float("nan") if r.target is None else r.target for r in records], dtype=torch.float32)
    batch = Batch(crops, global_view, [dataset.text_of(r) for r in records], targets,
                  torch.tensor([i for i, _, _ in good], dtype=torch.long), errors)
    if dataset.pixels:
        batch.pixels, batch.positions = pixels, corners
    return batch


class _Collate:
    """Picklable collate bound to its dataset (workers may be spawned processes)."""

    def __init__(self, dataset: ViewDataset):
        self.dataset = dataset

    def __call__(self, items) -> Batch:
        return collate(items, self.dataset)


def make_loader(dataset: ViewDataset, batch_size: int, shuffle: bool, workers: int = 2, seed: int = 0,
                device: str | torch.device = "cpu", sampler=None, drop_last: bool = False,
                batches: Sequence[Sequence[int]] | None = None) -> DataLoader:
    """A DataLoader over views: seeded order, worker processes, pinned memory only on CUDA.
    `batches`: the exact batches to load, as lists of dataset positions (then `batch_size`,
    `shuffle`, `sampler` and `drop_last` are not used)."""
    generator = torch.Generator().manual_seed(seed)
    if batches is not None:
        return DataLoader(dataset, batch_sampler=batches, num_workers=workers, collate_fn=_Collate(dataset),
                          pin_memory=torch.device(device).type == "cuda", generator=generator,
                          prefetch_factor=4 if workers > 0 else None)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=workers,
        collate_fn=_Collate(dataset),
        pin_memory=torch.device(device).type == "cuda",
        generator=generator,
        drop_last=drop_last,
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
    )
