"""What a streaming `ipce predict` keeps on disk while it runs, so that it can stop at any point
and resume: the settings sidecar and the part files.

- `<out>.ipce.json`, the settings the scores depend on (checkpoint files by size and SHA-256,
  view settings, precision, prompt prefixes, combine rule, batch size, the input by a hash of
  its rows) and, once the run is over, its counts. `--resume` into an output made with other
  settings is refused, naming the first setting that differs.
- `<out>.parts/aNNN-rMMM.csv`, one file per attempt (N: 0 for the first run, then one more per
  resume) and rank (M): `index,problem,score,score_1,...`, the record's position, the problem of
  an unreadable image (else empty), the combined and per-model scores at full precision (repr).

The unit of work is a block: `batch_size` consecutive records, always scored as one batch,
whichever rank or attempt scores it, so that a score never depends on how a run was split or
interrupted. A block's rows go to its part file in one write: after a crash a block is either
all there, absent, or torn (its complete rows kept, the torn line cut); a block not all there
is scored again. Each part file is in ascending index order, so `merged` reads them all at
once in annotation order, holding one row per file.
"""
from __future__ import annotations

import hashlib
import heapq
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ipce.errors import IpceError
from ipce.utils.io import write_json
from ipce.utils.stream import CsvAppender, cut_torn_tail, read_csv_rows

FORMAT = "ipce predict parts 1"


# ----------------------------------------------------------------------------- settings

def file_identity(path: str | Path) -> dict:
    """{path, size, sha256} of a file."""
    path = Path(path)
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256")
    return {"path": str(path.resolve()), "size": path.stat().st_size, "sha256": digest.hexdigest()}


def folder_identity(path: str | Path) -> dict:
    """{path, size, sha256} of a model folder (`ipce export`): its files' names and contents, in name order."""
    path = Path(path)
    digest, size = hashlib.sha256(), 0
    for file in sorted(p for p in path.iterdir() if p.is_file() and p.name != "README.md"):  # the card may change
        digest.update(json.dumps([file.name, file_identity(file)["sha256"]]).encode("utf-8") + b"\n")
        size += file.stat().st_size
    return {"path": str(path.resolve()), "size": size, "sha256": digest.hexdigest()}


def checkpoint_identity(checkpoint: str, weights: str | None) -> dict:
    """A checkpoint file or model folder by its contents; a backbone name (zero-shot, random tiny) by
    its name and the weight file it was built from."""
    if Path(checkpoint).is_file():
        return file_identity(checkpoint)
    if Path(checkpoint).is_dir():
        return folder_identity(checkpoint)
    return {"name": str(checkpoint), "weights": file_identity(weights) if weights else None}


def input_identity(records) -> dict:
    """The records by count and a hash of (name, prompt, target, generator) in order: the same
    annotations read from another folder are the same input."""
    digest = hashlib.sha256()
    for r in records:
        digest.update(json.dumps([r.name, r.prompt, r.target, r.generator]).encode("utf-8") + b"\n")
    return {"records": len(records), "sha256": digest.hexdigest()}


def run_settings(scorer, checkpoints, weights, records, batch_size: int) -> dict:
    """Everything a score in the output depends on, as plain values."""
    members = scorer.members
    return {
        "checkpoint": [checkpoint_identity(str(c), weights) for c in checkpoints],
        "resize": [m.views.resize for m in members],
        "patches": [m.views.patches for m in members],
        # bf16 image weights move scores as a precision does: named with it (absent from older sidecars)
        "precision": scorer.precision + (", bf16 image weights" if getattr(scorer, "bf16_weights", False) else ""),
        "runtime": scorer.members[0].runtime,
        "prompt_prefix": [m.prompt_prefix or "none" for m in members],
        "combine": scorer.combine if len(members) > 1 else None,
        "batch_size": batch_size,
        "input": input_identity(records),
    }


def _shown(key: str, value) -> str:
    if key == "checkpoint":
        return ", ".join(f"{c.get('path') or c.get('name')} ({c['sha256'][:12]})" if "sha256" in c
                         else f"{c['name']}" + (f" with {c['weights']['path']}" if c.get("weights") else "")
                         for c in value)
    if key == "input":
        return f"{value['records']} records, rows hash {value['sha256'][:12]}"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def _same(key: str, saved, now) -> bool:
    if key == "checkpoint":  # the file's contents, wherever it lies now
        strip = [{k: v for k, v in c.items() if k != "path"} if "sha256" in c else c for c in saved or []]
        return strip == [{k: v for k, v in c.items() if k != "path"} if "sha256" in c else c for c in now]
    if key == "runtime":  # outputs of before --runtime were PyTorch's
        return (saved or "torch") == now
    return saved == now


