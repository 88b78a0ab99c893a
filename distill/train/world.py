"""Several processes (``torchrun --nproc-per-node N -m distill run``): which one is the main process.

Every process runs the whole pipeline (each trains its shard of every batch, and DDP keeps the replicas
equal), but only the main process writes: checkpoints, metrics, results, reports. The rank comes from the
launcher's environment (``RANK``, ``WORLD_SIZE``, set by torchrun and ``accelerate launch``), so it is known
before any process group exists.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

T = TypeVar("T")


def process_count() -> int:
    """How many processes the launcher started (1 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def process_index() -> int:
    """This process's global rank (0 when run directly)."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return process_index() == 0


def start_processes(cpu: bool) -> None:
    """Join the launcher's process group before anything needs it, as Accelerate makes it (``cpu``: gloo on
    the CPU; else the device's backend). Every later Accelerator of the run shares it."""
    if process_count() == 1 or dist.is_initialized():
        return
    from accelerate import PartialState

    check_joined(PartialState(cpu=cpu).num_processes)


def check_joined(processes: int) -> None:
    """Refuse a launch whose processes would each train alone (Accelerate on CPU without ``cpu=True``)."""
    if processes != process_count():
        raise ValueError(
            f"the launcher started {process_count()} processes but Accelerate joined {processes}: without a GPU "
            "set train.cpu: true (student.train.cpu and teacher.train.cpu) so that they train as one, on gloo"
        )


def wait_for_everyone() -> None:
    """A barrier across the launcher's processes (a no-op in one process)."""
    if process_count() > 1 and dist.is_initialized():
        dist.barrier()


def main_process_first(work: Callable[[], T]) -> T:
    """``work()`` in the main process, then in the others: files the main one writes (a teacher cache, the
    teacher's sequences) are there, finished, when the others look for them, and are read, not made again."""
    if not is_main_process():
        wait_for_everyone()
    result = work()
    if is_main_process():
        wait_for_everyone()
    return result


def _group_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_rows(tensor: Tensor) -> Tensor:
    """Every process's ``tensor`` (the same shape everywhere) stacked along dim 0 in rank order: the global
    batch, as one process holding it would see it. ``tensor`` itself in one process. Carries no gradient."""
    if _group_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(_group_size())]
    dist.all_gather(parts, tensor.detach().contiguous())
    return torch.cat(parts)


def own_rows(gathered: Tensor, count: int) -> Tensor:
    """This process's ``count`` rows of a :func:`gather_rows` result."""
    start = (dist.get_rank() if _group_size() > 1 else 0) * count
    return gathered[start : start + count]
