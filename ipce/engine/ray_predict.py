"""Sharded `ipce predict` on a Ray cluster (the ray extra): one Ray task per shard, one scorer per
worker process.

The driver (`ipce predict ... --engine ray`) plans the run as a local one does
(ipce.engine.shards: the sidecar, the shards left) and submits one task per shard left. A task
loads its worker's scorer once (kept for the worker's later tasks: one scorer per CPU worker, or
per GPU with `device` cuda, which asks Ray for one GPU a task), scores its shard and writes the
shard's Parquet file itself, atomically, so the outputs are the files a local run writes; the
shards and `--out` must be at the same paths on every node (a shared file system). Ray schedules
the tasks, reruns a task whose worker or node died (`max_retries`) or that raised a transient
error (OSError, RuntimeError, MemoryError), and the driver reports a shard that failed every
attempt once the others are done (their files are kept, and `--resume` scores the rest).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable

from ipce.engine.shards import ShardResult, ShardTask, score_shard
from ipce.errors import IpceError

log = logging.getLogger(__name__)

RETRIED = (OSError, RuntimeError, MemoryError)
_SCORERS: dict = {}  # this worker process's scorer, by its options


def worker_scorer(options: dict):
    """The scorer of `options` (load_scorer's keywords), loaded once per worker process."""
    key = json.dumps(options, sort_keys=True, default=str)
    if key not in _SCORERS:
        from ipce.api import load_scorer

        _SCORERS.clear()  # one scorer per worker: a new run's options replace the last
        _SCORERS[key] = load_scorer(**options)
    return _SCORERS[key]


def score_task(options: dict, task: ShardTask) -> ShardResult:
    """A Ray task's work: this worker's scorer on one shard."""
    return score_shard(worker_scorer(options), task)


def _run(shard_fn, options: dict, task: ShardTask) -> ShardResult:
    return shard_fn(options, task)  # a function for ray.remote, whatever callable `shard_fn` is


def _ray():
    try:
        import ray
    except ImportError:
        raise IpceError("--engine ray needs Ray: pip install 'ipce[ray]'") from None
    return ray


def run_on_ray(options: dict, tasks: list[ShardTask], address: str | None = None, bar=None,
               shard_fn: Callable[[dict, ShardTask], ShardResult] = score_task,
               max_retries: int = 3) -> list[ShardResult]:
    """Score `tasks` as Ray tasks of `shard_fn(options, task)` on the cluster at `address` (None: the
    one this process already joined, else a new local instance); the results in task order.
    `options`: load_scorer's keywords, `device` cpu or cuda."""
    ray = _ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    try:
        gpu = str(options.get("device", "cpu")).startswith("cuda")
        remote = ray.remote(_run).options(num_cpus=1, num_gpus=1 if gpu else 0, max_retries=max_retries,
                                              retry_exceptions=list(RETRIED))
        pending = {remote.remote(shard_fn, options, task): i for i, task in enumerate(tasks)}
        results, failed = [None] * len(tasks), []
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(done[0])
            try:
                results[i] = ray.get(done[0])
            except (ray.exceptions.RayTaskError, ray.exceptions.RayError) as err:
                failed.append((tasks[i], _cause(err)))
                log.error("%s: failed on Ray: %s", tasks[i].source.path, failed[-1][1])
            if bar is not None:
                bar.update(1)
    finally:
        if started:
            ray.shutdown()
    if failed:
        task, cause = failed[0]
        more = f" (and {len(failed) - 1} more shard(s))" if len(failed) > 1 else ""
        raise IpceError(f"{task.source.path}: failed on every attempt on Ray{more}: {cause}; the other shards are "
                        "written, rerun with --resume to score the rest")
    return results


def _cause(err: Exception) -> str:
    """One line: the exception a Ray task raised (its own IpceError line when it is one)."""
    cause = getattr(err, "cause", None)
    text = str(cause) if isinstance(cause, IpceError) else f"{type(cause or err).__name__}: {cause or err}"
    return " ".join(text.split())[:500]