SETTING_NAMES = {"checkpoint": "--checkpoint", "resize": "--resize", "patches": "--patches",
                 "precision": "--precision", "runtime": "--runtime", "prompt_prefix": "--prompt-prefix", "combine": "--combine",
                 "batch_size": "--batch-size", "input": "input (the data flags' records)",
                 "levels": "--levels"}


def differing_setting(saved: dict, now: dict) -> str | None:
    """One line naming the first setting of `now` that differs from `saved`, or None."""
    for key, now_value in now.items():
        if not _same(key, saved.get(key), now_value):
            old = saved.get(key)
            return (f"{SETTING_NAMES[key]} differs: the output was made with {_shown(key, old) if old is not None else 'none'}, "
                    f"this run has {_shown(key, now_value)}")
    return None


# ----------------------------------------------------------------------------- blocks

def block_indices(block: int, size: int, n: int) -> list[int]:
    return list(range(block * size, min(n, (block + 1) * size)))


def blocks_left(done: bytearray, size: int) -> list[int]:
    """The blocks with at least one record not in `done` (done[i] == 1: record i has its row)."""
    n = len(done)
    return [b for b in range((n + size - 1) // size) if not all(done[b * size:min(n, (b + 1) * size)])]


# ----------------------------------------------------------------------------- the files

@dataclass
class Resumed:
    attempt: int        # the number of this run's part files
    done: bytearray     # done[i] == 1: record i has its row in a part file
    already: int        # how many records had their row


class PartStore:
    """The sidecar and part files of one output file."""

    def __init__(self, out: str | Path):
        out = Path(out)
        self.out = out
        self.settings_path = out.with_name(out.name + ".ipce.json")
        self.folder = out.with_name(out.name + ".parts")

    def header(self, models: int) -> list[str]:
        return ["index", "problem", "score"] + [f"score_{m + 1}" for m in range(models)]

    def read_settings(self) -> dict | None:
        if not self.settings_path.is_file():
            return None
        try:
            saved = json.loads(self.settings_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise IpceError(f"{self.settings_path}: unreadable ({err}); rerun without --resume to start over") from None
        if not isinstance(saved, dict) or saved.get("format") != FORMAT:
            raise IpceError(f"{self.settings_path}: not an ipce predict settings file; rerun without --resume")
        return saved

    def write_settings(self, settings: dict, **state) -> None:
        write_json(self.settings_path, {"format": FORMAT, "settings": settings, **state}, fsync=True)

    def clear(self) -> bool:
        """Remove the part files of an earlier run; True when there were any."""
        had = self.folder.is_dir() and any(self.folder.iterdir())
        shutil.rmtree(self.folder, ignore_errors=True)
        return had

    def files(self) -> list[Path]:
        return sorted(self.folder.glob("a*-r*.csv")) if self.folder.is_dir() else []

    def scan(self, n: int) -> Resumed:
        """Cut every part file's torn tail and mark the records they hold."""
        done, attempts = bytearray(n), []
        for path in self.files():
            attempts.append(int(path.name[1:path.name.index("-")]))
            cut_torn_tail(path)
            for row in read_csv_rows(path):
                if row[0] == "index":  # the header
                    continue
                index = int(row[0])
                if not 0 <= index < n:
                    raise IpceError(f"{path}: record {index} out of range for {n} records; rerun without --resume")
                done[index] = 1
        return Resumed(attempt=max(attempts, default=-1) + 1, done=done, already=sum(done))

    def appender(self, attempt: int, rank: int, models: int) -> CsvAppender:
        return CsvAppender(self.folder / f"a{attempt:03d}-r{rank:03d}.csv", self.header(models))

    def merged(self) -> Iterator[tuple[int, str, list[str]]]:
        """(index, problem, [score, score_1, ...]) of every record with a row, ascending, each once."""
        def rows(path):
            for row in read_csv_rows(path):
                if row[0] != "index":
                    yield int(row[0]), row[1], row[2:]

        last = -1
        for index, problem, scores in heapq.merge(*(rows(p) for p in self.files()), key=lambda r: r[0]):
            if index != last:  # a block scored again after a torn write: its first rows are kept
                yield index, problem, scores
                last = index
