"""The real-photo anchor (issue 14, optional): on unlabelled real photos, the network's coarse shape stays on the
coarse face.

Why: every campaign run improved the ICT validation sets and drifted up on ``val_james``, the real scan. ``facenormals
eval --diagnose`` located it (session 7, shipped weights, ``ict-blend`` coarse face): on the real scan the network is
worse than its own coarse face in the face's interior (10.37 vs 9.57°) and all of it is low-frequency (σ = 4 px), while
on ICT faces — also ICT faces with shape outside ICT's span — it is better there. The low-frequency corrections it
learns from renders do not carry over to real skin, and nothing in training says so: the real photos only train
image→image. This term does, without labels: on image-only batches (the real photos), the network's normals blurred
(Gaussian σ = ``sigma_px`` at 256², i.e. only the coarse shape) are pulled to the coarse face blurred the same way, by
the masked cosine distance over the face mask where the coarse face is drawn; the detail above that scale is left
free. Renders keep their full supervision, so what the network learns there about shape is unchanged.

Configured by ``[anchor]`` in the training TOML; off (``weight = 0``) by default. Costs one D_N forward and backward
on image-only steps (their step reuses E_I's forward through ``image_to_normal_and_image``).

Convention: tensors N×C×H×W; the prior batch entry holds the coarse face's normals (3 channels, camera space) then
its coverage (1 where it was drawn).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from facenormals.training.losses import masked_cosine_distance


@dataclass(frozen=True)
class AnchorSection:
    weight: float = 0.0  # 0 = off; added to the image-only steps' loss with this weight
    sigma_px: float = 8.0  # Gaussian σ of "coarse shape", pixels of a 256² crop (scaled with the batch's size)

    def __post_init__(self) -> None:
        if not (self.weight >= 0 and math.isfinite(self.weight)) or not (self.sigma_px > 0 and math.isfinite(self.sigma_px)):
            raise ValueError(f"anchor: weight must be ≥ 0 and sigma_px > 0, got {self}")


def gaussian_kernel(sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """1-D normalised Gaussian of radius 3σ (at least 1 tap each side)."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def masked_blur(values: torch.Tensor, weight: torch.Tensor, sigma: float) -> torch.Tensor:
    """Normalised convolution: blur(values·weight) / blur(weight), so the outside of the mask does not leak in
    (a border pixel is the average of the face around it, not of the face and the background)."""
    kernel = gaussian_kernel(sigma, values.dtype, values.device)
    channels = values.shape[1] + 1
    stack = torch.cat([values * weight, weight], dim=1)
    pad = len(kernel) // 2
    rows = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    cols = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    stack = F.conv2d(F.pad(stack, (pad, pad, 0, 0), mode="replicate"), rows, groups=channels)
    stack = F.conv2d(F.pad(stack, (0, 0, pad, pad), mode="replicate"), cols, groups=channels)
    return stack[:, :-1] / stack[:, -1:].clamp_min(1e-6)


def anchor_loss(normals: torch.Tensor, prior: torch.Tensor, mask: torch.Tensor, section: AnchorSection) -> torch.Tensor:
    """Masked cosine distance between the blurred normals and the blurred coarse face, over the face mask where the
    coarse face is drawn (0 when it is drawn nowhere: a photo without a face, or a dropped prior)."""
    region = ((mask > 0.5) & (prior[:, 3:4] > 0.5)).float()
    sigma = section.sigma_px * normals.shape[-1] / 256.0
    # fp32 even inside the trainer's bf16 autocast: the term is ~4e-4, below bf16's resolution of a blurred unit vector
    with torch.autocast(normals.device.type, enabled=False):
        coarse_pred = masked_blur(normals.float(), region, sigma)
        coarse_prior = masked_blur(prior[:, :3].float(), region, sigma)
        return masked_cosine_distance(coarse_pred, coarse_prior, region)
