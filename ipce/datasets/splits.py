"""Seeded splits, grouped splits, a three-way split, and split files on disk.

A `Split` holds indices into the list of records. Split k (0-based) of a seed is
drawn from `numpy.random.default_rng([seed, k])`, so it is the same whatever `n`
is, the same on every run, and different for another seed. The splits of one
call are checked pairwise distinct: a split equal to an earlier one is redrawn
from the next stream; when no distinct split can be found (tiny data) a
`DataError` says so.

With `group_by="prompt"` (or any Record attribute, e.g. "generator") whole
groups are shuffled and cut where the record count comes closest to the ratio,
so no group has records on two sides. Records whose group value is None are
groups of their own.

Split folders: `<dir>/<k>/train.csv`, `val.csv` and optionally `test.csv`, k
from 1 (0-based folders are accepted on import; folders sort numerically).
Imported folders are read as published, every row: the original authors'
folders have header-less files, an image on both sides, identical splits and
an image listed twice in the dataset; `read_split_dir` counts what it finds
(`SplitFileCheck`) instead of refusing the folder.

The original authors' folders ship with ipce (`ipce/presets/splits/<preset>.json.xz`, built by
`scripts/build_original_splits.py`): the image names of every row, in file order, and the score
of a row only where one image is listed with two scores. `write_original_split_dir` writes them
back as folders that `read_split_dir` reads to the same splits as the originals.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ipce.errors import DataError
from ipce.presets.registry import SPLIT_SEED, original_split_header, with_original_splits
from ipce.utils.io import write_csv

__all__ = ["Split", "SplitFileCheck", "OriginalSplits", "random_splits", "holdout_splits", "read_split_dir",
           "unusable_splits", "write_split_dir", "original_splits", "write_original_split_dir"]

DEFAULT_SEED = SPLIT_SEED
_PARTS = ("train", "val", "test")
_REDRAWS = 100


@dataclass(frozen=True)
class Split:
    train: list[int]
    val: list[int]                 # the paper protocol's held-out part
    test: list[int] = ()           # only for the three-way (holdout) protocol


# ----------------------------------------------------------------------------- drawing

def _units(records, group_by: str | None) -> list[list[int]]:
    """Index groups that must stay together (one per record without group_by)."""
    if group_by is None:
        return [[i] for i in range(len(records))]
    groups: dict[object, list[int]] = {}
    for i, rec in enumerate(records):
        if not hasattr(rec, group_by):
            raise DataError(f"--group-by {group_by}: records have no such field; use prompt or generator",
                            kind="bad-option")
        key = getattr(rec, group_by)
        groups.setdefault(("__alone__", i) if key is None else ("value", key), []).append(i)
    return list(groups.values())


def _cuts(sizes: list[int], fractions: tuple[float, ...]) -> list[int]:
    """Cut points into the shuffled units so each part's record count is closest to its fraction;
    every part keeps at least one unit."""
    total = sum(sizes)
    cumulative = np.cumsum(sizes)
    cuts, lower = [], 1
    parts = len(fractions)
    acc = 0.0
    for p, fraction in enumerate(fractions[:-1]):
        acc += fraction
        upper = len(sizes) - (parts - 1 - p)  # leave one unit for each later part
        goal = acc * total
        best = min(range(lower, upper + 1), key=lambda c: (abs(cumulative[c - 1] - goal), c))
        cuts.append(best)
        lower = best + 1
    return cuts


def _draw(units: list[list[int]], fractions: tuple[float, ...], seed: int, k: int, attempt: int) -> Split:
    rng = np.random.default_rng([seed, k, attempt] if attempt else [seed, k])
    order = rng.permutation(len(units))
    shuffled = [units[j] for j in order]
    cuts = _cuts([len(u) for u in shuffled], fractions)
    bounds = [0, *cuts, len(shuffled)]
    parts = [sorted(i for unit in shuffled[a:b] for i in unit) for a, b in zip(bounds[:-1], bounds[1:])]
    if len(parts) == 2:
        return Split(train=parts[0], val=parts[1])
    return Split(train=parts[0], val=parts[1], test=parts[2])


def _key(split: Split) -> tuple:
    return tuple(split.val), tuple(split.test)


def _make(records, n: int, fractions: tuple[float, ...], seed: int, group_by: str | None) -> list[Split]:
    if n < 1:
        raise DataError(f"--n-splits {n}: the number of splits must be at least 1", kind="bad-option")
    units = _units(records, group_by)
    what = f"{group_by} groups" if group_by else "records"
    if len(units) < len(fractions):
        raise DataError(f"cannot split {len(units)} {what} into {len(fractions)} non-empty parts; "
                        "add records or drop --group-by", kind="bad-option")
    splits: list[Split] = []
    seen: set[tuple] = set()
    for k in range(n):
        for attempt in range(_REDRAWS):
            split = _draw(units, fractions, seed, k, attempt)
            if _key(split) not in seen:
                break
        else:
            raise DataError(
                f"split {k + 1} of {n} coincides with an earlier one: {len(units)} {what} allow too few "
                f"distinct splits; ask for fewer splits (--n-splits) or use more data", kind="bad-option")
        seen.add(_key(split))
        splits.append(split)
    return splits


def random_splits(records, n: int = 10, ratio: float = 0.8, seed: int = DEFAULT_SEED,
                  group_by: str | None = None) -> list[Split]:
    """`n` seeded train/val splits with `ratio` of the records in train (the paper's ten 80/20 splits)."""
    if not 0.0 < ratio < 1.0:
        raise DataError(f"--ratio {ratio}: must lie strictly between 0 and 1 (e.g. 0.8)", kind="bad-option")
    return _make(records, n, (ratio, 1.0 - ratio), seed, group_by)


def holdout_splits(records, n: int = 10, ratios=(0.7, 0.1, 0.2), seed: int = DEFAULT_SEED,
                   group_by: str | None = None) -> list[Split]:
    """`n` seeded three-way train/val/test splits with the given ratios (summing to 1)."""
    ratios = tuple(float(r) for r in ratios)
    if len(ratios) != 3 or any(r <= 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        raise DataError(f"ratios {ratios}: need three positive train/val/test fractions summing to 1 "
                        "(e.g. 0.7 0.1 0.2)", kind="bad-option")
    return _make(records, n, ratios, seed, group_by)


# ----------------------------------------------------------------------------- files

def _numbered_dirs(directory: Path) -> list[tuple[int, Path]]:
    if not directory.is_dir():
        return []
    found = [(int(p.name), p) for p in directory.iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(found)


def _name_column(rows: list[list[str]], names: set[str], basenames: dict[str, list[int]]):
    """(column index or (model, image_name) columns, index of the first data row)."""
    first = [c.strip() for c in rows[0]]
    lowered = [c.lower() for c in first]
    if first and (first[0] in names or first[0].replace("\\", "/").rsplit("/", 1)[-1] in basenames):
        return 0, 0
    if "model" in lowered and "image_name" in lowered:
        return (lowered.index("model"), lowered.index("image_name")), 1
    for wanted in ("image", "name", "image_name", "img", "filename", "file", "path"):
        if wanted in lowered:
            return lowered.index(wanted), 1
    return 0, 0


def _numbers_in(cells: list[str]) -> list[float]:
    values = []
    for cell in cells:
        try:
            values.append(float(cell))
        except ValueError:
            pass
    return values


def _pick(candidates: list[int], cells: list[str], records, used: set[int]) -> int:
    """The record a split row means among records of the same name (an image listed twice in the
    dataset): the one whose score is in the row, not yet used in this file, else the first unused."""
    if len(candidates) == 1:
        return candidates[0]
    values = _numbers_in(cells)
    free = [i for i in candidates if i not in used] or candidates
    for i in free:
        target = records[i].target
        if target is not None and any(math.isclose(target, v, rel_tol=1e-9, abs_tol=1e-12) for v in values):
            return i
    return free[0]


@dataclass
class _FileRead:
    indices: list[int]
    missing: list[str]      # names (and why) of rows that match no record
    repeated: list[str]     # names of rows listing a record already in this file


def _read_split_file(path: Path, records, by_name: dict[str, list[int]], by_base: dict[str, list[int]]) -> _FileRead:
    from ipce.datasets.sources import load_rows  # the same CSV reading (encoding, row numbers) as the readers

    rows, numbers = load_rows(path)
    found = _FileRead([], [], [])
    if not rows:
        return found
    column, start = _name_column(rows, set(by_name), by_base)
    used: set[int] = set()
    for cells, row in zip(rows[start:], numbers[start:]):
        if isinstance(column, tuple):
            model, image = (cells[c].strip() if c < len(cells) else "" for c in column)
            name = f"{model}/{image}"
        else:
            name = cells[column].strip() if column < len(cells) else ""
        name = name.replace("\\", "/")
        candidates = by_name.get(name) or by_base.get(name.rsplit("/", 1)[-1], [])
        if name not in by_name and "/" in name:  # by base name only where one of the two names has no folder
            candidates = [i for i in candidates if "/" not in records[i].name.replace("\\", "/")]
        if not candidates or (name not in by_name and len({records[i].name for i in candidates}) > 1):
            why = "no record" if not candidates else f"{len(candidates)} records by base name"
            found.missing.append(f"{name} (row {row}: matches {why})")
            continue
        index = _pick(candidates, cells, records, used)
        if index in used:
            found.repeated.append(f"{name} (row {row})")
            continue
        used.add(index)
        found.indices.append(index)
    return found


@dataclass(frozen=True)
class SplitFileCheck:
    """What one split folder holds, counted over every row of its files."""
    split: int                      # the folder's number
    train: int
    val: int
    test: int | None                # None without test.csv
    missing: int                    # rows naming no record of the dataset
    overlap: int                    # held-out records whose image is also in train
    repeated: int = 0               # rows listing a record already listed in the same file
    dropped: int = 0                # overlapping records taken out of val/test (drop_overlap)
    same_as: int | None = None      # the number of an earlier folder with exactly the same split
    examples: dict = field(default_factory=dict)  # missing / overlap / repeated -> a few names

    def counts(self) -> dict:
        """The counts `ipce splits --from --json` prints."""
        return {"split": self.split, "train": self.train, "val": self.val, "missing": self.missing,
                "overlap": self.overlap}

    def to_dict(self) -> dict:
        return {**self.counts(), "test": self.test, "repeated": self.repeated, "dropped": self.dropped,
                "same_as": self.same_as, "examples": self.examples}

    def line(self) -> str:
        test = f", test {self.test}" if self.test is not None else ""
        text = (f"split {self.split}: train {self.train}, val {self.val}{test}, missing {self.missing}, "
                f"overlap {self.overlap}")
        if self.repeated:
            text += f", repeated {self.repeated}"
        if self.dropped:
            text += f" ({self.dropped} dropped from val)"
        if self.same_as is not None:
            text += f", the same split as {self.same_as}"
        shown = [f"{kind}: {', '.join(names)}" for kind, names in self.examples.items() if names]
        return text + (f" [{'; '.join(shown)}]" if shown else "")


EXAMPLES = 3


def read_split_dir(directory, records, drop_overlap: bool = False) -> tuple[list[tuple[int, Split]],
                                                                            list[SplitFileCheck]]:
    """Every split folder `<dir>/<k>/train.csv`, `val.csv` (and `test.csv` when present), read as published:
    rows are matched to records by `Record.name` (by base name when that is unique; among records of the
    same name by the score in the row); rows that match no record and records on both sides are counted,
    not fatal. Returns ((folder number, split), ...) and one `SplitFileCheck` per folder."""
    directory = Path(directory)
    folders = _numbered_dirs(directory)
    if not folders:
        raise DataError(f"{directory}: no numbered split folders (expected {directory}/1/train.csv, "
                        f"{directory}/1/val.csv, ...); check --splits-dir", kind="missing-file", path=directory)
    by_name: dict[str, list[int]] = {}
    by_base: dict[str, list[int]] = {}
    for i, rec in enumerate(records):
        name = rec.name.replace("\\", "/")
        by_name.setdefault(name, []).append(i)
        by_base.setdefault(name.rsplit("/", 1)[-1], []).append(i)
    splits, checks = [], []
    seen: dict[tuple, int] = {}
    for number, folder in folders:
        parts: dict[str, _FileRead] = {}
        for part in _PARTS:
            path = folder / f"{part}.csv"
            if not path.is_file():
                if part == "test":
                    continue
                raise DataError(f"{path}: split file not found; every split folder needs train.csv and val.csv",
                                kind="missing-file", path=path)
            parts[part] = _read_split_file(path, records, by_name, by_base)
        # overlap is by image file: an image listed twice in the dataset (two records) on both sides leaks too
        train = {records[i].image for i in parts["train"].indices}
        held = [part for part in ("val", "test") if part in parts]
        both = sorted({i for part in held for i in parts[part].indices if records[i].image in train})
        kept = {part: [i for i in parts[part].indices if not (drop_overlap and records[i].image in train)]
                for part in held}
        key = tuple(tuple(sorted(v)) for v in (parts["train"].indices, *kept.values()))  # to spot a repeated split
        examples = {"missing": [m for p in parts.values() for m in p.missing][:EXAMPLES],
                    "overlap": [records[i].name for i in both][:EXAMPLES],
                    "repeated": [r for p in parts.values() for r in p.repeated][:EXAMPLES]}
        checks.append(SplitFileCheck(
            split=number, train=len(parts["train"].indices), val=len(kept["val"]),
            test=len(kept["test"]) if "test" in kept else None,
            missing=sum(len(p.missing) for p in parts.values()), overlap=len(both),
            repeated=sum(len(p.repeated) for p in parts.values()),
            dropped=sum(len(parts[p].indices) - len(kept[p]) for p in held),
            examples={k: v for k, v in examples.items() if v},
            same_as=seen.get(key)))
        seen.setdefault(key, number)
        splits.append((number, Split(train=parts["train"].indices, val=kept["val"], test=kept.get("test", ()))))
    return splits, checks


def unusable_splits(checks: list[SplitFileCheck]) -> list[SplitFileCheck]:
    """The split folders a run cannot train on: no training record, or nothing held out."""
    return [c for c in checks if c.train == 0 or c.val == 0]


def write_split_dir(directory, records, splits) -> None:
    """Write `<dir>/<k>/train.csv`, `val.csv` (and `test.csv` when the split has one), k from 1, each with
    header `image,prompt,mos`; every file is written to a temporary name and renamed."""
    directory = Path(directory)
    stale = [p for k, p in _numbered_dirs(directory) if k > len(splits) and any(p.glob("*.csv"))]
    if stale:
        raise DataError(f"{stale[0]}: holds a split from an earlier run ({len(stale)} extra folder(s)); "
                        "choose an empty --out folder or delete the old one", kind="bad-option", path=stale[0])
    directory.mkdir(parents=True, exist_ok=True)
    for k, split in enumerate(splits, start=1):
        folder = directory / str(k)
        folder.mkdir(exist_ok=True)
        for part in _PARTS:
            indices = list(getattr(split, part))
            path = folder / f"{part}.csv"
            if part == "test" and not indices:
                if path.exists():
                    path.unlink()  # a test.csv left by an earlier three-way run would be read back
                continue
            rows = [[records[i].name, records[i].prompt,
                     "" if records[i].target is None else repr(float(records[i].target))] for i in indices]
            write_csv(path, ["image", "prompt", "mos"], rows)


def split_summary(splits) -> str:
    """One line: how many splits and the part sizes of the first."""
    if not splits:
        return "no splits"
    first = splits[0]
    sizes = f"train {len(first.train)} / val {len(first.val)}" + (f" / test {len(first.test)}" if first.test else "")
    return f"{len(splits)} split(s), {sizes}"


# ----------------------------------------------------------------------------- the original splits

# The header of each preset's exported files is the registry's `original_split_header` (absent:
# header-less, as the originals); a column named like the dataset's score column (MOS) carries a row's
# score where one image is listed with two scores.


@dataclass(frozen=True)
class OriginalSplits:
    """The original authors' split folders of one preset: `rows[i]` = (image name, score or None);
    `splits` = ((folder number, train row indices, val row indices), ...), in file order."""
    preset: str
    folder: str                                     # the folder's name in their repository's Database/
    rows: tuple[tuple[str, float | None], ...]
    splits: tuple[tuple[int, tuple[int, ...], tuple[int, ...]], ...]

    def numbers(self) -> list[int]:
        return [number for number, _, _ in self.splits]

    def sides(self, number: int) -> tuple[list[tuple[str, float | None]], list[tuple[str, float | None]]]:
        """(train rows, val rows) of folder `number`."""
        for k, train, val in self.splits:
            if k == number:
                return [self.rows[i] for i in train], [self.rows[i] for i in val]
        raise DataError(f"{self.preset}: no original split {number}; the folders are "
                        f"{', '.join(map(str, self.numbers()))}", kind="bad-option")


def original_splits(preset: str) -> OriginalSplits:
    """The shipped original splits of `preset` (agiqa1k, agiqa3k, aigciqa2023, aigcqa30k)."""
    import json
    import lzma
    from importlib import resources

    if preset not in with_original_splits():
        raise DataError(f"--preset {preset}: no original splits; they exist for {', '.join(with_original_splits())}",
                        kind="bad-option")
    data = json.loads(lzma.decompress(resources.files("ipce.presets").joinpath(f"splits/{preset}.json.xz")
                                      .read_bytes()))
    return OriginalSplits(preset=data["preset"], folder=data["folder"],
                          rows=tuple((row[0], row[1] if len(row) > 1 else None) for row in data["rows"]),
                          splits=tuple((s["number"], tuple(s["train"]), tuple(s["val"])) for s in data["splits"]))


def _original_rows(preset: str, rows: list[tuple[str, float | None]]) -> list[list[str]]:
    header = original_split_header(preset)
    names = [name.split("/", 1) if header and len(header) > 1 and header[1] == "image_name" else [name]
             for name, _ in rows]
    if header is None or "MOS" not in header:
        return names
    return [cells + ["" if score is None else repr(score)] for cells, (_, score) in zip(names, rows)]


def write_original_split_dir(preset: str, directory, numbers=None, holdout_ratios=None,
                             seed: int = DEFAULT_SEED) -> list[int]:
    """Write the original splits of `preset` as `<dir>/<k>/train.csv`, `val.csv`, numbered as published
    (AGIQA-1K from 0), with the name columns of the original files; returns the folder numbers written.

    `holdout_ratios` (train, val, test): the three-way protocol on the original splits: each original
    held-out part becomes `test.csv` and a seeded share val / (train + val) of the original training
    rows becomes `val.csv`."""
    originals = original_splits(preset)
    chosen = list(numbers) if numbers else originals.numbers()
    directory = Path(directory)
    stale = [p for k, p in _numbered_dirs(directory) if k not in chosen and any(p.glob("*.csv"))]
    if stale:
        raise DataError(f"{stale[0]}: holds a split that is not one of {preset}'s folders {chosen}; choose an "
                        "empty --out folder or delete the old one", kind="bad-option", path=stale[0])
    header = original_split_header(preset)
    for k in chosen:
        train, val = originals.sides(k)
        parts = {"train": train, "val": val}
        if holdout_ratios is not None:
            ratio_train, ratio_val, _ = (float(r) for r in holdout_ratios)
            order = np.random.default_rng([seed, k]).permutation(len(train))
            carved = set(order[:round(len(train) * ratio_val / (ratio_train + ratio_val))].tolist())
            parts = {"train": [r for i, r in enumerate(train) if i not in carved],
                     "val": [r for i, r in enumerate(train) if i in carved], "test": val}
        elif (directory / str(k) / "test.csv").exists():
            (directory / str(k) / "test.csv").unlink()  # left by a three-way export, it would be read back
        for part, rows in parts.items():
            write_csv(directory / str(k) / f"{part}.csv", header, _original_rows(preset, rows))
    return chosen
