"""Annotation tables as rows of text cells with their 1-based row numbers, each file parsed once.

A CSV is decoded as UTF-8 (a BOM allowed) and parsed by the standard `csv` module, whose reader
gives each record's line, so a row number counts the header and the lines of quoted newlines. A
spreadsheet's first sheet is read by pandas (openpyxl) as text; its row numbers are the sheet's.
Blank rows are left out. Every cell is a string ("" for an empty or missing one: a short row is
padded to the widest row before it).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from ipce.errors import DataError

SPREADSHEET_SUFFIXES = (".xlsx", ".xlsm", ".xls")


def is_spreadsheet(path: Path) -> bool:
    return path.suffix.lower() in SPREADSHEET_SUFFIXES


def clip(text, limit: int = 60) -> str:
    """`text` on one line, at most `limit` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_table(path: Path, fix: str = "re-save it as .xlsx or CSV") -> tuple[list[list[str]], list[int]]:
    """Every non-blank row of the CSV or spreadsheet `path` and its row number; `fix`: what a damaged
    spreadsheet's message tells the user to do."""
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found; check the path", kind="missing-file", path=path)
    if is_spreadsheet(path):
        return _read_sheet(path, fix)
    return _read_csv(path)


def _read_sheet(path: Path, fix: str) -> tuple[list[list[str]], list[int]]:
    import pandas as pd

    try:
        frame = pd.read_excel(path, header=None, dtype=str, keep_default_na=False, sheet_name=0)
    except Exception as exc:  # zipfile/openpyxl errors for a damaged file
        raise DataError(f"{path}: cannot read the spreadsheet ({clip(exc, 120)}); {fix}",
                        kind="unreadable-file", path=path) from None
    rows, numbers = [], []
    for index, values in zip(frame.index, frame.itertuples(index=False, name=None)):
        cells = ["" if v is None else str(v) for v in values]
        if any(c.strip() for c in cells):
            rows.append(cells)
            numbers.append(int(index) + 1)
    return rows, numbers


def _read_csv(path: Path) -> tuple[list[list[str]], list[int]]:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}, row {line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "re-save the file as UTF-8 (e.g. Excel 'CSV UTF-8' or iconv -f latin1 -t utf-8)",
            kind="encoding", path=path, row=line) from None
    if not text.strip():
        raise DataError(f"{path}: annotation file is empty; re-download it", kind="unreadable-file", path=path)
    rows, numbers, width = [], [], 0
    reader = csv.reader(io.StringIO(text, newline=""))
    end = 0
    try:
        for cells in reader:
            start, end = end + 1, reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if width and len(cells) > width:
                raise DataError(f"{path}, row {start}: cannot parse the CSV (expected {width} fields, saw "
                                f"{len(cells)}); check the quoting and the number of commas on that line",
                                kind="unreadable-file", path=path, row=start)
            width = max(width, len(cells))
            rows.append(cells)
            numbers.append(start)
    except csv.Error as exc:
        raise DataError(f"{path}, row {reader.line_num}: cannot parse the CSV ({clip(exc, 120)}); check the "
                        "quoting on that line", kind="unreadable-file", path=path, row=reader.line_num) from None
    return [cells + [""] * (width - len(cells)) for cells in rows], numbers
