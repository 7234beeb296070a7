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
"""
from __future__ import annotations

import csv
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ipce.datasets.images import make_data_error

__all__ = ["Split", "random_splits", "holdout_splits", "import_split_dir", "write_split_dir"]

DEFAULT_SEED = 20200626
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
            raise make_data_error(f"--group-by {group_by}: records have no such field; use prompt or generator",
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
        raise make_data_error(f"--n {n}: the number of splits must be at least 1", kind="bad-option")
    units = _units(records, group_by)
    what = f"{group_by} groups" if group_by else "records"
    if len(units) < len(fractions):
        raise make_data_error(f"cannot split {len(units)} {what} into {len(fractions)} non-empty parts; "
                              "add records or drop --group-by", kind="bad-option")
    splits: list[Split] = []
    seen: set[tuple] = set()
    for k in range(n):
        for attempt in range(_REDRAWS):
            split = _draw(units, fractions, seed, k, attempt)
            if _key(split) not in seen:
                break
        else:
            raise make_data_error(
                f"split {k + 1} of {n} coincides with an earlier one: {len(units)} {what} allow too few "
                f"distinct splits; ask for fewer splits (--n) or use more data", kind="bad-option")
        seen.add(_key(split))
        splits.append(split)
    return splits


def random_splits(records, n: int = 10, ratio: float = 0.8, seed: int = DEFAULT_SEED,
                  group_by: str | None = None) -> list[Split]:
    """`n` seeded train/val splits with `ratio` of the records in train (the paper's ten 80/20 splits)."""
    if not 0.0 < ratio < 1.0:
        raise make_data_error(f"--ratio {ratio}: must lie strictly between 0 and 1 (e.g. 0.8)", kind="bad-option")
    return _make(records, n, (ratio, 1.0 - ratio), seed, group_by)


def holdout_splits(records, n: int = 10, ratios=(0.7, 0.1, 0.2), seed: int = DEFAULT_SEED,
                   group_by: str | None = None) -> list[Split]:
    """`n` seeded three-way train/val/test splits with the given ratios (summing to 1)."""
    ratios = tuple(float(r) for r in ratios)
    if len(ratios) != 3 or any(r <= 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        raise make_data_error(f"ratios {ratios}: need three positive train/val/test fractions summing to 1 "
                              "(e.g. 0.7 0.1 0.2)", kind="bad-option")
    return _make(records, n, ratios, seed, group_by)


# ----------------------------------------------------------------------------- files

def _numbered_dirs(directory: Path) -> list[tuple[int, Path]]:
    if not directory.is_dir():
        return []
    found = [(int(p.name), p) for p in directory.iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(found)


def _name_column(rows: list[list[str]], names: set[str], basenames: dict[str, list[int]]):
    """(column index or None for 'model/image_name', index of the first data row)."""
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


def _read_split_file(path: Path, records, by_name: dict[str, int], by_base: dict[str, list[int]]) -> list[int]:
    from ipce.datasets.sources import _load_rows  # the same CSV reading (encoding, row numbers) as the readers

    rows, numbers = _load_rows(path)
    if not rows:
        return []
    column, start = _name_column(rows, set(by_name), by_base)
    indices: list[int] = []
    seen: dict[int, int] = {}
    for cells, row in zip(rows[start:], numbers[start:]):
        if isinstance(column, tuple):
            model, image = (cells[c].strip() if c < len(cells) else "" for c in column)
            name = f"{model}/{image}"
        else:
            name = cells[column].strip() if column < len(cells) else ""
        name = name.replace("\\", "/")
        if name in by_name:
            index = by_name[name]
        else:
            matches = by_base.get(name.rsplit("/", 1)[-1], [])
            if len(matches) != 1:
                why = "matches no record" if not matches else f"matches {len(matches)} records by base name"
                raise make_data_error(f"{path}, row {row}: image {name!r} {why} of the dataset; "
                                      "check that the split belongs to this dataset and subset",
                                      kind="unknown-image", path=path, row=row)
            index = matches[0]
        if index in seen:
            raise make_data_error(f"{path}, row {row}: image {name!r} is listed twice (first at row {seen[index]}); "
                                  "remove one of the rows", kind="duplicate", path=path, row=row)
        seen[index] = row
        indices.append(index)
    return indices


def import_split_dir(directory, records) -> list[Split]:
    """Read `<dir>/<k>/train.csv`, `val.csv` (and `test.csv` when present), matching rows to records by
    `Record.name`, or by base name when that is unique."""
    directory = Path(directory)
    folders = _numbered_dirs(directory)
    if not folders:
        raise make_data_error(f"{directory}: no numbered split folders (expected {directory}/1/train.csv, "
                              f"{directory}/1/val.csv, ...); check --splits", kind="missing-file", path=directory)
    by_name: dict[str, int] = {}
    by_base: dict[str, list[int]] = {}
    for i, rec in enumerate(records):
        name = rec.name.replace("\\", "/")
        by_name.setdefault(name, i)
        by_base.setdefault(name.rsplit("/", 1)[-1], []).append(i)
    splits = []
    for _, folder in folders:
        parts: dict[str, list[int]] = {}
        for part in _PARTS:
            path = folder / f"{part}.csv"
            if not path.is_file():
                if part == "test":
                    continue
                raise make_data_error(f"{path}: split file not found; every split folder needs train.csv and val.csv",
                                      kind="missing-file", path=path)
            parts[part] = _read_split_file(path, records, by_name, by_base)
        owner: dict[int, str] = {}
        for part, indices in parts.items():
            for index in indices:
                if index in owner:
                    raise make_data_error(
                        f"{folder / (part + '.csv')}: image {records[index].name!r} is also in "
                        f"{owner[index]}.csv of the same split; a record may be on one side only",
                        kind="duplicate", path=folder / f"{part}.csv")
                owner[index] = part
        splits.append(Split(train=parts["train"], val=parts["val"], test=parts.get("test", ())))
    return splits


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_split_dir(directory, records, splits) -> None:
    """Write `<dir>/<k>/train.csv`, `val.csv` (and `test.csv` when the split has one), k from 1, each with
    header `image,prompt,mos`; every file is written to a temporary name and renamed."""
    directory = Path(directory)
    stale = [p for k, p in _numbered_dirs(directory) if k > len(splits) and any(p.glob("*.csv"))]
    if stale:
        raise make_data_error(f"{stale[0]}: holds a split from an earlier run ({len(stale)} extra folder(s)); "
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
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(["image", "prompt", "mos"])
            for index in indices:
                rec = records[index]
                writer.writerow([rec.name, rec.prompt, "" if rec.target is None else repr(float(rec.target))])
            _write_atomic(path, buffer.getvalue())


def split_summary(splits) -> str:
    """One line: how many splits and the part sizes of the first."""
    if not splits:
        return "no splits"
    first = splits[0]
    sizes = f"train {len(first.train)} / val {len(first.val)}" + (f" / test {len(first.test)}" if first.test else "")
    return f"{len(splits)} split(s), {sizes}"
