"""Scoring sharded data: one Parquet output per input shard, each written atomically once its
shard is scored, so that a stopped run resumes shard by shard.

- The output of a shard is `<out>/<shard name>.parquet` (`<out>` a folder), or `<out>` itself when
  the input is one shard and `--out` names a `.parquet` file. Its rows follow the shard's order,
  one per sample: `key`, `prompt`, `score`, `score_1..M` (each model of an ensemble), with
  `levels` the level probabilities `p_<level>` (`p_<level>_<m>` per model of an ensemble), and
  `problem` (null when scored; the sample's one-line problem, score null, when not).
- The run's settings sidecar `<out>.ipce.json` (beside the folder or the file; ipce.engine.parts)
  holds what every score depends on (ipce.engine.parts' settings, the shards by name and size and
  the reading options instead of the records' hash). `--resume` refuses other settings, skips the
  shards whose output exists (a file only appears complete: it is renamed into place) and scores
  the rest; a run without `--resume` removes the outputs of an earlier run first.
- A shard is scored in blocks of `batch_size` consecutive samples, each one batch with the text
  cache cleared (as ipce.engine.predict's blocks), so a shard's file is the same bytes whichever
  process, engine or attempt writes it.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from ipce.datasets.shards import ShardSource, need
from ipce.errors import IpceError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardTask:
    """One shard to score into one file: all a worker process needs besides its scorer."""
    source: ShardSource
    out: Path
    batch_size: int = 16
    levels: bool = False
    workers: int = 0


@dataclass
class ShardResult:
    shard: str
    scored: int = 0
    unreadable: int = 0
    seconds: float = 0.0


def output_paths(sources: list[ShardSource], out: Path) -> list[Path]:
    """One output per shard for `--out`: a `.parquet` file for a single shard, else a folder of
    `<shard name>.parquet`."""
    if out.suffix == ".parquet" and not out.is_dir():
        if len(sources) > 1:
            raise IpceError(f"--out {out}: {len(sources)} shards write one Parquet file each; give a folder "
                            "(e.g. --out scores/)")
        return [out]
    if out.exists() and not out.is_dir():
        raise IpceError(f"--out {out}: a file; with shards --out names a folder (or one .parquet file for one shard)")
    names = [s.path.name.split(".")[0] for s in sources]  # 00042.tar -> 00042, data.part1.parquet -> data
    seen: dict[str, Path] = {}
    for name, source in zip(names, sources):
        if name in seen:
            raise IpceError(f"shards {seen[name]} and {source.path} would both write {out / (name + '.parquet')}; "
                            "give shards distinct file names")
        seen[name] = source.path
    return [out / f"{n}.parquet" for n in names]


def shards_identity(sources: list[ShardSource]) -> dict:
    """The input of a sharded run: the shards by name and size, and how they are read."""
    return {"shards": [s.path.name for s in sources], "bytes": [s.path.stat().st_size for s in sources],
            **(sources[0].options() if sources else {})}


# ----------------------------------------------------------------------------- one shard

def level_columns(scorer) -> list[list[str]]:
    """The level-probability column names of each model: p_<level>, or p_<level>_<m> in an ensemble."""
    def name(level: str) -> str:
        return "p_" + re.sub(r"\W+", "_", str(level)).strip("_")

    members = scorer.members
    if len(members) == 1:
        return [[name(level) for level in members[0].model.levels]]
    return [[f"{name(level)}_{m + 1}" for level in member.model.levels] for m, member in enumerate(members)]


def _empty_columns(scorer, levels: bool) -> dict[str, list]:
    columns = {"key": [], "prompt": [], "score": []}
    if len(scorer.members) > 1:
        columns.update({f"score_{m + 1}": [] for m in range(len(scorer.members))})
    if levels:
        columns.update({name: [] for names in level_columns(scorer) for name in names})
    columns["problem"] = []
    return columns


def _add_block(columns: dict[str, list], block, scores, per_model, probs, names) -> None:
    """Append a block's rows (scores of its good samples, nulls and the problem for the others)."""
    slot = {position: j for j, position in enumerate(block.good)}
    models = per_model.shape[0] if per_model is not None else 0
    for i, key in enumerate(block.keys):
        j = slot.get(i)
        columns["key"].append(key)
        columns["prompt"].append(block.prompts[i])
        columns["score"].append(None if j is None else float(scores[j]))
        if models > 1:
            for m in range(models):
                columns[f"score_{m + 1}"].append(None if j is None else float(per_model[m, j]))
        if names:
            for m, level_names in enumerate(names):
                for k, level in enumerate(level_names):
                    columns[level].append(None if j is None else float(probs[m, j, k]))
        columns["problem"].append(block.problems.get(i))


