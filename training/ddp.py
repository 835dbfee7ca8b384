"""Scale-out with ``torchrun``: one process per device, DistributedDataParallel, rank-0 logging and checkpoints.

    torchrun --standalone --nproc_per_node 2 -m facenormals.training.cli --config FILE

Backend: NCCL on CUDA, gloo on CPU. Every rank runs the same step kinds in the same order (the
batch plan is seeded by step alone), so the modules used by each step agree across ranks; the
modules a step does not use keep ``grad=None`` (``find_unused_parameters``), as in one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class DistInfo:
    world: int = 1
    rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def init_from_env() -> DistInfo:
    """Join the process group torchrun describes in the environment; a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return DistInfo(world=dist.get_world_size(), rank=dist.get_rank())


def wrap(module: nn.Module, info: DistInfo) -> nn.Module:
    if not info.distributed:
        return module
    return DistributedDataParallel(module, find_unused_parameters=True)


def parameter_checksums(model: nn.Module, info: DistInfo) -> list[float]:
    """Sum of all parameters on every rank (one number per rank)."""
    local = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
    if not info.distributed:
        return [float(local)]
    gathered = [torch.zeros_like(local) for _ in range(info.world)]
    dist.all_gather(gathered, local)
    return [float(g) for g in gathered]


def check_replicas_in_sync(model: nn.Module, info: DistInfo) -> None:
    sums = parameter_checksums(model, info)
    if any(abs(s - sums[0]) > 1e-6 * max(1.0, abs(sums[0])) for s in sums):
        raise RuntimeError(f"model replicas diverged across ranks: parameter sums {sums}")


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank when ``flag`` is True on any: a decision (stop now) all ranks take at the same step."""
    if not info.distributed:
        return flag
    value = torch.tensor([float(flag)], device=device)  # NCCL reduces CUDA tensors, gloo CPU ones
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()
