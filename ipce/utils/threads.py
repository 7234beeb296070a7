"""How many CPU threads a run uses: torch's (the model's arithmetic on the CPU) and the loader's
worker processes (decoding images, making views), chosen from the cores this process may run on
(its affinity and, in a container, its CPU quota), not the machine's count, and split so that
they do not compete: `workers` decoders and `cores - workers` torch threads.

An explicit `--threads` wins; without it an OMP_NUM_THREADS in the environment (torchrun sets
1 per process) is left to torch. Under torchrun the cores are shared among the node's processes.
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def _quota() -> int | None:
    """The cgroup v2 CPU quota in whole cores (at least 1), or None without one."""
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max", encoding="ascii").read().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, int(quota) // int(period))


def usable_cores() -> int:
    """The cores this process may use: its affinity (os.sched_getaffinity), capped by a container's
    quota, shared among the processes of one torchrun node (LOCAL_WORLD_SIZE)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    quota = _quota()
    if quota:
        cores = min(cores, quota)
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", 1) or 1)
    return max(1, cores // per_node)


def split_cores(threads: int | None, workers: int | None, cores: int | None = None) -> tuple[int, int]:
    """(torch threads, loader workers): each as given, else workers = min(2, cores // 2) (none on
    one core, one on two or three) and threads = the cores the workers leave, at least 1."""
    cores = cores or usable_cores()
    if workers is None:
        workers = min(2, cores // 2)
    if threads is None:
        threads = max(1, cores - workers)
    return threads, workers


def set_torch_threads(threads: int | None, workers: int = 0) -> int:
    """Set torch's intra-op threads to `threads`, or (None) to what split_cores leaves beside
    `workers` unless OMP_NUM_THREADS is set; returns the count torch now uses."""
    import torch

    if threads is None and os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    threads, _ = split_cores(threads, workers)
    torch.set_num_threads(threads)
    log.debug("torch threads: %d (loader workers: %d, usable cores: %d)", threads, workers, usable_cores())
    return threads