def write_parquet(path: Path, columns: dict[str, list]) -> None:
    """`columns` as a Parquet file, atomically (ipce.utils.io): key, prompt and problem as strings,
    the rest as float64 (a float32 score is exact in it)."""
    pa = need("pyarrow")
    pq = need("pyarrow.parquet")
    from ipce.utils.io import atomic_file

    types = {name: pa.string() if name in ("key", "prompt", "problem") else pa.float64() for name in columns}
    table = pa.table({name: pa.array(values, type=types[name]) for name, values in columns.items()})
    with atomic_file(path) as tmp:
        pq.write_table(table, tmp)


def score_shard(scorer, task: ShardTask, bar=None) -> ShardResult:
    """Score every sample of `task.source` in blocks and write `task.out` (see the module's doc)."""
    import torch

    from ipce.datasets.shards import shard_loader

    start = time.perf_counter()
    columns = _empty_columns(scorer, task.levels)
    names = level_columns(scorer) if task.levels else []
    for member in scorer.members:
        member.model.eval()
    with torch.no_grad():
        for block in shard_loader(task.source, scorer.view_configs, task.batch_size, task.workers):
            scores = per_model = probs = None
            if block.good:
                scorer.forget_texts()  # one block's texts only: the same numbers whoever scores it
                out = scorer.score_views(block.views, [block.prompts[i] for i in block.good],
                                         [_generator(block.keys[i]) for i in block.good], levels=task.levels)
                scores, per_model = out[0], out[1]
                probs = out[2] if task.levels else None
            _add_block(columns, block, scores, per_model, probs, names)
            if bar is not None:
                bar.update(len(block.keys))
    write_parquet(task.out, columns)
    unreadable = sum(p is not None for p in columns["problem"])
    result = ShardResult(str(task.source.path), len(columns["key"]) - unreadable, unreadable,
                         time.perf_counter() - start)
    log.info("%s: %d scored, %d unreadable in %.1f s -> %s", task.source.path, result.scored, result.unreadable,
             result.seconds, task.out)
    return result


def _generator(key: str) -> str | None:
    from ipce.datasets.sources import generator_of

    return generator_of(key)


# ----------------------------------------------------------------------------- the run

@dataclass
class ShardPlan:
    """What a sharded run has to do, decided once (by rank 0 or the Ray driver)."""
    left: list[int] = field(default_factory=list)   # the shards to score (positions in the task list)
    done: int = 0                                   # shards whose output an earlier run wrote (--resume)
    cleared: int = 0                                # outputs of an earlier run removed (no --resume)
    complete: dict | None = None                    # --resume into a finished run: its sidecar
    error: str | None = None


def plan_shards(store, settings: dict, tasks: list[ShardTask], resume: bool) -> ShardPlan:
    """Read the sidecar (--resume) or remove an earlier run's outputs, and write this run's settings.
    `store`: the ipce.engine.parts.PartStore of `--out` (its settings sidecar)."""
    from ipce.engine.parts import differing_setting

    saved = store.read_settings() if resume else None
    if saved is not None:
        differs = differing_setting(saved.get("settings", {}), settings)
        if differs:
            return ShardPlan(error=f"--resume into {store.out}: {differs}; pass the settings it "
                                   "was made with, or rerun without --resume to start over")
        left = [i for i, t in enumerate(tasks) if not t.out.is_file()]
        if saved.get("complete") and not left:
            return ShardPlan(complete=saved)
        store.write_settings(settings, complete=False)
        return ShardPlan(left=left, done=len(tasks) - len(left))
    cleared = 0
    for task in tasks:  # outputs of another run: with other settings they must not pass for this run's
        if task.out.is_file():
            task.out.unlink()
            cleared += 1
    store.write_settings(settings, complete=False)
    return ShardPlan(left=list(range(len(tasks))), cleared=cleared)


def run_local(scorer, tasks: list[ShardTask], bar=None) -> list[ShardResult]:
    """Score the tasks one after the other in this process."""
    return [score_shard(scorer, task, bar) for task in tasks]


def problems_of(tasks: list[ShardTask]) -> tuple[int, list[tuple[str, str, str]]]:
    """(samples scored, [(shard, key, problem)]) over the outputs, read back one column pair at a time."""
    pq = need("pyarrow.parquet")
    scored, problems = 0, []
    for task in tasks:
        table = pq.read_table(task.out, columns=["key", "problem"]).to_pydict()
        for key, problem in zip(table["key"], table["problem"]):
            if problem is None:
                scored += 1
            else:
                problems.append((str(task.source.path), key, problem))
    return scored, problems
