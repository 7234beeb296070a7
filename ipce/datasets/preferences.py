"""Human preferences: readers of the published forms, all yielding `PreferenceGroup`s.

A group is one human judgement: a prompt and two or more images of it with their ranks
(1 = preferred; equal ranks are ties; ranks need not be consecutive). Forms read:

* ImageRewardDB (`*.json`): a list of objects `{"id", "prompt", "generations": [image, ...],
  "ranking": [rank, ...]}`, one group per object; image paths relative to `--images`.
* A pair table (CSV) in Pick-a-Pic's naming: `caption`, `image_0`/`image_1` (or `jpg_0`/`jpg_1`),
  `label_0` (1: the first image preferred, 0: the second, 0.5: a tie); one group of two per row,
  other column names by `PairColumns`.

Every entry is checked in one pass and every problem kept (file, row or entry, image): a missing
field, an empty prompt or image name, a rank or label that is not allowed, rankings of another
length than the images, an image compared with itself, a group of one image. Such an entry is left
out of `groups`; the same pair (or entry id) listed again is a warning, kept as published. The
images themselves are checked by `check_preference_images` (ipce.datasets.checks' decoder).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from ipce.datasets.problems import Problem
from ipce.errors import DataError

__all__ = ["PreferenceGroup", "Preferences", "PairColumns", "PreferenceCounts", "PREFERENCE_FORMS",
           "load_preferences", "read_imagereward", "read_pair_table", "count_preferences",
           "check_preference_images", "drop_images", "group_records"]

PREFERENCE_FORMS = ("auto", "imagereward", "pairs")
LABELS = {1.0: (1, 2), 0.0: (2, 1), 0.5: (1, 1)}  # label_0 -> ranks of (image_0, image_1)


@dataclass(frozen=True)
class PreferenceGroup:
    prompt: str
    images: tuple[Path, ...]   # absolute paths
    names: tuple[str, ...]     # as written in the file
    ranks: tuple[float, ...]   # 1 = preferred; equal ranks tie
    row: int | None = None     # JSON: 1-based entry; CSV: 1-based line (header counted)
    key: str | None = None     # the entry's id, when the file gives one
    source: Path | None = None

    def pairs(self) -> list[tuple[int, int, float]]:
        """Every pair (i, j), i < j, with the human outcome: 1 when i is preferred, 0 when j is, 0.5 a tie."""
        r = self.ranks
        return [(i, j, 1.0 if r[i] < r[j] else 0.0 if r[i] > r[j] else 0.5)
                for i in range(len(r)) for j in range(i + 1, len(r))]

    def where(self) -> str:
        place = "entry" if self.source is not None and self.source.suffix.lower() == ".json" else "row"
        return f"{self.source}, {place} {self.row}" + (f" (id {self.key})" if self.key else "")


@dataclass
class Preferences:
    """What a reader found: the usable groups, every entry left out (`problems`), warnings."""
    groups: list[PreferenceGroup]
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    source: Path | None = None
    rows: int = 0  # entries (JSON) or data rows (CSV), usable or not

    def usable(self) -> list[PreferenceGroup]:
        """The groups, or `DataError` naming the first problem and how many more there are."""
        if self.problems:
            first, more = self.problems[0], len(self.problems) - 1
            tail = f" (and {more} more problem(s); `ipce check-data --preferences` lists them all)" if more else ""
            raise DataError(first.message + tail, kind=first.kind, path=first.path or None, row=first.row)
        return self.groups


@dataclass(frozen=True)
class PairColumns:
    """Column names of a pair table; None: the Pick-a-Pic name (images: image_0/1, else jpg_0/1)."""
    caption: str | None = None
    image_0: str | None = None
    image_1: str | None = None
    label: str | None = None


@dataclass(frozen=True)
class PreferenceCounts:
    groups: int
    prompts: int        # distinct prompt texts
    images: int         # distinct image files
    pairs: int          # pairs with a human order (untied)
    tied_pairs: int

    def line(self) -> str:
        return (f"{self.prompts} prompts, {self.groups} groups, {self.images} images, {self.pairs} ordered pairs, "
                f"{self.tied_pairs} tied pairs")


def count_preferences(groups) -> PreferenceCounts:
    groups = list(groups)
    outcomes = [o for g in groups for _, _, o in g.pairs()]
    tied = sum(o == 0.5 for o in outcomes)
    return PreferenceCounts(groups=len(groups), prompts=len({g.prompt for g in groups}),
                            images=len({os.path.normcase(str(p)) for g in groups for p in g.images}),
                            pairs=len(outcomes) - tied, tied_pairs=tied)


# ----------------------------------------------------------------------------- checks of one entry

def _problem(where: str, source, row, kind: str, text: str) -> Problem:
    return Problem(str(source), row, kind, f"{where}: {text}")


def _group_problems(where: str, source, row, prompt, names) -> list[Problem]:
    """Every problem of one entry's prompt and image names."""
    found = []
    if not str(prompt or "").strip():
        found.append(_problem(where, source, row, "empty-prompt", "empty prompt; fill it in or remove the entry"))
    for name in names:
        if not name:
            found.append(_problem(where, source, row, "empty-name", "empty image name; fill it in or remove it"))
    if len(names) < 2:
        found.append(_problem(where, source, row, "single-image",
                              f"a group of {len(names)} image(s): a preference needs two or more images of one "
                              "prompt; remove the entry"))
    seen: set[str] = set()
    for name in names:
        key = os.path.normcase(name)
        if name and key in seen:
            found.append(_problem(where, source, row, "self-pair",
                                  f"image {name!r} is compared with itself (listed twice); remove one"))
        seen.add(key)
    return found


