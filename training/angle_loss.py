"""The optional angle term: on labelled steps, the mean angle between predicted and true normals, in radians.

Why: the paper's cosine distance 1 − cos θ ≈ θ²/2 pulls on each pixel in proportion to sin θ, so the many pixels
already within a few degrees barely pull at all, while the metric every result here is judged by is the mean *angle*,
in which a pixel going from 6° to 3° counts as much as one going from 30° to 27°. This term's pull is the same at
every angle (an L1 on the angle): with a weight ~0.1 it matches the cosine's size at the typical 12° error and adds
its push where the cosine has none. The angle comes from atan2(|n × t|, n · t), exact at every angle (acos loses
its precision near 0° and its gradient is infinite there); |n × t| is smoothed by ``eps`` so the gradient stays
finite where the two agree.

Configured by ``[angle]`` in the training TOML; off (``weight = 0``) by default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

EPS = 1e-6  # added to |n × t|² under the square root: a finite gradient at the truth (an angle floor of ~0.06°)


@dataclass(frozen=True)
class AngleSection:
    weight: float = 0.0  # 0 = off; added to the image→normal steps' loss with this weight

    def __post_init__(self) -> None:
        if not (self.weight >= 0 and math.isfinite(self.weight)):
            raise ValueError(f"angle: weight must be a finite number ≥ 0, got {self.weight}")


def masked_mean_angle(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the mask's pixels of the angle (radians) between N×3×H×W normals (pred need not be unit)."""
    region = (mask > 0.5).to(torch.float32)
    if region.dim() == 3:
        region = region.unsqueeze(1)
    # fp32 inside the trainer's bf16 autocast: a few degrees are below bf16's resolution of a unit vector's products
    with torch.autocast(pred.device.type, enabled=False):
        p, t = pred.float(), target.float()
        cross = torch.linalg.cross(p, t, dim=1)
        sine = torch.sqrt(cross.pow(2).sum(1, keepdim=True) + EPS)
        angle = torch.atan2(sine, (p * t).sum(1, keepdim=True))
        return (angle * region).sum() / region.sum().clamp_min(1.0)
