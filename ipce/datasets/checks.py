"""The data check behind `ipce check-data` (training runs it before the first step).

`check_records` decodes every image with `open_rgb` (in a thread pool: Pillow
releases the GIL while decoding), shows a tqdm bar with the rate, and counts
the prompts whose scoring text `a photo that perfectly matches '{prompt}'` is
longer than CLIP's 77 tokens (open_clip's tokenizer, +2 for start/end of text;
such texts are truncated when scored). `check_annotations` does the same for
what a reader found (`Annotations`) and adds the reader's bad rows and warnings,
so one run reports every problem of a dataset: bad rows, bad images, duplicates.
Warnings never make a report fail.
"""
from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache

from ipce.datasets.images import image_problem
from ipce.datasets.problems import Problem
from ipce.models.texts import LEVELS, TEMPLATE
from ipce.utils.io import write_csv

__all__ = ["Problem", "CheckReport", "check_records", "check_annotations", "filter_bad", "count_long_prompts",
           "prompt_warnings", "is_mostly_non_latin",
           "format_report", "write_report_csv", "CONTEXT_LENGTH", "PROMPT_TEMPLATE"]

CONTEXT_LENGTH = 77
# the longest of the method's texts (the best level's), with the prompt left to fill in
PROMPT_TEMPLATE = TEMPLATE.format(level=LEVELS[-1], prompt="{prompt}")


@dataclass
class CheckReport:
    records: int
    images_found: int
    problems: list[Problem] = field(default_factory=list)  # unusable rows and images
    warnings: list[Problem] = field(default_factory=list)  # reported, not fatal (duplicates)
    rows: int | None = None         # rows of the annotation file (None: records not read from a file)
    score_min: float | None = None
    score_max: float | None = None
    long_prompts: int | None = 0    # records whose scoring text exceeds 77 tokens (None: tokenizer unavailable)
    foreign_prompts: int = 0        # records whose prompt is mostly non-Latin letters (English-only tokenizer)
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


def is_mostly_non_latin(prompt: str) -> bool:
    """True when most letters of `prompt` are outside ASCII: CLIP's tokenizer and training text are
    English, so such a prompt (Chinese, Cyrillic, ...) is scored as near noise."""
    letters = [c for c in prompt if c.isalpha()]
    return bool(letters) and sum(not c.isascii() for c in letters) * 2 > len(letters)


def prompt_warnings(prompts, context_length: int = CONTEXT_LENGTH) -> list[str]:
    """One line per kind of odd prompt among `prompts`, with its count: empty prompts, prompts whose
    scoring text is cut at 77 tokens, prompts mostly outside the tokenizer's language."""
    prompts = list(prompts)
    unique = list(dict.fromkeys(prompts))
    empty = sum(not p.strip() for p in prompts)
    foreign = {p for p in unique if is_mostly_non_latin(p)}
    long = count_long_prompts(prompts, context_length)
    lines = []
    if empty:
        lines.append(f"{empty} of {len(prompts)} prompts are empty: the score then says how well the image "
                     "matches an empty text, not a prompt")
    if long:
        lines.append(f"{long} of {len(prompts)} prompts are cut at CLIP's {context_length} tokens (the scoring "
                     "text 'a photo that perfectly matches ...' is longer): words past the cut are not seen")
    if foreign:
        count = sum(p in foreign for p in prompts)
        lines.append(f"{count} of {len(prompts)} prompts are mostly non-Latin letters (e.g. "
                     f"{next(iter(foreign))[:30]!r}): CLIP's tokenizer is English-only, so these scores are "
                     "unreliable; translate the prompts to English")
    return lines