def _rank(value) -> float | None:
    """A rank as a float, or None when it is not a positive finite number."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    return float(value) if ok else None


def _image_path(base: Path, name: str) -> Path:
    return Path(os.path.normpath(base / name.replace("\\", "/")))


# ----------------------------------------------------------------------------- ImageRewardDB

def _load_json(path: Path):
    if not path.is_file():
        raise DataError(f"{path}: preference file not found; check --preferences", kind="missing-file", path=path)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; re-save the file as UTF-8", kind="encoding", path=path) from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}, line {err.lineno}: not valid JSON ({err.msg}); re-download the file",
                        kind="unreadable-file", path=path, row=err.lineno) from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of objects with prompt, generations and ranking "
                        f"(ImageRewardDB's form), found a {type(data).__name__}", kind="unreadable-file", path=path)
    return data


def _imagereward_entry(entry, number: int, path: Path, base: Path):
    """(group or None, problems) of one ImageRewardDB object."""
    if not isinstance(entry, dict):
        return None, [_problem(f"{path}, entry {number}", path, number, "missing-field",
                               f"expected an object with prompt, generations and ranking, found "
                               f"{type(entry).__name__}")]
    key = str(entry["id"]) if entry.get("id") is not None else None
    where = f"{path}, entry {number}" + (f" (id {key})" if key else "")
    missing = [k for k in ("prompt", "generations", "ranking") if not isinstance(entry.get(k), (str, list))
               or (k != "prompt" and not isinstance(entry.get(k), list))]
    if missing:
        return None, [_problem(where, path, number, "missing-field",
                               f"missing or malformed field(s) {', '.join(missing)} (prompt: text, generations "
                               "and ranking: lists); fix or remove the entry")]
    names = [str(n).strip() if n is not None else "" for n in entry["generations"]]
    ranks = [_rank(v) for v in entry["ranking"]]
    problems = _group_problems(where, path, number, entry["prompt"], names)
    if len(ranks) != len(names):
        problems.append(_problem(where, path, number, "bad-label",
                                 f"{len(ranks)} ranks for {len(names)} generations; give one rank per image"))
    bad = [raw for raw, r in zip(entry["ranking"], ranks) if r is None]
    if bad:
        problems.append(_problem(where, path, number, "bad-label",
                                 f"rank {bad[0]!r} is not allowed; ranks are positive numbers, 1 = preferred"))
    if problems:
        return None, problems
    group = PreferenceGroup(prompt=entry["prompt"], images=tuple(_image_path(base, n) for n in names),
                            names=tuple(names), ranks=tuple(ranks), row=number, key=key, source=path)
    return group, []


def read_imagereward(path, images) -> Preferences:
    """ImageRewardDB's JSON: one group per object, every entry checked."""
    path, base = Path(path), Path(os.path.abspath(images))
    data = _load_json(path)
    groups, problems, ids = [], [], {}
    for number, entry in enumerate(data, start=1):
        group, found = _imagereward_entry(entry, number, path, base)
        problems.extend(found)
        if group is not None:
            groups.append(group)
            if group.key is not None:
                ids.setdefault(group.key, []).append(number)
    warnings = [Problem(str(path), rows[0], "duplicate",
                        f"{path}: id {key} is listed {len(rows)} times, entries {', '.join(map(str, rows))}; "
                        "kept every entry as published")
                for key, rows in ids.items() if len(rows) > 1]
    return Preferences(groups, problems, warnings, path, rows=len(data))


