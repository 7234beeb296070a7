"""One reader per published annotation format -> a list of `Record`.

Published datasets (`DATASETS`, from the registry presets/presets.toml): agiqa1k, agiqa3k,
aigciqa2023, aigcqa30k, each read from `<data_root>/<folder>/` exactly as the publisher ships it; `load_custom` reads
any CSV/XLSX with a header.

Every table is read with pandas as text (`dtype=str`, `keep_default_na=False`,
so prompts such as "NA" or "null" survive) and every cell is checked here, so a
bad score, an empty prompt, a missing column, a duplicate image or a file that
is not UTF-8 raises `DataError` with one line naming the file and the row.
Row numbers are 1-based lines of the file, the header line included (for a
spreadsheet: the sheet's row number).
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ipce.datasets.aigciqa2023 import find_publisher_files, missing_message, publisher_items
from ipce.datasets.problems import Problem
from ipce.datasets.tables import clip as _clip
from ipce.datasets.tables import read_table
from ipce.errors import DataError, IpceError
from ipce.presets import registry

__all__ = ["Record", "DatasetInfo", "Annotations", "DATASETS", "ANNOTATION_KINDS", "DUPLICATE_POLICIES",
           "load_dataset", "load_custom", "apply_duplicates", "generator_of",
           "prefixed_prompt", "dataset_info"]

# Kinds carried by the DataError of a reader (`err.kind`).
ANNOTATION_KINDS: dict[str, str] = {
    "missing-file": "the dataset folder or annotation file is not there",
    "unreadable-file": "the annotation file cannot be parsed as CSV/XLSX",
    "encoding": "the CSV is not UTF-8",
    "missing-column": "a required column is absent",
    "bad-score": "a score is empty, not a number, NaN or infinite",
    "empty-prompt": "a prompt is empty",
    "empty-name": "an image name is empty",
    "duplicate": "an image is listed more than once (a warning: kept as the --duplicates policy says)",
    "bad-option": "an unknown preset, subset or target was asked for",
}

# every image suffix ipce reads (ipce.datasets.images decodes each; a GIF or TIFF gives its first frame)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")
_NAME_HEADERS = {"name", "image", "image_name", "imagename", "img", "img_name", "file", "filename",
                 "file_name", "path", "image_path"}
_PROMPT_HEADERS = {"prompt", "text", "caption", "prompts"}


@dataclass(frozen=True)
class Record:
    image: Path             # absolute path of the image file
    prompt: str
    target: float | None    # None when the file has no scores
    name: str               # the image name as written in the annotation file
    generator: str | None = None
    row: int | None = None  # 1-based line (header counted) or spreadsheet row
    source: Path | None = None


@dataclass(frozen=True)
class DatasetInfo:
    key: str
    folder: str                         # folder under the data root
    targets: dict[str, str]             # target name -> column
    default_target: str
    subsets: tuple[str, ...]
    url: str                            # where to download it
    description: str
    annotations: dict[str, tuple[str, ...]] = field(default_factory=dict)  # subset -> candidate files, preferred first
    image_dirs: dict[str, str] = field(default_factory=dict)              # subset -> image folder inside `folder`
    file_sources: dict[str, str] = field(default_factory=dict)  # file -> where it comes from, when not `url`
    form: str = "header"        # header: a table with a header row; ntire: header-less or with a header
    image_col: str = "name"     # the columns of a header table
    prompt_col: str = "prompt"
    generator_col: str | None = None
    strip_quotes: bool = False  # names and prompts wrapped in quotes inside the cells
    publisher_spreadsheets: bool = False  # without the annotation file: the publisher's spreadsheets
    train_subset: str = "all"   # the subset a training run reads

    def __hash__(self) -> int:
        return hash(self.key)


@dataclass
class Annotations:
    """What a reader found in an annotation file: the usable records, every row that cannot be used
    (`problems`, left out of `records`) and every published quirk kept as the policy says (`warnings`)."""
    records: list[Record]
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    source: Path | None = None
    rows: int = 0  # data rows in the file, usable or not

    def usable(self) -> list[Record]:
        """The records, or `DataError` naming the first bad row and how many more there are."""
        if self.problems:
            first = self.problems[0]
            more = len(self.problems) - 1
            tail = f" (and {more} more problem(s); `ipce check-data` lists them all)" if more else ""
            raise DataError(first.message + tail, kind=first.kind, path=first.path or None, row=first.row)
        return self.records


DUPLICATE_POLICIES = ("keep", "first", "mean")


def _dataset_info(key: str, data: dict) -> DatasetInfo:
    """A registry entry's [key.data] table as a DatasetInfo (lists become tuples)."""
    data = dict(data)
    data["subsets"] = tuple(data.get("subsets", ("all",)))
    data["annotations"] = {subset: tuple(files) for subset, files in data["annotations"].items()}
    return DatasetInfo(key=key, **data)


