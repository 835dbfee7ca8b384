"""The optional detail term (issue 14): on labelled steps, the high-pass of the predicted normals against the
ground truth's.

Why: the masked cosine distance is dominated by coarse shape (errors of 10–15°), while fine relief of RMS 2–5° is
worth ~1e-3 of it; session 18's run on renders with fine skin relief (``render --relief-deg``) learned none of it
in 2 700 steps (its own detail on those renders: 0.26° against the previous weights' 0.24°). This term compares
only what lies above a Gaussian of σ = ``sigma_px`` (256² pixels): normals minus their masked blur, L1 over the
face mask, so a tilt or a wrong cheek costs nothing here and a missing crease costs in full.

Configured by ``[detail]`` in the training TOML; off (``weight = 0``) by default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from facenormals.training.anchor import masked_blur


@dataclass(frozen=True)
class DetailSection:
    weight: float = 0.0  # 0 = off; added to the image→normal steps' loss with this weight
    sigma_px: float = 2.0  # the high-pass: normals minus their masked Gaussian blur, pixels of a 256² crop

    def __post_init__(self) -> None:
        if not (self.weight >= 0 and math.isfinite(self.weight)) or not (self.sigma_px > 0 and math.isfinite(self.sigma_px)):
            raise ValueError(f"detail: weight must be ≥ 0 and sigma_px > 0, got {self}")


def high_pass(normals: torch.Tensor, region: torch.Tensor, sigma: float) -> torch.Tensor:
    """N×3×H×W normals minus their blur inside ``region`` (N×1×H×W, 0/1): the detail above σ."""
    return normals - masked_blur(normals, region, sigma)


def detail_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, section: DetailSection) -> torch.Tensor:
    """Mean over the mask's pixels of the L1 distance between the high-passed prediction and ground truth."""
    region = (mask > 0.5).float()
    sigma = section.sigma_px * pred.shape[-1] / 256.0
    # fp32 inside the trainer's bf16 autocast: the high-pass of a unit vector is ~1e-2, near bf16's resolution
    with torch.autocast(pred.device.type, enabled=False):
        diff = (high_pass(pred.float(), region, sigma) - high_pass(target.float(), region, sigma)).abs().sum(1, keepdim=True)
        return (diff * region).sum() / region.sum().clamp_min(1.0)