# ----------------------------------------------------------------------------- pair tables

def _pair_columns(header: list[str], columns: PairColumns, path: Path, row: int) -> tuple[int, int, int, int]:
    from ipce.datasets.sources import _column

    lowered = [h.strip().lower() for h in header]

    def image_col(given, names):
        if given:
            return _column(header, given, path, row)
        for name in names:
            if name in lowered:
                return lowered.index(name)
        return _column(header, names[0], path, row,
                       f"name the image columns {names[0]}/{names[1]} or choose them with --image0-col/--image1-col")

    i0 = image_col(columns.image_0, ("image_0", "jpg_0"))
    i1 = image_col(columns.image_1, ("image_1", "jpg_1"))
    hint = "rename the column or choose it with --caption-col / --label-col"
    return (_column(header, columns.caption or "caption", path, row, hint), i0, i1,
            _column(header, columns.label or "label_0", path, row, hint))


def _label(raw: str):
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    return value if value in LABELS else None


def read_pair_table(path, images, columns: PairColumns = PairColumns()) -> Preferences:
    """A CSV of pairs in Pick-a-Pic's naming (or the columns given): one group of two per row."""
    from ipce.datasets.sources import _cell, load_rows

    path, base = Path(path), Path(os.path.abspath(images))
    rows, numbers = load_rows(path)
    if not rows:
        raise DataError(f"{path}: preference file has no rows", kind="unreadable-file", path=path)
    header = [h.strip() for h in rows[0]]
    ic, i0, i1, il = _pair_columns(header, columns, path, numbers[0])
    label_name = header[il]
    groups, problems, seen = [], [], {}
    for cells, row in zip(rows[1:], numbers[1:]):
        where = f"{path}, row {row}"
        names = [_cell(cells, i0).strip(), _cell(cells, i1).strip()]
        raw = _cell(cells, il)
        label = _label(raw)
        found = _group_problems(where, path, row, _cell(cells, ic), names)
        if label is None:
            found.append(_problem(where, path, row, "bad-label",
                                  f"{label_name} {raw.strip()!r} is not allowed; give 1 (the first image preferred), "
                                  "0 (the second) or 0.5 (a tie)"))
        if found:
            problems.extend(found)
            continue
        group = PreferenceGroup(prompt=_cell(cells, ic), images=tuple(_image_path(base, n) for n in names),
                                names=tuple(names), ranks=LABELS[label], row=row, source=path)
        groups.append(group)
        seen.setdefault((group.prompt, *sorted(os.path.normcase(str(p)) for p in group.images)), []).append(group)
    return Preferences(groups, problems, _repeated_pairs(seen, path), path, rows=len(rows) - 1)


def _outcome(group: PreferenceGroup) -> float:
    """The first image's (in sorted order) outcome: 1 preferred, 0 not, 0.5 tie."""
    first = min(range(2), key=lambda i: os.path.normcase(str(group.images[i])))
    mine, other = group.ranks[first], group.ranks[1 - first]
    return 1.0 if mine < other else 0.0 if mine > other else 0.5


