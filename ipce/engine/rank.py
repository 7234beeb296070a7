"""Best of N: the images of each prompt ranked with `Scorer.rank`, unreadable ones set aside,
and the contact sheet of the ranking."""
from __future__ import annotations

from dataclasses import dataclass

from ipce.datasets.images import open_rgb
from ipce.datasets.sources import generator_of
from ipce.errors import DataError


@dataclass
class RankedRow:
    record: object  # ipce.datasets.sources.Record
    score: float
    rank: int       # 1 = best within its prompt


def rank_records(scorer, records, top: int | None = None, progress: bool = True) -> tuple[list[RankedRow], list]:
    """(rows grouped by prompt in first-seen order, best first within each, the first `top` of each;
    [(record, problem)] of the images that could not be read, left out of the ranking)."""
    from ipce.utils.progress import progress_bar

    by_prompt: dict[str, list] = {}
    for record in records:
        by_prompt.setdefault(record.prompt, []).append(record)
    rows, errors = [], []
    with progress_bar(total=len(records), desc="rank", unit="img", enabled=progress) as bar:
        for prompt, group in by_prompt.items():
            readable, pictures = [], []
            for record in group:
                try:
                    pictures.append(open_rgb(record.image))  # decoded once: the scorer gets the picture
                    readable.append(record)
                except DataError as err:
                    errors.append((record, str(err)))
            # each file name's generator, as Scorer.rank finds it for a path ('{generator} {prompt}' models)
            generators = [generator_of(str(r.image)) for r in readable]
            ranked = scorer.rank(pictures, prompt or None, generators) if readable else []
            rows += [RankedRow(readable[item.index], item.score, item.rank) for item in ranked[:top]]
            bar.update(len(group))
    return rows, errors


def ranking_sheet(rows: list[RankedRow], path, columns: int = 10) -> None:
    """A contact sheet: per prompt a row of its first `columns` images in rank order, the rank, score
    and file name under each."""
    from ipce.datasets.images import open_rgb
    from ipce.utils.sheet import contact_sheet

    by_prompt: dict[str, list[RankedRow]] = {}
    for row in rows:
        by_prompt.setdefault(row.record.prompt, []).append(row)
    sheet = [(prompt or "(no prompt)", [(open_rgb(r.record.image), f"#{r.rank}  {r.score:.2f}\n{_short(r.record.name)}")
                                        for r in ranked[:columns]])
             for prompt, ranked in by_prompt.items()]
    contact_sheet(sheet, path)


def _short(name: str, width: int = 22) -> str:
    """A file name cut in the middle to fit under a thumbnail."""
    name = str(name).rsplit("/", 1)[-1]
    return name if len(name) <= width else f"{name[:width // 2 - 1]}...{name[-(width // 2 - 2):]}"
