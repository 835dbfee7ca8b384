"""Which device a training run uses (config ``device``): "cpu" (the default), "cuda", or "auto".

The CPU path is untouched by this module: batches stay where the loader made them. On CUDA the loader
pins its batches and each one is copied with ``non_blocking=True`` (the copy overlaps the previous step).
Under torchrun each process takes the GPU of its ``LOCAL_RANK``.
"""

from __future__ import annotations

import os

import torch

from facenormals.training.config import DEVICES
from facenormals.training.ddp import DistInfo


def cuda_missing_reason() -> str | None:
    """Why this torch cannot train on CUDA (None: it can)."""
    if torch.cuda.is_available():
        return None
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    return f"torch {torch.__version__} ({build}) sees no CUDA GPU"


def resolve_device(name: str, info: DistInfo | None = None) -> torch.device:
    """The torch device for config value ``name``; "cuda" without a usable GPU is an error naming the cause."""
    if name not in DEVICES:
        raise ValueError(f"device {name!r} unknown; choose one of {list(DEVICES)}")
    if name == "cpu":
        return torch.device("cpu")
    reason = cuda_missing_reason()
    if reason is not None:
        if name == "cuda":
            raise RuntimeError(f'device = "cuda" but {reason}; install a CUDA build of torch '
                               '(scripts/gpu_train.sh --install WHEELHOUSE) or set device = "cpu" or "auto"')
        return torch.device("cpu")
    index = int(os.environ.get("LOCAL_RANK", "0")) if info is not None and info.distributed else 0
    torch.cuda.set_device(index)
    torch.backends.cudnn.benchmark = True  # one input shape per phase: cuDNN keeps its fastest kernels
    return torch.device("cuda", index)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The batch on ``device`` (the same tensors on the CPU; an asynchronous copy from pinned memory on CUDA)."""
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
