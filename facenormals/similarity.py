"""The weighted similarity (scale, rotation, translation) between two 3-D point sets: Umeyama's closed form."""

from __future__ import annotations

import numpy as np


def weighted_similarity(source: np.ndarray, target: np.ndarray, weights: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Umeyama: the scale, rotation and translation minimising Σ wᵢ‖s·R·srcᵢ + t − tgtᵢ‖² (no reflection)."""
    w = weights / weights.sum()
    mu_s, mu_t = w @ source, w @ target
    src, tgt = source - mu_s, target - mu_t
    cov = (tgt * w[:, None]).T @ src
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(3)
    d[2] = np.sign(np.linalg.det(u @ vt)) or 1.0
    rot = u @ np.diag(d) @ vt
    var = float(w @ np.sum(src * src, axis=1))
    scale = float((sig * d).sum() / max(var, 1e-12))
    return scale, rot, mu_t - scale * rot @ mu_s