# The published datasets, as the registry (presets/presets.toml) describes them.
DATASETS: dict[str, DatasetInfo] = {key: _dataset_info(key, data) for key, data in registry.data_tables().items()}


# ----------------------------------------------------------------------------- helpers

def generator_of(name: str) -> str | None:
    """The generator encoded in a file name: the base name up to its first "_" (None without one)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return base.split("_", 1)[0] if "_" in base else None


def prefixed_prompt(prompt: str, prefix: str | None, generator: str | None) -> str:
    """The text a model sees: the prompt, or "{generator} {prompt}" for prefix 'generator'."""
    if prefix in (None, "none"):
        return prompt
    if prefix != "generator":
        raise IpceError(f"--prompt-prefix must be 'none' or 'generator', not {prefix!r}")
    if not generator:
        raise IpceError("--prompt-prefix generator needs each image's generator: a file name that starts with it "
                        "and '_' (DALLE3_0001.png), or in Python generators=[...] (one per image)")
    return f"{generator} {prompt}"


def dataset_info(preset: str) -> DatasetInfo:
    key = str(preset).lower().replace("-", "").replace("_", "")
    if key not in DATASETS:
        raise DataError(f"--preset {preset}: unknown dataset; choose one of {', '.join(DATASETS)}",
                        kind="bad-option")
    return DATASETS[key]


def load_rows(path: Path) -> tuple[list[list[str]], list[int]]:
    """All non-blank rows of a CSV/XLSX as lists of strings, with their 1-based row numbers."""
    return read_table(path)


def _column(header: list[str], wanted: str, path: Path, row: int, hint: str = "") -> int:
    for i, name in enumerate(header):
        if name == wanted:
            return i
    folded = wanted.strip().lower()
    for i, name in enumerate(header):
        if name.strip().lower() == folded:
            return i
    found = ", ".join(repr(h) for h in header) or "none"
    raise DataError(f"{path}, row {row}: missing column {wanted!r} (columns found: {found}); "
                    f"{hint or 'rename the column or choose it with the matching --*-col flag'}",
                    kind="missing-column", path=path, row=row)


def _score(raw, path: Path, row: int, column: str) -> float:
    """A score cell as a float (a float from a .mat file passes through the same checks)."""
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise DataError(f"{path}, row {row}: score {raw!r} in column {column!r} is NaN or infinite; "
                            "fix the value or remove the row", kind="bad-score", path=path, row=row)
        return raw
    raw = (raw or "").strip()
    if not raw:
        raise DataError(f"{path}, row {row}: empty score in column {column!r}; fill it in or remove the row",
                        kind="bad-score", path=path, row=row)
    try:
        value = float(raw)
    except ValueError:
        raise DataError(f"{path}, row {row}: score {_clip(raw, 30)!r} in column {column!r} is not a number; "
                        "fix the value or remove the row", kind="bad-score", path=path, row=row) from None
    if not math.isfinite(value):
        raise DataError(f"{path}, row {row}: score {raw!r} in column {column!r} is NaN or infinite; "
                        "fix the value or remove the row", kind="bad-score", path=path, row=row)
    return value


def _cell(cells: list[str], index: int | None) -> str:
    if index is None or index >= len(cells):
        return ""
    return cells[index]


def _row_problems(path: Path, row: int, name: str, prompt: str, score,
                  score_column: str | None) -> tuple[list[Problem], float | None]:
    """Every problem of one row (empty name, empty prompt, bad score: a row cut short has empty cells),
    and its score."""
    problems: list[Problem] = []
    if not name:
        problems.append(Problem(str(path), row, "empty-name",
                                f"{path}, row {row}: empty image name; fill it in or remove the row"))
    if not prompt.strip():
        problems.append(Problem(str(path), row, "empty-prompt",
                                f"{path}, row {row}: empty prompt for image {_clip(name)!r}; "
                                "fill in the prompt or remove the row", image=name))
    value = None
    if score is not None:
        try:
            value = _score(score, path, row, score_column)
        except DataError as err:
            problems.append(dataclasses.replace(Problem.of(err), image=name))
    return problems, value


def _build(path: Path, image_dir: Path, items, *, score_column: str | None = None, strip_quotes: bool = False,
           generator_from_name: bool = True, duplicates: str = "keep") -> Annotations:
    """items: (row, name, prompt, score cell or None, generator or None). Checks every row, collects
    every problem (a bad row is left out of the records), then applies the duplicate policy."""
    base = Path(os.path.abspath(image_dir))
    records: list[Record] = []
    problems: list[Problem] = []
    rows = 0
    for row, name, prompt, score, generator in items:
        rows += 1
        name = name.strip()
        if strip_quotes and len(prompt) >= 2 and prompt[0] == '"' and prompt[-1] == '"':
            prompt = prompt[1:-1]
        found, target = _row_problems(path, row, name, prompt, score, score_column)
        if found:
            problems.extend(found)
            continue
        image = Path(os.path.normpath(base / name.replace("\\", "/")))
        if generator is None and generator_from_name:
            generator = generator_of(name)
        records.append(Record(image=image, prompt=prompt, target=target, name=name, generator=generator,
                              row=row, source=path))
    records, warnings = apply_duplicates(records, duplicates, path)
    return Annotations(records=records, problems=problems, warnings=warnings, source=path, rows=rows)


def _value(target: float | None) -> str:
    return "no score" if target is None else f"score {target:.6g}"


def apply_duplicates(records: list[Record], policy: str, path) -> tuple[list[Record], list[Problem]]:
    """One warning per image listed more than once (its rows and values), and the records the policy keeps:
    'keep' every row as published, 'first' the first row, 'mean' the first row with the mean score."""
    if policy not in DUPLICATE_POLICIES:
        raise DataError(f"--duplicates {policy}: choose one of {', '.join(DUPLICATE_POLICIES)}",
                        kind="bad-option")
    groups: dict[str, list[int]] = {}
    for i, rec in enumerate(records):
        groups.setdefault(os.path.normcase(str(rec.image)), []).append(i)
    repeated = [members for members in groups.values() if len(members) > 1]
    if not repeated:
        return records, []
    done = {"keep": "kept every row as published (--duplicates first|mean for one row per image)",
            "first": "kept the first row (--duplicates first)",
            "mean": "kept one row with the mean score (--duplicates mean)"}[policy]
    warnings, drop, replace = [], set(), {}
    for members in repeated:
        first = records[members[0]]
        rows = " and ".join(f"{records[i].row} ({_value(records[i].target)})" for i in members)
        prompts = {records[i].prompt for i in members}
        differ = "; the prompts differ" if len(prompts) > 1 else ""
        warnings.append(Problem(str(path), first.row, "duplicate",
                                f"{path}: image {_clip(first.name)!r} is listed {len(members)} times, rows {rows}"
                                f"{differ}; {done}", image=first.name))
        if policy == "keep":
            continue
        drop.update(members[1:])
        targets = [records[i].target for i in members]
        if policy == "mean" and all(t is not None for t in targets):
            replace[members[0]] = dataclasses.replace(first, target=sum(targets) / len(targets))
    kept = [replace.get(i, rec) for i, rec in enumerate(records) if i not in drop]
    return kept, warnings


def _looks_like_header(cells: list[str], score_index: int | None) -> bool:
    first = _cell(cells, 0).strip()
    if first.lower() in _NAME_HEADERS:
        return True
    if first.lower().endswith(IMAGE_EXTENSIONS):
        return False
    if _cell(cells, 1).strip().lower() in _PROMPT_HEADERS:
        return True
    if score_index is not None and score_index < len(cells):
        try:
            float(cells[score_index])
        except ValueError:
            return True
    return False


# ----------------------------------------------------------------------------- readers

def _read_header_table(path: Path, image_dir: Path, name_col: str, prompt_col: str, target_col: str | None,
                       *, require_target: bool = True, strip_quotes: bool = False,
                       model_col: str | None = None, hint: str = "", duplicates: str = "keep") -> Annotations:
    rows, numbers = load_rows(path)
    if not rows:
        raise DataError(f"{path}: annotation file has no rows; re-download it", kind="unreadable-file", path=path)
    header, header_row = [h.strip() for h in rows[0]], numbers[0]
    i_name = _column(header, name_col, path, header_row, hint)
    i_prompt = _column(header, prompt_col, path, header_row, hint)
    i_model = _column(header, model_col, path, header_row, hint) if model_col else None
    i_target = None
    if target_col is not None:
        if require_target:
            i_target = _column(header, target_col, path, header_row, hint)
        else:
            try:
                i_target = _column(header, target_col, path, header_row, hint)
            except DataError:
                i_target = None
    target_name = header[i_target] if i_target is not None else None

    def items():
        for cells, row in zip(rows[1:], numbers[1:]):
            name = _cell(cells, i_name).strip()
            generator = None
            if i_model is not None:
                model = _cell(cells, i_model).strip()
                generator = model or None
                name = f"{model}/{name}" if model and name else name
            score = _cell(cells, i_target) if i_target is not None else None
            yield row, name, _cell(cells, i_prompt), score, generator

    return _build(path, image_dir, items(), score_column=target_name, strip_quotes=strip_quotes,
                  generator_from_name=i_model is None, duplicates=duplicates)


def _read_headerless_or_header(path: Path, image_dir: Path, require_target: bool,
                               duplicates: str = "keep") -> Annotations:
    """AIGCQA-30K: `name,prompt[,mos]`, a header row present or not (detected, never assumed)."""
    rows, numbers = load_rows(path)
    if not rows:
        raise DataError(f"{path}: annotation file has no rows; re-download it", kind="unreadable-file", path=path)
    width = max(len(r) for r in rows)
    has_header = _looks_like_header(rows[0], 2 if width >= 3 else None)
    if has_header:
        header = [h.strip() for h in rows[0]]
        i_name = _column(header, "name", path, numbers[0]) if "name" in [h.lower() for h in header] else 0
        i_prompt = _column(header, "prompt", path, numbers[0]) if "prompt" in [h.lower() for h in header] else 1
        if require_target:
            i_target = _column(header, "mos", path, numbers[0])
        else:
            lowered = [h.lower() for h in header]
            i_target = lowered.index("mos") if "mos" in lowered else None
        target_name = header[i_target] if i_target is not None else None
        body = list(zip(rows[1:], numbers[1:]))
    else:
        i_name, i_prompt = 0, 1
        if width < 2:
            raise DataError(f"{path}, row {numbers[0]}: expected the columns name,prompt"
                            f"{',mos' if require_target else ''} but found 1 column; "
                            "re-download the file", kind="missing-column", path=path, row=numbers[0])
        if width >= 3:
            i_target, target_name = 2, "mos (column 3)"
        elif require_target:
            raise DataError(f"{path}, row {numbers[0]}: no score column (expected name,prompt,mos); "
                            "use the training file info_train.csv", kind="missing-column",
                            path=path, row=numbers[0])
        else:
            i_target, target_name = None, None
        body = list(zip(rows, numbers))

    def items():
        for cells, row in body:
            score = None
            if i_target is not None:
                raw = _cell(cells, i_target)
                if require_target or raw.strip():
                    score = raw
            yield row, _cell(cells, i_name), _cell(cells, i_prompt), score, None

    return _build(path, image_dir, items(), score_column=target_name, duplicates=duplicates)


def _normalise_subset(info: DatasetInfo, subset: str | None) -> str:
    if info.subsets == ("all",):
        if subset in (None, "", "train", "all"):
            return "all"
    elif subset in info.subsets:
        return subset
    elif subset in (None, ""):
        return info.subsets[0]
    choices = ", ".join(info.subsets if info.subsets != ("all",) else ("all", "train"))
    raise DataError(f"--subset {subset}: {info.folder} has no such subset; choose one of {choices}",
                    kind="bad-option")


def _resolve_target(info: DatasetInfo, target: str | None) -> tuple[str, str]:
    name = target or info.default_target
    if name in info.targets:
        return name, info.targets[name]
    for key, column in info.targets.items():
        if name.lower() in (key.lower(), column.lower()):
            return key, column
    choices = ", ".join(f"{k} ({c})" for k, c in info.targets.items())
    raise DataError(f"--target {target}: {info.folder} has no such score; choose one of {choices}",
                    kind="bad-option")


def _where_to_get(info: DatasetInfo, names) -> str:
    """Where each of the files `names` really comes from (the publisher, or the winners' repository)."""
    by_source: dict[str, list[str]] = {}
    for name in names:
        by_source.setdefault(info.file_sources.get(name, info.url), []).append(name)
    return "; ".join(f"{', '.join(files)} from {url}" for url, files in by_source.items())


def _read_aigciqa2023_publisher(folder: Path, image_dir: Path, column: str, duplicates: str) -> Annotations:
    """No all_set.csv: the publisher's .mat files and spreadsheets, read into the same records."""
    if find_publisher_files(folder) is None:
        raise DataError(missing_message(folder), kind="missing-file", path=folder / "all_set.csv")
    source, items = publisher_items(folder, column)
    return _build(source, image_dir, items, score_column=column, generator_from_name=False, duplicates=duplicates)


def load_dataset(preset: str, data_root="data", subset: str = "train", target: str | None = None,
                 duplicates: str = "keep") -> Annotations:
    """Every row of a published dataset's annotations in `<data_root>/<folder>/`, read in its own format:
    the usable records, every bad row as a problem, every repeated image as a warning."""
    info = dataset_info(preset)
    subset = _normalise_subset(info, subset)
    _, column = _resolve_target(info, target)
    folder = Path(data_root) / info.folder
    candidates = info.annotations[subset]
    if not folder.is_dir():
        raise DataError(
            f"{folder}: dataset folder not found; download {info.folder} from {info.url} and unpack it so that "
            f"{folder / candidates[0]} exists (or pass --data-root DIR)", kind="missing-file", path=folder)
    path = next((folder / c for c in candidates if (folder / c).is_file()), None)
    if path is None and info.publisher_spreadsheets:
        return _read_aigciqa2023_publisher(folder, folder / info.image_dirs[subset], column, duplicates)
    if path is None:
        also = f" (also looked for {', '.join(candidates[1:])})" if len(candidates) > 1 else ""
        raise DataError(f"{folder / candidates[0]}: annotation file not found{also}; get "
                        f"{_where_to_get(info, candidates)}", kind="missing-file", path=folder / candidates[0])
    image_dir = folder / info.image_dirs[subset]
    hint = f"use the published file ({_where_to_get(info, [path.name])})"

    if info.form == "header":
        return _read_header_table(path, image_dir, info.image_col, info.prompt_col, column,
                                  strip_quotes=info.strip_quotes, model_col=info.generator_col, hint=hint,
                                  duplicates=duplicates)
    return _read_headerless_or_header(path, image_dir, require_target=(subset == info.train_subset), duplicates=duplicates)


def load_custom(annotations, images, image_col: str = "image", prompt_col: str = "prompt", target_col: str = "mos",
                require_target: bool = True, duplicates: str = "keep", hint: str = "") -> Annotations:
    """Any CSV/XLSX with a header row, read like `load_dataset`. Image names are relative to `images`
    (absolute ones are kept). With `require_target=False` a missing target column gives targets of None;
    the generator is the base name up to its first "_" (None without one). `hint`: the fix a missing
    column's message gives (default: rename it or choose it with the matching --*-col flag)."""
    path = Path(annotations)
    folder = Path(images)
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found; check --annotations", kind="missing-file",
                        path=path)
    if not folder.is_dir():
        raise DataError(f"{folder}: images folder not found; check --images", kind="missing-file", path=folder)
    return _read_header_table(path, folder, image_col, prompt_col, target_col, require_target=require_target,
                              duplicates=duplicates, hint=hint)

