"""Training-time consistency (issue 16, optional): the same face under other light and another crop must give the same
normals.

A per-frame network that is not equivariant to the crop's scale, shift and in-plane rotation, or not invariant to the
light, changes its output whenever the crop transform or the light changes — flicker and drift that a temporal filter
cannot remove (it sees them as slow, systematic changes). This term asks for it directly, on any batch with images:

1. a second view of each image is made in the batch: a random similarity warp (rotation ``±rotate_deg``, zoom
   ``±scale``, shift ``±shift`` of the side, about the centre) and a relighting (gain ``1 ± light``, a linear
   brightness gradient of slope ``±light`` in a random direction, like the sample clip's moving side light);
2. both views go through E_I → D_N;
3. the first view's normals are moved into the second view by the same warp, their x/y rotated by its rotation
   (:func:`facenormals.temporal.rotate_normals_xy`'s convention), and compared with the second view's by the masked
   cosine distance, over the face mask pixels that stay inside the view.

Identical views (every range 0) give 0. Configured by ``[consistency]`` in the training TOML; off (``weight = 0``)
by default. Costs one more E_I → D_N forward and backward per step (two on image-only steps, whose step has no
normal output to reuse).

Convention: image tensors N×C×H×W, square; normals camera space (+x right, +y up, +z toward the camera); the warp in
pixel axes (x right, y down) with ``align_corners=False``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from facenormals.training.losses import masked_cosine_distance


@dataclass(frozen=True)
class ConsistencySection:
    weight: float = 0.0  # 0 = off; the term is added to the image→normal steps' loss with this weight
    rotate_deg: float = 10.0  # in-plane rotation of the second view, ± (degrees)
    scale: float = 0.1  # zoom of the second view, ±
    shift: float = 0.05  # shift of the second view, ± (fraction of the side)
    light: float = 0.3  # relighting: gain 1 ± light, brightness gradient slope ± light across the half side

    def __post_init__(self) -> None:
        values = (self.weight, self.rotate_deg, self.scale, self.shift, self.light)
        if any(v < 0 or not math.isfinite(v) for v in values) or self.scale >= 1 or self.light >= 1:
            raise ValueError(f"consistency: weight, rotate_deg, scale, shift, light must be ≥ 0 (scale, light < 1); "
                             f"got {self}")


@dataclass(frozen=True)
class SecondView:
    """Per-sample warp (``theta``: N×2×3, second-view normalised coordinates → first view's, for ``affine_grid``),
    its rotation (radians, pixel axes) and the relighting (gain N, gradient slope N×2)."""

    theta: torch.Tensor
    angle: torch.Tensor
    gain: torch.Tensor
    slope: torch.Tensor


def draw_view(n: int, cfg: ConsistencySection, generator: torch.Generator | None = None) -> SecondView:
    """Random second-view parameters for ``n`` samples (uniform in the configured ranges; torch's RNG, so a resumed
    run draws the same ones)."""

    def uniform(bound: float, *shape: int) -> torch.Tensor:
        return (torch.rand(n, *shape, generator=generator) * 2.0 - 1.0) * bound

    angle = uniform(math.radians(cfg.rotate_deg))
    zoom = 1.0 + uniform(cfg.scale)
    shift = uniform(2.0 * cfg.shift, 2)  # normalised coordinates span 2 per side
    # forward map (first view → second, normalised coords, y down): p2 = zoom · R(angle) · p1 + shift
    cos, sin = torch.cos(angle), torch.sin(angle)
    inverse = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2) / zoom[:, None, None]
    theta = torch.cat([inverse, -(inverse @ shift[:, :, None])], dim=2)
    direction = uniform(math.pi)
    slope = uniform(cfg.light)[:, None] * torch.stack([torch.cos(direction), torch.sin(direction)], -1)
    return SecondView(theta, angle, 1.0 + uniform(cfg.light), slope)


def warp(maps: torch.Tensor, view: SecondView) -> torch.Tensor:
    """Any N×C×H×W maps resampled into the second view (bilinear; 0 outside the first view)."""
    grid = F.affine_grid(view.theta.to(maps.dtype), list(maps.shape), align_corners=False)
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def rotate_xy(normals: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Normals (N×3×H×W, +y up) of a surface whose image turned by ``angle`` (N, radians, pixel axes, y down): x/y
    rotated with it, z unchanged (as :func:`facenormals.temporal.rotate_normals_xy`)."""
    cos = torch.cos(angle).to(normals.dtype)[:, None, None]
    sin = torch.sin(angle).to(normals.dtype)[:, None, None]
    x, y, z = normals.unbind(1)
    return torch.stack([cos * x + sin * y, -sin * x + cos * y, z], 1)


def relight(image: torch.Tensor, view: SecondView) -> torch.Tensor:
    """RGB in [0, 1] under the second view's gain and linear brightness gradient (clipped to [0, 1])."""
    size = image.shape[-1]
    axis = (torch.arange(size, dtype=image.dtype) + 0.5) * (2.0 / size) - 1.0
    slope = view.slope.to(image.dtype)
    ramp = slope[:, 0, None, None] * axis[None, None, :] + slope[:, 1, None, None] * axis[None, :, None]
    return (image * (view.gain.to(image.dtype)[:, None, None, None] * (1.0 + ramp[:, None]))).clamp(0.0, 1.0)


def second_view_input(image: torch.Tensor, prior: torch.Tensor | None, view: SecondView) -> torch.Tensor:
    """E_I's input for the second view: the warped, relit image (and the prior, warped with its normals turned)."""
    moved = relight(warp(image, view), view)
    if prior is None:
        return moved
    prior2 = warp(prior.to(image.dtype), view)
    return torch.cat([moved, rotate_xy(prior2[:, :3], view.angle), prior2[:, 3:]], dim=1)


def consistency_loss(first: torch.Tensor, second: torch.Tensor, mask: torch.Tensor, view: SecondView) -> torch.Tensor:
    """Masked cosine distance between the second view's normals and the first view's moved into it (both N×3×H×W);
    ``mask`` (N×1×H×W) is the first view's face mask, kept where its warp is whole (≥ 0.99)."""
    moved = rotate_xy(warp(first, view), view.angle)
    inside = (warp(mask.to(first.dtype), view) >= 0.99).to(first.dtype)
    return masked_cosine_distance(second, moved, inside)
