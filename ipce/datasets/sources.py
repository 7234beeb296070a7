"""One reader per published annotation format -> a list of `Record`.

Presets (`DATASETS`): agiqa1k, agiqa3k, aigciqa2023, aigcqa30k, each read from
`<data_root>/<folder>/` exactly as the publisher ships it; `read_custom` reads
any CSV/XLSX with a header.

Every table is read with pandas as text (`dtype=str`, `keep_default_na=False`,
so prompts such as "NA" or "null" survive) and every cell is checked here, so a
bad score, an empty prompt, a missing column, a duplicate image or a file that
is not UTF-8 raises `DataError` with one line naming the file and the row.
Row numbers are 1-based lines of the file, the header line included (for a
spreadsheet: the sheet's row number).
"""
from __future__ import annotations

import csv
import io
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ipce.datasets.images import make_data_error
from ipce.errors import DataError

__all__ = ["Record", "DatasetInfo", "DATASETS", "ANNOTATION_KINDS", "read_dataset", "read_custom",
           "generator_of", "dataset_info"]

# Kinds carried by the DataError of a reader (`err.kind`).
ANNOTATION_KINDS: dict[str, str] = {
    "missing-file": "the dataset folder or annotation file is not there",
    "unreadable-file": "the annotation file cannot be parsed as CSV/XLSX",
    "encoding": "the CSV is not UTF-8",
    "missing-column": "a required column is absent",
    "bad-score": "a score is empty, not a number, NaN or infinite",
    "empty-prompt": "a prompt is empty",
    "empty-name": "an image name is empty",
    "duplicate": "an image is listed twice",
    "bad-option": "an unknown preset, subset or target was asked for",
}

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

    def __hash__(self) -> int:
        return hash(self.key)


DATASETS: dict[str, DatasetInfo] = {
    "agiqa1k": DatasetInfo(
        key="agiqa1k", folder="AGIQA-1K", targets={"quality": "MOS"}, default_target="quality",
        subsets=("all",), url="https://github.com/lcysyzxdxc/AGIQA-1k-Database",
        description="AGIQA-1K: 1,080 text-to-image images (2 generators) with quality MOS",
        annotations={"all": ("all.csv", "AIGC_MOS_Zscore.xlsx")}, image_dirs={"all": "file"}),
    "agiqa3k": DatasetInfo(
        key="agiqa3k", folder="AGIQA-3K", targets={"quality": "mos_quality", "alignment": "mos_align"},
        default_target="quality", subsets=("all",), url="https://github.com/lcysyzxdxc/AGIQA-3k-Database",
        description="AGIQA-3K: 2,982 images from 6 generators with perceptual-quality and alignment MOS",
        annotations={"all": ("data.csv",)}, image_dirs={"all": ""}),
    "aigciqa2023": DatasetInfo(
        key="aigciqa2023", folder="AIGCIQA2023",
        targets={"quality": "mosz1", "authenticity": "mosz2", "correspondence": "mosz3"},
        default_target="quality", subsets=("all",), url="https://github.com/wangjiarui153/AIGCIQA2023",
        description="AIGCIQA2023: 2,400 images from 6 generators with quality, authenticity and "
                    "correspondence MOS (z-scores)",
        annotations={"all": ("all_set.csv",)}, image_dirs={"all": ""}),
    "aigcqa30k": DatasetInfo(
        key="aigcqa30k", folder="AIGCQA-30K-Image", targets={"quality": "mos"}, default_target="quality",
        subsets=("train", "val", "test"), url="https://www.modelscope.cn/datasets/lcysyzxdxc/AIGCQA-30K-Image",
        description="AIGCQA-30K-Image (AIGIQA-20K, NTIRE 2024): 14,000 train / 2,000 val / 4,000 test images "
                    "from 15 generators; scores published for train only",
        annotations={s: (f"info_{s}.csv", f"info_{s}.xlsx") for s in ("train", "val", "test")},
        image_dirs={s: s for s in ("train", "val", "test")}),
}


# ----------------------------------------------------------------------------- helpers

