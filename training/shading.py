"""Shape-from-shading self-supervision (issue 14, optional): on unlabelled real photos, the predicted normals must
explain the photo's shading under some low-order light.

Why: the real photos train image→image only; nothing on them says anything about shape except the anchor (the
coarse face, low frequencies only) and distillation (a frozen teacher). Shading does: over skin, whose albedo is close
to constant, a Lambertian face under distant light gives I_c(p) ≈ a_c · SH(n(p)) · L_c, and with a free
per-image light the only way to explain the image's shading is with the right normals.

The loss, per image: linearise the image (``gamma``); keep skin pixels (the mask, minus clipped and near-black
pixels, minus chroma outliers: eyes, brows, lips, nostrils and hair differ from skin in colour more than shading
moves it, while shading under near-white light barely moves chromaticity); fit the light per channel (albedo folded
in) in closed form by ridge-regularised least squares; refit on the inliers after dropping the worst ``trim`` share
(specular highlights, cast shadows, whatever chroma did not catch); smooth image and modelled shading alike over skin
(``smooth_px``: noise, JPEG, pores); the loss is the Charbonnier residual of the log-intensity gradients minus the
log-shading gradients (default ``domain = "log-gradient"``: slowly varying albedo cancels) or of the relative
intensity (``"intensity"``), averaged over the inliers. The batch carries no landmarks, hence the colour-based region
rather than a landmark one.

The light is detached by default: at the least-squares optimum the plain squared residual's gradient through the
light vanishes (the envelope theorem), and through the robust residual it mostly lets the normals move the light
instead of the shape (gradient descent on a sphere's normals: 10.8 → 6.8° detached, 7.9° through the solve, in as
many steps); ``differentiable_light = true`` keeps it.

Blind spot, by construction: SH of order ≤ 2 is closed under rotation, so a global rotation of all normals is
explained exactly by a rotated light — the loss constrains the normals' shape up to a global rotation (the anchor
holds the coarse orientation). Renders break the model too (directional light with wrap, cast shadows, specular,
tone clipping: ``training/data/lighting.py``); ``benchmarks/shading_rank.py`` measures whether it still ranks.

Configured by ``[shading]`` in the training TOML; off (``weight = 0``) by default. Costs one 9×9 solve per image
on image-only steps (the image→normal forward is shared with image→image).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from facenormals.training.anchor import masked_blur

DOMAINS = ("intensity", "log-gradient")
SH_ORDERS = {1: 4, 2: 9}  # SH order → coefficients per channel
MIN_PIXELS = 64  # an image with fewer skin pixels than this says nothing (it is left out of the mean)
CLIPPED = 0.98  # encoded value above which a channel is tone-clipped: its shading is lost
DARK = 0.02  # encoded luminance below which a pixel is too dark to carry shading (noise, deep shadow, nostrils)


@dataclass(frozen=True)
class ShadingSection:
    weight: float = 0.0  # 0 = off; added to the image-only steps' loss with this weight
    sh_order: int = 2  # 1 (4 coefficients per channel) or 2 (9)
    # "log-gradient": residual of ∇log I − ∇log shading (slowly varying albedo cancels); "intensity": relative residual.
    # log-gradient with smooth_px 2 ranked normal maps closest to their angular error on all three labelled sets
    # (benchmarks/results/issue14-shading/summary.md)
    domain: str = "log-gradient"
    gamma: float = 2.2  # the image's encoding: linear = image ** gamma
    ridge: float = 1e-3  # Tikhonov weight on the light, relative to the normal matrix's mean diagonal
    trim: float = 0.2  # share of each image's worst skin pixels dropped from the refit and the loss
    chroma_k: float = 3.0  # skin = chromaticity within k robust σ of the image's median (0 = no colour rejection)
    charbonnier_eps: float = 0.01  # Charbonnier ε of the residual (≈ 1 % of the mean intensity)
    # Gaussian σ (pixels of a 256² crop) applied over skin to the image and the model's shading alike before the
    # residual: sensor noise, JPEG blocks and pore-scale albedo average out, shading at the shape's scale stays
    smooth_px: float = 2.0
    differentiable_light: bool = False  # back-propagate through the light's solve

    def __post_init__(self) -> None:
        finite = (self.weight, self.gamma, self.ridge, self.trim, self.chroma_k, self.charbonnier_eps, self.smooth_px)
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in finite):
            raise ValueError(f"shading: weight, gamma, ridge, trim, chroma_k, charbonnier_eps, smooth_px must be "
                             f"finite numbers, got {self}")
        if self.weight < 0:
            raise ValueError(f"shading.weight must be ≥ 0 (0 = off), got {self.weight}")
        if self.sh_order not in SH_ORDERS:
            raise ValueError(f"shading.sh_order must be one of {sorted(SH_ORDERS)}, got {self.sh_order!r}")
        if self.domain not in DOMAINS:
            raise ValueError(f"shading.domain {self.domain!r} unknown; choose one of {list(DOMAINS)}")
        if not self.gamma > 0 or self.ridge < 0 or self.chroma_k < 0 or not self.charbonnier_eps > 0 or self.smooth_px < 0:
            raise ValueError(f"shading: gamma and charbonnier_eps must be > 0, ridge, chroma_k and smooth_px ≥ 0, "
                             f"got {self}")
        if not 0.0 <= self.trim < 0.9:
            raise ValueError(f"shading.trim must be in [0, 0.9), got {self.trim}")


def sh_basis(normals: torch.Tensor, order: int = 2) -> torch.Tensor:
    """…×3 unit normals → …×(4|9) order-1/2 real SH irradiance basis, the clamped cosine folded in (Ramamoorthi &
    Hanrahan 2001; the same basis as the renderer's ``training.data.lighting.sh_basis``)."""
    x, y, z = normals.unbind(-1)
    c1, c2, c3, c4, c5 = 0.429043, 0.511664, 0.743125, 0.886227, 0.247708
    terms = [torch.full_like(x, c4), 2 * c2 * y, 2 * c2 * z, 2 * c2 * x]
    if order == 2:
        terms += [2 * c1 * x * y, 2 * c1 * y * z, c3 * z * z - c5, 2 * c1 * x * z, c1 * (x * x - y * y)]
    return torch.stack(terms, dim=-1)


def skin_weights(linear: torch.Tensor, encoded: torch.Tensor, mask: torch.Tensor, chroma_k: float) -> torch.Tensor:
    """N×1×H×W {0, 1}: mask pixels that are neither clipped nor near black, and (``chroma_k`` > 0) whose chromaticity
    lies within ``chroma_k`` robust σ (1.4826·MAD, at least 0.01) of the image's median over those pixels."""
    luminance = encoded.mean(dim=1, keepdim=True)
    keep = (mask > 0.5) & (encoded.amax(dim=1, keepdim=True) < CLIPPED) & (luminance > DARK)
    if chroma_k <= 0:
        return keep.float()
    chroma = linear[:, :2] / linear.sum(dim=1, keepdim=True).clamp_min(1e-6)  # r, g (b follows)
    for i in range(len(linear)):
        inside = keep[i, 0]
        if inside.sum() < MIN_PIXELS:
            continue
        values = chroma[i][:, inside]  # 2×P
        median = values.median(dim=1, keepdim=True).values
        sigma = (1.4826 * (values - median).abs().median(dim=1, keepdim=True).values).clamp_min(0.01)
        typical = ((chroma[i] - median[..., None]).abs() <= chroma_k * sigma[..., None]).all(dim=0)
        keep[i, 0] &= typical
    return keep.float()


def fit_light(basis: torch.Tensor, linear: torch.Tensor, weights: torch.Tensor, ridge: float) -> torch.Tensor:
    """Weighted ridge least squares per image: basis N×P×K, linear N×P×3, weights N×P → light N×K×3."""
    weighted = basis * weights[..., None]
    normal_matrix = weighted.transpose(1, 2) @ basis  # N×K×K
    scale = normal_matrix.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(1e-12)
    eye = torch.eye(basis.shape[-1], dtype=basis.dtype, device=basis.device)
    return torch.linalg.solve(normal_matrix + (ridge * scale)[:, None, None] * eye, weighted.transpose(1, 2) @ linear)


def charbonnier(residual: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.sqrt(residual * residual + eps * eps) - eps


def _smoothed(values: torch.Tensor, weights: torch.Tensor, sigma: float) -> torch.Tensor:
    """``values`` blurred over skin only (a normalised convolution: no background or eye leaks in); as is for σ 0."""
    return masked_blur(values, weights, sigma) if sigma > 0 else values


def _pixel_residuals(linear: torch.Tensor, shading: torch.Tensor, weights: torch.Tensor, level: torch.Tensor,
                     section: ShadingSection) -> tuple[torch.Tensor, torch.Tensor]:
    """(N×H×W robust residual per pixel, N×H×W validity). ``level`` N×3 is each channel's mean skin intensity, so
    the residual is relative: invariant to the albedo's and the light's scale."""
    if section.domain == "intensity":
        relative = (linear - shading) / level[..., None, None]
        return charbonnier(relative, section.charbonnier_eps).mean(dim=1), weights[:, 0] > 0.5
    floor = 0.05 * level[..., None, None]  # log of a near-zero shading would blow up on one bad normal
    log_ratio = torch.log(linear.clamp_min(floor)) - torch.log(shading.clamp_min(floor))  # ≈ log albedo + residual
    valid = weights[:, 0] > 0.5
    dx = log_ratio[..., :, 1:] - log_ratio[..., :, :-1]
    dy = log_ratio[..., 1:, :] - log_ratio[..., :-1, :]
    valid_x = valid[..., :, 1:] & valid[..., :, :-1]
    valid_y = valid[..., 1:, :] & valid[..., :-1, :]
    # each pixel carries its forward differences (0 where a neighbour is not skin): one residual per pixel
    rho = F.pad(charbonnier(dx, section.charbonnier_eps).mean(dim=1) * valid_x, (0, 1)) + \
        F.pad(charbonnier(dy, section.charbonnier_eps).mean(dim=1) * valid_y, (0, 0, 0, 1))
    valid_any = F.pad(valid_x, (0, 1)) | F.pad(valid_y, (0, 0, 0, 1))
    return rho, valid_any


def _trimmed(rho: torch.Tensor, valid: torch.Tensor, trim: float) -> torch.Tensor:
    """N×H×W: valid pixels whose residual is within the best (1 - trim) share of their image's (threshold detached)."""
    inliers = valid.clone()
    if trim <= 0:
        return inliers
    for i in range(len(rho)):
        if valid[i].sum() >= MIN_PIXELS:
            threshold = torch.quantile(rho[i][valid[i]].detach().float(), 1.0 - trim)
            inliers[i] &= rho[i].detach() <= threshold
    return inliers


def shading_loss_per_image(normals: torch.Tensor, image: torch.Tensor, mask: torch.Tensor,
                           section: ShadingSection) -> tuple[torch.Tensor, torch.Tensor]:
    """(N per-image losses, N bool: the image had enough skin to count). normals N×3×H×W (camera space, unit or
    not), image N×3×H×W encoded RGB in [0, 1], mask N×1×H×W."""
    if mask.dim() == 3:
        mask = mask[:, None]
    with torch.autocast(normals.device.type, enabled=False):  # fp32 even inside bf16 autocast: a 9×9 solve
        normals = F.normalize(normals.float(), dim=1, eps=1e-6)
        encoded = image.float().clamp(0.0, 1.0)
        linear = encoded ** section.gamma
        weights = skin_weights(linear.detach(), encoded.detach(), mask.float(), section.chroma_k)
        n, _, h, w = normals.shape
        basis = sh_basis(normals.permute(0, 2, 3, 1).reshape(n, h * w, 3), section.sh_order)
        pixels = linear.permute(0, 2, 3, 1).reshape(n, h * w, 3)
        counts = weights.flatten(1).sum(dim=1)
        level = (pixels * weights.flatten(1)[..., None]).sum(dim=1) / counts.clamp_min(1.0)[:, None]
        level = level.clamp_min(1e-4)
        fit_weights = weights.flatten(1)
        sigma = section.smooth_px * w / 256.0
        observed = _smoothed(linear, weights, sigma)
        for _ in range(2):  # fit on all skin, then refit on the inliers of that fit
            light = fit_light(basis if section.differentiable_light else basis.detach(), pixels, fit_weights,
                              section.ridge)
            if not section.differentiable_light:
                light = light.detach()
            shading = (basis @ light).reshape(n, h, w, 3).permute(0, 3, 1, 2)
            rho, valid = _pixel_residuals(observed, _smoothed(shading, weights, sigma), weights, level, section)
            inliers = _trimmed(rho, valid, section.trim)
            fit_weights = (inliers.flatten(1) & (weights.flatten(1) > 0.5)).float()
        kept = inliers.flatten(1).float()
        losses = (rho.flatten(1) * kept).sum(dim=1) / kept.sum(dim=1).clamp_min(1.0)
        return losses, counts >= MIN_PIXELS


def shading_loss(normals: torch.Tensor, image: torch.Tensor, mask: torch.Tensor,
                 section: ShadingSection) -> torch.Tensor:
    """The mean of the per-image losses over the images with enough skin (0 when none has)."""
    losses, counted = shading_loss_per_image(normals, image, mask, section)
    return (losses * counted).sum() / counted.sum().clamp_min(1)
