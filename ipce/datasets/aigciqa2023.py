"""AIGCIQA2023 as its publisher ships it: three MATLAB score vectors plus two spreadsheets.

Publisher (https://github.com/wangjiarui153/AIGCIQA2023):
- `DATA/MOS/mosz1.mat`, `mosz2.mat`, `mosz3.mat`: variable `MOSz`, one value per image
  (quality, authenticity, correspondence; about 0..100);
- `pic-index.xlsx` (no header): `model, image_name`, one row per image, in the order of `MOSz`;
- `AIGCIQA2023_Prompts.xlsx`: `style, object class, prompt`, one row per prompt (header optional).
Both spreadsheets may sit at the dataset folder's top level or under `DATA/`.

The challenge winners' `all_set.csv` (https://github.com/pf0607/IPCE, folder data/) holds the
same scores divided by 20, so targets here are divided by 20 too: both forms give equal records.
"""
from __future__ import annotations

import math
from pathlib import Path

from ipce.datasets.tables import read_table
from ipce.errors import DataError

__all__ = ["find_publisher_files", "publisher_items", "missing_message", "MAT_FILES", "SCALE"]

PUBLISHER_URL = "https://github.com/wangjiarui153/AIGCIQA2023"
WINNERS_URL = "https://github.com/pf0607/IPCE"
MAT_FILES = ("mosz1", "mosz2", "mosz3")  # quality, authenticity, correspondence
MAT_DIR = Path("DATA") / "MOS"
PIC_INDEX = "pic-index.xlsx"
PROMPTS = "AIGCIQA2023_Prompts.xlsx"
SCALE = 20.0  # all_set.csv = publisher's MOS / 20
_FROM_PUBLISHER = f"get it from the publisher ({PUBLISHER_URL})"
_PROMPT_HEADERS = {"prompt", "prompts", "text"}


def _spreadsheet(folder: Path, name: str) -> Path | None:
    """The spreadsheet at the top level or under DATA/ (top level first)."""
    for place in (folder / name, folder / "DATA" / name):
        if place.is_file():
            return place
    return None


def find_publisher_files(folder: Path) -> dict | None:
    """{"mat_dir", "pic_index", "prompts"}: paths found (None for a part that is absent);
    None when no part of the publisher's layout is there."""
    folder = Path(folder)
    mat_dir = folder / MAT_DIR
    found = {
        "mat_dir": mat_dir if any((mat_dir / f"{m}.mat").is_file() for m in MAT_FILES) else None,
        "pic_index": _spreadsheet(folder, PIC_INDEX),
        "prompts": _spreadsheet(folder, PROMPTS),
    }
    return found if any(found.values()) else None


def missing_message(folder: Path) -> str:
    """The one line for a folder that has neither all_set.csv nor the publisher's files."""
    folder = Path(folder)
    return (f"{folder}: no AIGCIQA2023 annotations found; put in this folder either all_set.csv "
            f"(from the challenge winners' repository {WINNERS_URL}, folder data/) or the publisher's "
            f"{MAT_DIR.as_posix()}/mosz1.mat, mosz2.mat, mosz3.mat with {PIC_INDEX} and {PROMPTS} "
            f"(from {PUBLISHER_URL})")


def _read_sheet(path: Path) -> list[tuple[int, list[str]]]:
    """Non-blank rows of the first sheet as (1-based sheet row, cells)."""
    rows, numbers = read_table(path, fix=f"{_FROM_PUBLISHER} again")
    return list(zip(numbers, rows))


def _need(path: Path | None, folder: Path, name: str) -> Path:
    if path is None:
        raise DataError(f"{folder / name}: not found (also looked in {folder / 'DATA' / name}); "
                        f"{_FROM_PUBLISHER}", kind="missing-file", path=folder / name)
    return path


def _is_header(cells: list[str]) -> bool:
    """A header row names its prompt column; the published file has none."""
    return len(cells) >= 3 and cells[2].strip().lower() in _PROMPT_HEADERS


def _prompts(path: Path) -> list[str]:
    """Prompt texts in file order; position 0 is the first prompt row (header skipped)."""
    rows = _read_sheet(path)
    if rows and _is_header(rows[0][1]):
        rows = rows[1:]
    for number, cells in rows:
        if len(cells) < 3:
            raise DataError(f"{path}, row {number}: expected the columns style, object class, prompt "
                            f"but found {len(cells)}; {_FROM_PUBLISHER}", kind="missing-column",
                            path=path, row=number)
    # Kept as published (only the cell itself): all_set.csv copied the same text.
    return [cells[2] for _, cells in rows]