def _repeated_pairs(seen: dict, path: Path) -> list[Problem]:
    warnings = []
    for members in seen.values():
        if len(members) < 2:
            continue
        rows = ", ".join(str(g.row) for g in members)
        names = " and ".join(repr(n) for n in members[0].names)
        if len({_outcome(g) for g in members}) > 1:
            text = (f"the pair {names} is listed {len(members)} times with different choices, rows {rows}; "
                    "kept every row as published (raters disagree: the loss learns the share of choices)")
            kind = "contradiction"
        else:
            text = f"the pair {names} is listed {len(members)} times with the same choice, rows {rows}; kept every row"
            kind = "duplicate"
        warnings.append(Problem(str(path), members[0].row, kind, f"{path}: {text}"))
    return warnings


# ----------------------------------------------------------------------------- one entry point

def load_preferences(path, images, form: str = "auto", columns: PairColumns = PairColumns()) -> Preferences:
    """A preference file in the form given (auto: .json is ImageRewardDB's, anything else a pair table)."""
    path, folder = Path(path), Path(images)
    if form not in PREFERENCE_FORMS:
        raise DataError(f"--preference-form {form}: choose one of {', '.join(PREFERENCE_FORMS)}", kind="bad-option")
    if not path.is_file():
        raise DataError(f"{path}: preference file not found; check --preferences", kind="missing-file", path=path)
    if not folder.is_dir():
        raise DataError(f"{folder}: images folder not found; check --images", kind="missing-file", path=folder)
    if path.suffix.lower() == ".parquet":
        raise DataError(f"{path}: Parquet is not read; write the columns caption, image_0, image_1, label_0 as CSV "
                        "(pandas: read_parquet(...).to_csv(...), image bytes saved as files)", kind="unreadable-file",
                        path=path)
    if form == "imagereward" or (form == "auto" and path.suffix.lower() == ".json"):
        return read_imagereward(path, folder)
    return read_pair_table(path, folder, columns)


# ----------------------------------------------------------------------------- images

def check_preference_images(found: Preferences, workers: int = 2, progress: bool = True):
    """Decode every distinct image once: (bad image path -> (kind, message), problems naming the entries)."""
    from ipce.datasets.checks import check_records
    from ipce.datasets.sources import Record

    first: dict[str, tuple[PreferenceGroup, str]] = {}
    for group in found.groups:
        for image, name in zip(group.images, group.names):
            first.setdefault(str(image), (group, name))
    records = [Record(image=Path(p), prompt=g.prompt, target=None, name=n, row=g.row, source=g.source)
               for p, (g, n) in first.items()]
    report = check_records(records, workers=workers, progress=progress)
    bad, problems = {}, []
    for problem in report.problems:
        group, name = first[problem.path]
        bad[problem.path] = problem.kind
        problems.append(Problem(problem.path, group.row, problem.kind,
                                f"{group.where()}: image {name!r}: {problem.message}", image=name))
    return bad, problems, report


def drop_images(groups, bad) -> tuple[list[PreferenceGroup], int]:
    """The groups without the images in `bad` (paths), groups left with one image dropped; and how many
    groups were dropped."""
    kept, dropped = [], 0
    for group in groups:
        keep = [i for i, p in enumerate(group.images) if str(p) not in bad]
        if len(keep) == len(group.images):
            kept.append(group)
        elif len(keep) >= 2:
            kept.append(replace(group, images=tuple(group.images[i] for i in keep),
                                names=tuple(group.names[i] for i in keep), ranks=tuple(group.ranks[i] for i in keep)))
        else:
            dropped += 1
    return kept, dropped


def group_records(groups) -> tuple[list, list[list[int]]]:
    """The distinct (image, prompt) of `groups` as `Record`s in first-seen order, and each group's indices
    into them (what a scorer scores once per image)."""
    from ipce.datasets.sources import Record, generator_of

    index: dict[tuple[str, str], int] = {}
    records, members = [], []
    for group in groups:
        mine = []
        for image, name in zip(group.images, group.names):
            key = (os.path.normcase(str(image)), group.prompt)
            if key not in index:
                index[key] = len(records)
                records.append(Record(image=image, prompt=group.prompt, target=None, name=name,
                                      generator=generator_of(name), row=group.row, source=group.source))
            mine.append(index[key])
        members.append(mine)
    return records, members
