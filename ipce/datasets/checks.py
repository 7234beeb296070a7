"""The data check behind `ipce check-data` (training runs it before the first step).

`check_records` decodes every image with `open_rgb` (in a thread pool: Pillow
releases the GIL while decoding), shows a tqdm bar with the rate, and counts
the prompts whose scoring text `a photo that perfectly matches '{prompt}'` is
longer than CLIP's 77 tokens (open_clip's tokenizer, +2 for start/end of text;
such texts are truncated when scored). Annotation-level problems (missing
column, bad score, empty prompt, duplicate) are raised earlier by the readers.
"""
from __future__ import annotations

import csv
import io
import os
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ipce.datasets.images import image_problem_kind

__all__ = ["Problem", "CheckReport", "check_records", "filter_bad", "count_long_prompts", "format_report",
           "write_report_csv", "CONTEXT_LENGTH", "PROMPT_TEMPLATE"]

CONTEXT_LENGTH = 77
PROMPT_TEMPLATE = "a photo that perfectly matches '{prompt}'"


@dataclass
class Problem:
    path: str
    row: int | None
    kind: str
    message: str


@dataclass
class CheckReport:
    records: int
    images_found: int
    problems: list[Problem] = field(default_factory=list)
    score_min: float | None = None
    score_max: float | None = None
    long_prompts: int | None = 0    # records whose scoring text exceeds 77 tokens (None: tokenizer unavailable)
    seconds: float = 0.0

    def by_kind(self) -> dict[str, int]:
        return dict(sorted(Counter(p.kind for p in self.problems).items()))

    @property
    def ok(self) -> bool:
        return not self.problems


@lru_cache(maxsize=1)
def _tokenizer():
    try:
        from open_clip.tokenizer import SimpleTokenizer
    except Exception:  # open_clip missing or broken: the count is reported as unknown
        return None
    return SimpleTokenizer()


def count_long_prompts(prompts, context_length: int = CONTEXT_LENGTH) -> int | None:
    """How many of `prompts` give a scoring text over `context_length` CLIP tokens (None without open_clip)."""
    tokenizer = _tokenizer()
    if tokenizer is None:
        return None
    lengths: dict[str, int] = {}
    count = 0
    for prompt in prompts:
        if prompt not in lengths:
            lengths[prompt] = len(tokenizer.encode(PROMPT_TEMPLATE.format(prompt=prompt))) + 2
        count += lengths[prompt] > context_length
    return count


def check_records(records, workers: int = 2, progress: bool = True) -> CheckReport:
    """Open and fully decode every record's image; report problems, score range and long prompts."""
    import time

    from tqdm import tqdm

    records = list(records)
    started = time.perf_counter()
    paths = [rec.image for rec in records]
    results: list[tuple[str, str] | None] = []
    bar = tqdm(total=len(paths), desc="checking images", unit="img", disable=not progress, dynamic_ncols=True)
    try:
        if workers and workers > 1 and len(paths) > 1:
            with ThreadPoolExecutor(max_workers=int(workers)) as pool:
                for result in pool.map(image_problem_kind, paths):
                    results.append(result)
                    bar.update(1)
        else:
            for path in paths:
                results.append(image_problem_kind(path))
                bar.update(1)
    finally:
        bar.close()

    problems: list[Problem] = []
    found = 0
    for rec, result in zip(records, results):
        if result is None:
            found += 1
            continue
        kind, message = result
        if kind != "missing":
            found += 1
        problems.append(Problem(path=str(rec.image), row=rec.row, kind=kind, message=message))
    scores = [rec.target for rec in records if rec.target is not None]
    return CheckReport(
        records=len(records), images_found=found, problems=problems,
        score_min=min(scores) if scores else None, score_max=max(scores) if scores else None,
        long_prompts=count_long_prompts(rec.prompt for rec in records),
        seconds=time.perf_counter() - started)


def filter_bad(records, report: CheckReport) -> list:
    """The records whose image has no problem in `report`."""
    bad = {p.path for p in report.problems}
    return [rec for rec in records if str(rec.image) not in bad]


def format_report(report: CheckReport, source: str = "", show: int = 10) -> str:
    """The human summary printed by `ipce check-data`."""
    lines = []
    if source:
        lines.append(f"data: {source}")
    lines.append(f"records: {report.records}")
    lines.append(f"images found: {report.images_found} of {report.records}")
    if report.problems:
        kinds = ", ".join(f"{kind} {count}" for kind, count in report.by_kind().items())
        lines.append(f"problems: {len(report.problems)} ({kinds})")
    else:
        lines.append("problems: none")
    if report.score_min is None:
        lines.append("scores: none in the annotations")
    else:
        lines.append(f"score range: {report.score_min:.4g} .. {report.score_max:.4g}")
    if report.long_prompts is None:
        lines.append("prompts over 77 tokens: not counted (open_clip is not installed)")
    else:
        lines.append(f"prompts over {CONTEXT_LENGTH} tokens: {report.long_prompts} (truncated when scored)")
    for problem in report.problems[:show]:
        where = f" (row {problem.row})" if problem.row is not None else ""
        lines.append(f"  {problem.kind}{where}: {problem.message}")
    if len(report.problems) > show:
        lines.append(f"  ... and {len(report.problems) - show} more (write them all with --report FILE.csv)")
    return "\n".join(lines)


def write_report_csv(path, problems) -> None:
    """Write `path,row,problem` rows (problem = "kind: message"); temporary file then rename."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "row", "problem"])
    for p in problems:
        writer.writerow([p.path, "" if p.row is None else p.row, f"{p.kind}: {p.message}"])
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(buffer.getvalue())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