def _pictures(path: Path) -> list[tuple[int, str, str]]:
    """(sheet row, model, image_name) for each image of pic-index.xlsx."""
    pictures = []
    for number, cells in _read_sheet(path):
        if len(cells) < 2:
            raise DataError(f"{path}, row {number}: expected the columns model, image_name but found "
                            f"{len(cells)}; {_FROM_PUBLISHER}", kind="missing-column", path=path, row=number)
        pictures.append((number, cells[0].strip(), cells[1].strip()))
    if not pictures:
        raise DataError(f"{path}: no rows; {_FROM_PUBLISHER} again", kind="unreadable-file", path=path)
    return pictures


def _scores(path: Path, count: int, index_path: Path) -> list[float]:
    """The MOSz vector of one .mat file, checked against pic-index's row count."""
    import numpy as np
    from scipy.io import loadmat

    if not path.is_file():
        raise DataError(f"{path}: not found; {_FROM_PUBLISHER} (folder {MAT_DIR.as_posix()})",
                        kind="missing-file", path=path)
    try:
        content = loadmat(str(path))
    except Exception as exc:  # scipy raises several types for non-MATLAB or damaged files
        raise DataError(f"{path}: cannot read the MATLAB file ({exc}); {_FROM_PUBLISHER} again",
                        kind="unreadable-file", path=path) from None
    if "MOSz" not in content:
        found = ", ".join(k for k in content if not k.startswith("__")) or "none"
        raise DataError(f"{path}: no variable 'MOSz' (variables found: {found}); {_FROM_PUBLISHER} again",
                        kind="missing-column", path=path)
    try:
        values = np.asarray(content["MOSz"], dtype=float)
    except (TypeError, ValueError):
        raise DataError(f"{path}: variable 'MOSz' is not numeric; {_FROM_PUBLISHER} again",
                        kind="bad-score", path=path) from None
    if values.ndim > 2 or (values.ndim == 2 and min(values.shape) != 1):
        raise DataError(f"{path}: variable 'MOSz' has shape {values.shape}, expected one value per image; "
                        f"{_FROM_PUBLISHER} again", kind="unreadable-file", path=path)
    values = values.ravel()
    if len(values) != count:
        raise DataError(f"{path}: 'MOSz' has {len(values)} values but {index_path} lists {count} images; "
                        f"use the .mat files and {PIC_INDEX} of the same release ({PUBLISHER_URL})",
                        kind="unreadable-file", path=path)
    for i, value in enumerate(values.tolist()):
        if not math.isfinite(value):
            raise DataError(f"{path}, index {i + 1}: 'MOSz' value {value} is NaN or infinite; "
                            f"{_FROM_PUBLISHER} again", kind="bad-score", path=path, row=i + 1)
    return values.tolist()


def _prompt_of(image_name: str, prompts: list[str], index_path: Path, row: int, prompts_path: Path) -> str:
    """The three digits before the dash are the prompt's 0-based row in the prompts file."""
    head = image_name[:3]
    if not (head.isdigit() and int(head) < len(prompts)):
        raise DataError(f"{index_path}, row {row}: image {image_name!r} does not start with the 3-digit "
                        f"number of a prompt row of {prompts_path} (000..{len(prompts) - 1:03d}); "
                        f"{_FROM_PUBLISHER} again", kind="unreadable-file", path=index_path, row=row)
    return prompts[int(head)]


def publisher_items(folder: Path, target_column: str) -> tuple[Path, list[tuple[int, str, str, float, str]]]:
    """(pic-index.xlsx, items): one (row, "model/image_name", prompt, MOS / 20, model) per image."""
    folder = Path(folder)
    if target_column not in MAT_FILES:
        raise DataError(f"{target_column}: not an AIGCIQA2023 score; choose one of {', '.join(MAT_FILES)}",
                        kind="bad-option")
    found = find_publisher_files(folder)
    if found is None:
        raise DataError(missing_message(folder), kind="missing-file", path=folder / "all_set.csv")
    index_path = _need(found["pic_index"], folder, PIC_INDEX)
    prompts_path = _need(found["prompts"], folder, PROMPTS)
    pictures = _pictures(index_path)
    prompts = _prompts(prompts_path)
    scores = _scores(folder / MAT_DIR / f"{target_column}.mat", len(pictures), index_path)
    items = []
    for (row, model, image_name), value in zip(pictures, scores):
        prompt = _prompt_of(image_name, prompts, index_path, row, prompts_path)
        items.append((row, f"{model}/{image_name}", prompt, value / SCALE, model))
    return index_path, items
