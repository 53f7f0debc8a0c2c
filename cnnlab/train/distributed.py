"""Distributed data-parallel training with PyTorch's own engine (torchrun + DistributedDataParallel).

One machine:   torchrun --nproc_per_node=N -m cnnlab train MODEL --data DATA ...
Several:       torchrun --nnodes=2 --nproc_per_node=N --rdzv-backend c10d --rdzv-endpoint HOST:PORT \\
                        -m cnnlab train ...        (the same command on every machine; HOST:PORT reachable)

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE; `setup` reads them, picks nccl on GPUs and
gloo on CPU, and each rank then trains on its own shard of the data. Only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    """Where this process sits: rank among world_size processes, local_rank on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info() -> DistInfo:
    """Read torchrun's environment (a plain single process when it is absent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")),
                    int(os.environ.get("LOCAL_WORLD_SIZE", str(world))))


def setup(device_type: str) -> DistInfo:
    """Initialise the process group if torchrun launched us (nccl for CUDA, gloo for CPU)."""
    info = env_info()
    if info.enabled and not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return info


def teardown(finished: bool = True) -> None:
    """Leave the process group. After a finished run the ranks leave together: without the barrier, a rank
    that finishes first (rank 0 is still writing the run's files) tears its gloo connections down under
    the other, which can abort it ("terminate called without an active exception", about one 2-rank run
    in ten). After an error there is no barrier: the other ranks may never reach it."""
    if dist.is_available() and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks in place (a no-op outside distributed training)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj, src: int = 0):
    """Rank `src`'s Python object on every rank (e.g. the run directory name chosen by rank 0)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
