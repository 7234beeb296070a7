"""torchrun's processes: who this process is, its device, the one joining of the process group, and
the few collectives train and predict use. Without torchrun every helper is the one-process answer
(rank 0 of 1, [obj], obj), so callers need no branch."""
from __future__ import annotations

import os


def dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    return dist_info()[0] == 0


def _initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def local_device(device: str | None):
    """The torch.device of this process for `--device` (auto: cuda when available, else cpu); under
    torchrun each process takes the GPU of its local rank. Joins nothing: see `join_group`."""
    import torch

    from ipce.utils.device import resolve_device

    _, world, local = dist_info()
    chosen = torch.device(resolve_device(device))
    if chosen.type == "cuda":
        chosen = torch.device("cuda", local if world > 1 else (chosen.index or 0))
        torch.cuda.set_device(chosen)
    return chosen


def join_group(device) -> None:
    """Under torchrun, join the process group (NCCL on CUDA, gloo on the CPU); nothing otherwise.
    Joining waits for every rank to join, so a rank that does its own set-up (loading the model)
    first and joins last waits only for the slowest rank's set-up, not for each in turn."""
    import torch.distributed as dist

    if dist_info()[1] > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def setup_distributed(device: str | None):
    """`local_device(device)`, with the process group joined (train: DistributedDataParallel)."""
    chosen = local_device(device)
    join_group(chosen)
    return chosen


def gather(obj) -> list:
    """Every rank's object, in rank order (just [obj] without torchrun)."""
    if not _initialized():
        return [obj]
    import torch.distributed as dist

    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj):
    """Rank 0's object on every rank (`obj` itself without torchrun): what rank 0 alone read or decided."""
    if not _initialized():
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait for every rank (nothing without torchrun)."""
    if _initialized():
        import torch.distributed as dist

        dist.barrier()
