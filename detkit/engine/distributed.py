"""Multi-process helpers: init from torchrun's environment, SyncBN, rank-0 utilities.

``torchrun --nproc_per_node N tools/train.py ...`` sets RANK, WORLD_SIZE and LOCAL_RANK;
:func:`init_distributed` then starts a process group with NCCL on GPU or gloo on CPU.
Without those variables everything runs as a single process (rank 0 of 1).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """Process placement: global rank, world size, local rank and the device to use."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the process that logs and writes checkpoints)."""
        return self.rank == 0


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """The one device resolver: "auto" -> CUDA (this process's ``local_rank`` GPU, made the
    current one) when available, else CPU; "cpu" / "cuda" as given (cuda must exist, else
    RuntimeError)."""
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device=cuda requested but CUDA is not available")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device: str = "auto") -> DistInfo:
    """Init the process group from torchrun env vars (gloo on CPU, NCCL on GPU) if present."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistInfo(rank, world_size, local_rank, dev)


def is_dist() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """Global rank (0 when not distributed)."""
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if is_dist() else 1


def is_main_process() -> bool:
    """True on rank 0."""
    return get_rank() == 0


def barrier() -> None:
    """Synchronise all processes (no-op in a single process)."""
    if is_dist():
        dist.barrier()


def cleanup() -> None:
    """Destroy the process group if one was started."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def convert_sync_bn(model: nn.Module, device: torch.device) -> nn.Module:
    """Replace BatchNorm layers by SyncBatchNorm (statistics over the global batch).

    torch's SyncBatchNorm runs on CUDA only; on CPU this raises ValueError.
    """
    if device.type != "cuda":
        raise ValueError("train.sync_bn=true needs CUDA (torch's SyncBatchNorm runs on GPU "
                         "only); set train.sync_bn=false for CPU runs")
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def wrap_ddp(model: nn.Module, info: DistInfo, find_unused_parameters: bool = False
             ) -> nn.Module:
    """Wrap ``model`` in DistributedDataParallel when running with more than one process.

    Set ``find_unused_parameters`` for models whose forward leaves some parameters unused.
    """
    if info.world_size <= 1:
        return model
    ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids,
                                               find_unused_parameters=find_unused_parameters)


def all_reduce_min_flag(flag: bool, device: torch.device) -> bool:
    """Logical AND of ``flag`` over all ranks (so every rank takes the same branch)."""
    if not is_dist():
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def reduce_mean(values: Mapping[str, float], device: torch.device) -> dict[str, float]:
    """Average scalar values over ranks (for logging)."""
    if not is_dist() or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= get_world_size()
    return {k: float(v) for k, v in zip(keys, t.tolist(), strict=True)}


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """Rank 0's value of ``flag`` on every rank."""
    if not is_dist():
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())
