"""Parameter and multiply-accumulate counts of each translation path (torch's own FLOP counter)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from facenormals.model import CrossModalNet


@dataclass(frozen=True)
class PathCost:
    path: str
    params_m: float
    gmac: float


def count_gmac(fn: Callable[[], object]) -> float:
    """GMAC of one call (FLOPs / 2: the counter reports 2 FLOPs per multiply-accumulate)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fn()
    return counter.get_total_flops() / 2e9


def _params(*modules: nn.Module | None) -> float:
    return sum(p.numel() for m in modules if m is not None for p in m.parameters()) / 1e6


def path_costs(model: CrossModalNet, size: int) -> list[PathCost]:
    """Cost of each path of ``model`` at size×size for one image."""
    model = model.eval()
    image = torch.rand(1, model.cfg.in_chans, size, size)
    normals = torch.rand(1, 3, size, size)
    path = model.image_to_normal_path
    costs = [PathCost("image→normal", _params(path), count_gmac(lambda: path(image)))]
    if model.image_decoder is not None:
        costs.append(PathCost("image→image", _params(model.image_encoder, model.image_decoder),
                              count_gmac(lambda: model.image_to_image(image))))
    if model.normal_encoder is not None:
        costs.append(PathCost("normal→normal", _params(model.normal_encoder, model.normal_decoder),
                              count_gmac(lambda: model.normal_to_normal(normals))))
    costs.append(PathCost("whole network", _params(model), float("nan")))
    return costs
