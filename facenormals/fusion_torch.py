"""The fusion solve's conjugate gradients in torch, batched and Jacobi-preconditioned: the CUDA route of
:func:`facenormals.fusion.solve_cg` (on the CPU that function runs :func:`facenormals.fusion_cg.solve_pcg` instead).
Its own module so that nothing on the CPU route imports torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # annotations only: facenormals.fusion imports this module (its CUDA route), not the reverse
    from facenormals.fusion import FusionProblem

STENCIL = ("w_pos", "ax", "bx", "wx", "ay", "by", "wy", "target")


def stencil_tensors(problems: list[FusionProblem], device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.stack([getattr(p, k) for p in problems])).to(device=device, dtype=dtype)
            for k in STENCIL}


def apply_stencil(t: dict[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    """A·z for a batch B×H×W."""
    out = t["w_pos"] * z
    qx = t["wx"] * (t["ax"] * z[:, :, 1:] - t["bx"] * z[:, :, :-1])
    out[:, :, 1:] += t["ax"] * qx
    out[:, :, :-1] -= t["bx"] * qx
    qy = t["wy"] * (t["ay"] * z[:, 1:, :] - t["by"] * z[:, :-1, :])
    out[:, 1:, :] += t["ay"] * qy
    out[:, :-1, :] -= t["by"] * qy
    return out


def solve_cg_batched(problems: list[FusionProblem], starts: list[np.ndarray], diagonals: list[np.ndarray],
                     device: str | torch.device, max_iterations: int,
                     tolerance: float) -> tuple[list[np.ndarray], int]:
    """All ``problems`` (one window each, equal shapes) at once from ``starts``, Jacobi-preconditioned by their
    matrices' ``diagonals`` (:func:`facenormals.fusion.stencil_diagonal`): (solutions, iterations used)."""
    device = torch.device(device)
    t64 = stencil_tensors(problems, device, torch.float64)
    x0 = torch.from_numpy(np.stack(starts)).to(device=device, dtype=torch.float64)
    b = t64["w_pos"] * t64["target"]
    b_norm = torch.linalg.vector_norm(b.flatten(1), dim=1).clamp_min(1e-30)
    r = (b - apply_stencil(t64, x0)).float()
    t = {k: v.float() for k, v in t64.items()}
    inv_diag = 1.0 / torch.from_numpy(np.stack(diagonals)).to(device=device, dtype=torch.float32).clamp_min(1e-12)
    b_norm = b_norm.float()
    x = torch.zeros_like(r)
    z = inv_diag * r
    p = z.clone()
    rz = (r * z).sum(dim=(1, 2))
    iterations = 0
    active = torch.ones(len(problems), dtype=torch.bool, device=device)
    for iterations in range(1, max_iterations + 1):  # noqa: B007 - the count is returned
        q = apply_stencil(t, p)
        alpha = torch.where(active, rz / (p * q).sum(dim=(1, 2)).clamp_min(1e-30), 0.0)
        x += alpha[:, None, None] * p
        r -= alpha[:, None, None] * q
        rel = torch.linalg.vector_norm(r.flatten(1), dim=1) / b_norm
        active = rel >= tolerance
        if not bool(active.any()):
            break
        z = inv_diag * r
        rz_new = (r * z).sum(dim=(1, 2))
        beta = rz_new / rz.clamp_min(1e-30)
        p = z + beta[:, None, None] * p
        rz = rz_new
    else:
        iterations = max_iterations
    return list((x0 + x.double()).cpu().numpy()), iterations