def check_records(records, workers: int = 2, progress: bool = True) -> CheckReport:
    """Open and fully decode every record's image; report problems, score range and long prompts."""
    import time

    from ipce.utils.progress import progress_bar

    records = list(records)
    started = time.perf_counter()
    paths = [rec.image for rec in records]
    results: list[tuple[str, str] | None] = []
    bar = progress_bar(total=len(paths), desc="checking images", unit="img", enabled=progress)
    try:
        if workers and workers > 1 and len(paths) > 1:
            with ThreadPoolExecutor(max_workers=int(workers)) as pool:
                for result in pool.map(image_problem, paths):
                    results.append(result)
                    bar.update(1)
        else:
            for path in paths:
                results.append(image_problem(path))
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
        problems.append(Problem(path=str(rec.image), row=rec.row, kind=kind, message=message, image=rec.name))
    scores = [rec.target for rec in records if rec.target is not None]
    return CheckReport(
        records=len(records), images_found=found, problems=problems,
        score_min=min(scores) if scores else None, score_max=max(scores) if scores else None,
        long_prompts=count_long_prompts(rec.prompt for rec in records),
        foreign_prompts=sum(is_mostly_non_latin(rec.prompt) for rec in records),
        seconds=time.perf_counter() - started)


def check_annotations(annotations, workers: int = 2, progress: bool = True) -> CheckReport:
    """`check_records` on the usable records of a reader's `Annotations`, with its bad rows (first) and
    its warnings added: every problem of the dataset in one report."""
    report = check_records(annotations.records, workers=workers, progress=progress)
    report.problems = [*annotations.problems, *report.problems]
    report.warnings = list(annotations.warnings)
    report.rows = annotations.rows
    return report


def filter_bad(records, report: CheckReport) -> list:
    """The records whose image has no problem in `report`."""
    bad = {p.path for p in report.problems}
    return [rec for rec in records if str(rec.image) not in bad]


def format_report(report: CheckReport, source: str = "", show: int = 10) -> str:
    """The human summary printed by `ipce check-data`."""
    lines = []
    if source:
        lines.append(f"data: {source}")
    if report.rows is not None:
        lines.append(f"rows: {report.rows} in the annotations, {report.records} usable")
    lines.append(f"records: {report.records}")
    lines.append(f"images found: {report.images_found} of {report.records}")
    if report.problems:
        kinds = ", ".join(f"{kind} {count}" for kind, count in report.by_kind().items())
        lines.append(f"problems: {len(report.problems)} ({kinds})")
    else:
        lines.append("problems: none")
    if report.warnings:
        kinds = ", ".join(f"{kind} {count}" for kind, count in
                          sorted(Counter(w.kind for w in report.warnings).items()))
        lines.append(f"warnings: {len(report.warnings)} ({kinds}; reported, not a failure)")
    if report.score_min is None:
        lines.append("scores: none in the annotations")
    else:
        lines.append(f"score range: {report.score_min:.4g} .. {report.score_max:.4g}")
        if report.score_min < 0 or report.score_max > 5:
            lines.append("  scores lie outside the model's 0..5: train with --mos-range LO HI (the scale of "
                         "your scores, e.g. 0 100)")
    if report.long_prompts is None:
        lines.append("prompts over 77 tokens: not counted (open_clip is not installed)")
    else:
        lines.append(f"prompts over {CONTEXT_LENGTH} tokens: {report.long_prompts} (truncated when scored)")
    if report.foreign_prompts:
        lines.append(f"prompts mostly in non-Latin letters: {report.foreign_prompts} (CLIP's tokenizer is English-only; "
                     "their scores are unreliable)")
    for label, items in (("", report.problems), ("warning ", report.warnings)):
        for item in items[:show]:
            lines.append(f"  {label}{item.kind}{item.where()}: {item.message}")
        if len(items) > show:
            lines.append(f"  ... and {len(items) - show} more {label or 'problem'}(s) "
                         "(write them all with --report FILE.csv)")
    return "\n".join(lines)


def write_report_csv(path, problems, warnings=()) -> None:
    """Write `path,row,image,severity,problem` rows (image as the annotations name it, "" when unknown;
    severity error or warning; problem = "kind: message"); written atomically."""
    rows = [[p.path, "" if p.row is None else p.row, p.image, severity, f"{p.kind}: {p.message}"]
            for severity, items in (("error", problems), ("warning", warnings)) for p in items]
    write_csv(path, ["path", "row", "image", "severity", "problem"], rows)
