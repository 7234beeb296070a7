"""CSV files written row by row, for long runs that must lose little when they stop.

`CsvAppender` appends rows to a CSV and hands each chunk of rows to the operating system in
one write as soon as it is complete (`write_rows`), and to the disk (fsync) at most every
`fsync_seconds`: after a kill -9 the file holds every chunk written so far, after a power
cut every chunk but the last few seconds' worth. What a crash can leave is a torn last line;
`cut_torn_tail` removes it, so the file is valid CSV up to its last complete row.

`stream_csv` writes a whole CSV from an iterator of rows atomically (ipce.utils.io.atomic_file)
without holding the rows in memory; its bytes are those of ipce.utils.io.write_csv.

Rows must not hold line breaks (each row is one line, so that the tail can be cut at the
last line break); `one_line` flattens a text that might.
"""
from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from ipce.utils.io import atomic_file

__all__ = ["CsvAppender", "cut_torn_tail", "read_csv_rows", "stream_csv", "one_line"]


def one_line(text: str) -> str:
    """`text` with its line breaks replaced by spaces."""
    return " ".join(str(text).splitlines())


def cut_torn_tail(path: str | Path) -> int:
    """Truncate `path` after its last line break (a row torn by a crash); returns the bytes removed."""
    path = Path(path)
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        end, step = size, 1 << 16
        while end > 0:  # read backwards until a line break is found
            start = max(0, end - step)
            f.seek(start)
            block = f.read(end - start)
            cut = block.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            end = start
        else:
            keep = 0
        if keep < size:
            f.truncate(keep)
        return size - keep


def read_csv_rows(path: str | Path) -> Iterator[list[str]]:
    """The rows of a CSV file (header included), one at a time."""
    with open(path, newline="", encoding="utf-8") as f:
        yield from csv.reader(f)


class CsvAppender:
    """Appends rows to a CSV file (created with `header` when new or empty)."""

    def __init__(self, path: str | Path, header: Sequence, fsync_seconds: float = 10.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync_seconds = fsync_seconds
        # unbuffered binary: every write_rows is one write() of whole lines, never a part held back
        self._file = open(self.path, "ab", buffering=0)
        self._synced = time.monotonic()
        if self._file.tell() == 0:
            self.write_rows([header])

    def write_rows(self, rows: Iterable[Sequence]) -> None:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(rows)
        data = buffer.getvalue().encode("utf-8")
        view = memoryview(data)
        while view:  # write() may take less than asked
            view = view[self._file.write(view):]
        if time.monotonic() - self._synced >= self.fsync_seconds:
            self.sync()

    def sync(self) -> None:
        os.fsync(self._file.fileno())
        self._synced = time.monotonic()

    def close(self) -> None:
        if not self._file.closed:
            self.sync()
            self._file.close()

    def __enter__(self) -> "CsvAppender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def stream_csv(path: str | Path, header: Sequence | None, rows: Iterable[Sequence], *,
               fsync: bool = False) -> Path:
    """Write `header` (unless None) and `rows` as CSV to `path` atomically, one row at a time; the
    same bytes as ipce.utils.io.write_csv. Returns ``Path(path)``."""
    path = Path(path)
    with atomic_file(path, fsync=fsync) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            if header is not None:
                writer.writerow(header)
            writer.writerows(rows)
    return path