def generator_of(name: str) -> str | None:
    """The generator encoded in a file name: the base name up to its first "_" (None without one)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return base.split("_", 1)[0] if "_" in base else None


def dataset_info(preset: str) -> DatasetInfo:
    key = str(preset).lower().replace("-", "").replace("_", "")
    if key not in DATASETS:
        raise make_data_error(f"--preset {preset}: unknown dataset; choose one of {', '.join(DATASETS)}",
                              kind="bad-option")
    return DATASETS[key]


def _clip(text: str, limit: int = 60) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _where(path, row) -> str:
    return f"{path}, row {row}" if row is not None else f"{path}"


def _is_excel(path: Path) -> bool:
    return path.suffix.lower() in (".xlsx", ".xlsm", ".xls")


def _line_starts(text: str) -> list[int] | None:
    """1-based starting line of each non-blank CSV record (as pandas sees them)."""
    starts: list[int] = []
    end = 0
    try:
        reader = csv.reader(io.StringIO(text))
        for fields in reader:
            start, end = end + 1, reader.line_num
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            starts.append(start)
    except csv.Error:
        return None
    return starts


def _load_rows(path: Path) -> tuple[list[list[str]], list[int]]:
    """All non-blank rows of a CSV/XLSX as lists of strings, with their 1-based row numbers."""
    import pandas as pd

    if not path.is_file():
        raise make_data_error(f"{path}: annotation file not found; check the path", kind="missing-file", path=path)
    if _is_excel(path):
        try:
            frame = pd.read_excel(path, header=None, dtype=str, keep_default_na=False, sheet_name=0)
        except Exception as exc:  # zipfile/openpyxl errors for damaged files
            raise make_data_error(f"{path}: cannot read the spreadsheet ({_clip(exc, 120)}); "
                                  "re-save it as .xlsx or CSV", kind="unreadable-file", path=path) from None
        rows, numbers = [], []
        for index, values in zip(frame.index, frame.itertuples(index=False, name=None)):
            cells = ["" if v is None else str(v) for v in values]
            if not any(c.strip() for c in cells):
                continue
            rows.append(cells)
            numbers.append(int(index) + 1)
        return rows, numbers

    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise make_data_error(
            f"{path}, row {line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "re-save the file as UTF-8 (e.g. Excel 'CSV UTF-8' or iconv -f latin1 -t utf-8)",
            kind="encoding", path=path, row=line) from None
    if not text.strip():
        raise make_data_error(f"{path}: annotation file is empty; re-download it", kind="unreadable-file", path=path)
    try:
        frame = pd.read_csv(io.StringIO(text), header=None, dtype=str, keep_default_na=False,
                            skip_blank_lines=True)
    except Exception as exc:  # pandas ParserError etc.
        found = re.search(r"line (\d+)", str(exc))
        row = int(found.group(1)) if found else None
        raise make_data_error(f"{_where(path, row)}: cannot parse the CSV ({_clip(exc, 120)}); "
                              "check the quoting and the number of commas on that line",
                              kind="unreadable-file", path=path, row=row) from None
    rows = [["" if v is None else str(v) for v in values] for values in frame.itertuples(index=False, name=None)]
    numbers = _line_starts(text)
    if numbers is None or len(numbers) != len(rows):
        numbers = list(range(1, len(rows) + 1))
    return rows, numbers


def _column(header: list[str], wanted: str, path: Path, row: int, hint: str = "") -> int:
    for i, name in enumerate(header):
        if name == wanted:
            return i
    folded = wanted.strip().lower()
    for i, name in enumerate(header):
        if name.strip().lower() == folded:
            return i
    found = ", ".join(repr(h) for h in header) or "none"
    raise make_data_error(f"{path}, row {row}: missing column {wanted!r} (columns found: {found}); "
                          f"{hint or 'rename the column or choose it with the matching --*-col flag'}",
                          kind="missing-column", path=path, row=row)


def _score(text: str, path: Path, row: int, column: str) -> float:
    raw = text.strip()
    if not raw:
        raise make_data_error(f"{path}, row {row}: empty score in column {column!r}; fill it in or remove the row",
                              kind="bad-score", path=path, row=row)
    try:
        value = float(raw)
    except ValueError:
        raise make_data_error(f"{path}, row {row}: score {_clip(raw, 30)!r} in column {column!r} is not a number; "
                              "fix the value or remove the row", kind="bad-score", path=path, row=row) from None
    if not math.isfinite(value):
        raise make_data_error(f"{path}, row {row}: score {raw!r} in column {column!r} is NaN or infinite; "
                              "fix the value or remove the row", kind="bad-score", path=path, row=row)
    return value


def _cell(cells: list[str], index: int | None) -> str:
    if index is None or index >= len(cells):
        return ""
    return cells[index]


def _build(path: Path, image_dir: Path, items, *, strip_quotes: bool = False,
           generator_from_name: bool = True) -> list[Record]:
    """items: (row, name, prompt, score_or_None, generator_or_None); validates and makes Records."""
    base = Path(os.path.abspath(image_dir))
    seen: dict[str, int] = {}
    records: list[Record] = []
    for row, name, prompt, target, generator in items:
        name = name.strip()
        if not name:
            raise make_data_error(f"{path}, row {row}: empty image name; fill it in or remove the row",
                                  kind="empty-name", path=path, row=row)
        if strip_quotes and len(prompt) >= 2 and prompt[0] == '"' and prompt[-1] == '"':
            prompt = prompt[1:-1]
        if not prompt.strip():
            raise make_data_error(f"{path}, row {row}: empty prompt for image {_clip(name)!r}; "
                                  "fill in the prompt or remove the row", kind="empty-prompt", path=path, row=row)
        image = Path(os.path.normpath(base / name.replace("\\", "/")))
        key = os.path.normcase(str(image))
        if key in seen:
            raise make_data_error(f"{path}, row {row}: image {_clip(name)!r} is listed twice (first at row "
                                  f"{seen[key]}); remove one of the rows", kind="duplicate", path=path, row=row)
        seen[key] = row
        if generator is None and generator_from_name:
            generator = generator_of(name)
        records.append(Record(image=image, prompt=prompt, target=target, name=name, generator=generator,
                              row=row, source=path))
    return records


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
                       model_col: str | None = None, hint: str = "") -> list[Record]:
    rows, numbers = _load_rows(path)
    if not rows:
        raise make_data_error(f"{path}: annotation file has no rows; re-download it", kind="unreadable-file", path=path)
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
            score = _score(_cell(cells, i_target), path, row, target_name) if i_target is not None else None
            yield row, name, _cell(cells, i_prompt), score, generator

    return _build(path, image_dir, items(), strip_quotes=strip_quotes, generator_from_name=i_model is None)


def _read_headerless_or_header(path: Path, image_dir: Path, require_target: bool) -> list[Record]:
    """AIGCQA-30K: `name,prompt[,mos]`, a header row present or not (detected, never assumed)."""
    rows, numbers = _load_rows(path)
    if not rows:
        raise make_data_error(f"{path}: annotation file has no rows; re-download it", kind="unreadable-file", path=path)
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
            raise make_data_error(f"{path}, row {numbers[0]}: expected the columns name,prompt"
                                  f"{',mos' if require_target else ''} but found 1 column; "
                                  "re-download the file", kind="missing-column", path=path, row=numbers[0])
        if width >= 3:
            i_target, target_name = 2, "mos (column 3)"
        elif require_target:
            raise make_data_error(f"{path}, row {numbers[0]}: no score column (expected name,prompt,mos); "
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
                    score = _score(raw, path, row, target_name)
            yield row, _cell(cells, i_name), _cell(cells, i_prompt), score, None

    return _build(path, image_dir, items())


def _normalise_subset(info: DatasetInfo, subset: str | None) -> str:
    if info.subsets == ("all",):
        if subset in (None, "", "train", "all"):
            return "all"
    elif subset in info.subsets:
        return subset
    elif subset in (None, ""):
        return info.subsets[0]
    choices = ", ".join(info.subsets if info.subsets != ("all",) else ("all", "train"))
    raise make_data_error(f"--subset {subset}: {info.folder} has no such subset; choose one of {choices}",
                          kind="bad-option")


def _resolve_target(info: DatasetInfo, target: str | None) -> tuple[str, str]:
    name = target or info.default_target
    if name in info.targets:
        return name, info.targets[name]
    for key, column in info.targets.items():
        if name.lower() in (key.lower(), column.lower()):
            return key, column
    choices = ", ".join(f"{k} ({c})" for k, c in info.targets.items())
    raise make_data_error(f"--target {target}: {info.folder} has no such score; choose one of {choices}",
                          kind="bad-option")


def read_dataset(preset: str, data_root="data", subset: str = "train", target: str | None = None) -> list[Record]:
    """Read a published dataset from `<data_root>/<folder>/` in its own annotation format."""
    info = dataset_info(preset)
    subset = _normalise_subset(info, subset)
    _, column = _resolve_target(info, target)
    folder = Path(data_root) / info.folder
    candidates = info.annotations[subset]
    if not folder.is_dir():
        raise make_data_error(
            f"{folder}: dataset folder not found; download {info.folder} from {info.url} and unpack it so that "
            f"{folder / candidates[0]} exists (or pass --data-root DIR)", kind="missing-file", path=folder)
    path = next((folder / c for c in candidates if (folder / c).is_file()), None)
    if path is None:
        also = f" (also looked for {', '.join(candidates[1:])})" if len(candidates) > 1 else ""
        raise make_data_error(f"{folder / candidates[0]}: annotation file not found{also}; get it from {info.url}",
                              kind="missing-file", path=folder / candidates[0])
    image_dir = folder / info.image_dirs[subset]
    hint = f"use the publisher's file from {info.url}"

    if info.key == "agiqa1k":
        return _read_header_table(path, image_dir, "Image", "Prompt", column, hint=hint)
    if info.key == "agiqa3k":
        return _read_header_table(path, image_dir, "name", "prompt", column, hint=hint)
    if info.key == "aigciqa2023":
        return _read_header_table(path, image_dir, "image_name", "prompt", column, strip_quotes=True,
                                  model_col="model", hint=hint)
    return _read_headerless_or_header(path, image_dir, require_target=(subset == "train"))


def read_custom(annotations, images, image_col: str = "image", prompt_col: str = "prompt", target_col: str = "mos",
                require_target: bool = True) -> list[Record]:
    """Any CSV/XLSX with a header row. Image names are relative to `images` (absolute ones are kept).
    With `require_target=False` a missing target column gives targets of None; the generator is the
    base name up to its first "_" (None without one)."""
    path = Path(annotations)
    folder = Path(images)
    if not path.is_file():
        raise make_data_error(f"{path}: annotation file not found; check --annotations", kind="missing-file",
                              path=path)
    if not folder.is_dir():
        raise make_data_error(f"{folder}: images folder not found; check --images", kind="missing-file", path=folder)
    return _read_header_table(path, folder, image_col, prompt_col, target_col, require_target=require_target)
