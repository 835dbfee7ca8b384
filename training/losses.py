"""The paper's losses, averaged over the facial mask only.

    normals: 1 - cos(pred, target)  (cosine distance; pred is unit already, target unit inside the mask)
    images:  squared error per channel (L2)

Shapes: pred/target N×3×H×W, mask N×1×H×W (or N×H×W) float or bool; pixels outside it never
contribute a gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _mask4(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    mask = mask.to(like.dtype)
    if mask.dim() == 3:
        mask = mask.unsqueeze(1)
    if mask.shape[0] != like.shape[0] or mask.shape[-2:] != like.shape[-2:]:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match prediction {tuple(like.shape)}")
    return mask


def masked_cosine_distance(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - cos(pred, target) over mask pixels (0 when the mask is empty)."""
    mask = _mask4(mask, pred)
    cos = F.cosine_similarity(pred, target, dim=1, eps=1e-6).unsqueeze(1)
    return ((1.0 - cos) * mask).sum() / mask.sum().clamp_min(1.0)


def masked_l2(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over mask pixels and channels (0 when the mask is empty)."""
    mask = _mask4(mask, pred)
    squared = (pred - target).pow(2) * mask
    return squared.sum() / (mask.sum() * pred.shape[1]).clamp_min(1.0)
