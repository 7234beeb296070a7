"""Atomic file writes: the one way ipce writes a file.

Every write goes to a temporary file beside its target (same folder, so the rename is atomic)
and is renamed over the target (``os.replace``) once complete: a reader never sees half a file,
and a write that fails, or is interrupted (KeyboardInterrupt included), leaves the old file as
it was and no temporary file behind. The parent folder is created when missing.

The file comes out with the permissions a plain ``open(path, "w")`` would give it, 0o666
masked by the umask (0o644 under umask 022), whatever wrote it: some writers (safetensors)
replace the temporary file with one of their own, made 0o600.

``atomic_file(path)`` yields the temporary path, for code that writes by file name
(safetensors ``save_file``, ``torch.save``, ``zipfile``); ``write_bytes``, ``write_text``,
``write_csv``, ``write_json`` and ``save_torch`` are built on it. Text is UTF-8 and written
as given: no newline translation. ``fsync=True`` flushes the file to disk before the rename.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

__all__ = ["atomic_file", "write_bytes", "write_text", "write_csv", "write_json", "save_torch"]

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def _temporary_beside(path: Path) -> Path:
    """A new empty file beside `path` (``.<name>.<random>.tmp``, parent folder created), with the
    mode a plain ``open(path, "w")`` would give; the caller renames it onto `path` or removes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{os.urandom(4).hex()}.tmp")
        try:
            os.close(os.open(tmp, _FLAGS, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"{path.parent}: no free temporary name for {path.name}")


def _umask() -> int:
    """The process's umask, read from /proc (Linux) without changing it; elsewhere set and restored."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


@contextmanager
def atomic_file(path: str | Path, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends without an exception, rename it
    onto `path`. On any exception (KeyboardInterrupt included) the temporary file is removed and
    `path` is left as it was."""
    path = Path(path)
    tmp = _temporary_beside(path)
    try:
        yield tmp
        try:
            os.chmod(tmp, 0o666 & ~_umask())
        except OSError:  # a file system without modes (vfat, some network mounts): keep what it gives
            pass
        if fsync:
            _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes, *, fsync: bool = False) -> Path:
    """Write `data` to `path` atomically; returns ``Path(path)``."""
    path = Path(path)
    with atomic_file(path, fsync=fsync) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return path


def write_text(path: str | Path, text: str, *, fsync: bool = False) -> Path:
    """Write `text` (UTF-8, newlines as given) to `path` atomically; returns ``Path(path)``."""
    return write_bytes(path, text.encode("utf-8"), fsync=fsync)


def write_csv(path: str | Path, header: Sequence | None, rows: Iterable[Sequence], *,
              fsync: bool = False) -> Path:
    """Write `header` (unless None) and `rows` as CSV (the csv module's quoting, ``\\n`` line ends,
    UTF-8) to `path` atomically; returns ``Path(path)``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header is not None:
        writer.writerow(header)
    writer.writerows(rows)
    return write_text(path, buffer.getvalue(), fsync=fsync)


def _plain(obj):
    """Plain JSON types; NaN/inf become None (null), numpy values become Python ones."""
    if isinstance(obj, dict):
        return {(str(k) if isinstance(k, Path) else k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | Path, obj, indent: int = 2, *, fsync: bool = False) -> Path:
    """Write `obj` as JSON (UTF-8, non-ASCII as is, a trailing newline) to `path` atomically;
    returns ``Path(path)``. NaN and infinities are written as ``null`` (JSON has no NaN); numpy
    scalars and arrays, tuples and ``Path`` values become plain JSON types. An object JSON cannot
    hold raises TypeError before anything is written."""
    text = json.dumps(_plain(obj), indent=indent, ensure_ascii=False, allow_nan=False) + "\n"
    return write_text(path, text, fsync=fsync)


def save_torch(path: str | Path, obj, *, fsync: bool = False) -> Path:
    """``torch.save(obj)`` to `path` atomically; returns ``Path(path)``."""
    import torch

    path = Path(path)
    with atomic_file(path, fsync=fsync) as tmp:
        torch.save(obj, tmp)
    return path
