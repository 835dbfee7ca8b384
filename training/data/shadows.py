"""Cast shadows of the directional light: an orthographic shadow map rendered from the light.

Convention: camera space (+x right, +y up, +z toward the camera); the light direction points toward the light.
"""

from __future__ import annotations

import numpy as np

from facenormals.training.data.renderer import rasterize


def light_basis(direction: np.ndarray) -> np.ndarray:
    """Rows u, v, w: w toward the light, u and v spanning the shadow map's plane."""
    w = direction / np.linalg.norm(direction)
    helper = np.array([0.0, 1.0, 0.0]) if abs(w[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u = np.cross(helper, w)
    u /= np.linalg.norm(u)
    return np.stack([u, np.cross(w, u), w])


def shadow_factor(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray, normals: np.ndarray,
                  direction: np.ndarray, bias: float, resolution: int = 192,
                  cull_backfaces: bool = True) -> np.ndarray:
    """1 where ``points`` (N×3, camera space, unit ``normals``) see the light, 0 in shadow (2×2 PCF edges).

    Self-shadowing ("acne") is avoided the usual way: each point is pushed one shadow-map texel along its
    normal, and the depth test allows ``bias`` (mesh units) plus a slope term that grows at grazing light.
    """
    basis = light_basis(np.asarray(direction, np.float64))
    lv = np.asarray(vertices, np.float64) @ basis.T  # (u, v, toward-light)
    u, v = lv[:, 0], lv[:, 1]
    lo, hi = np.array([u.min(), v.min()]), np.array([u.max(), v.max()])  # per column: numpy's strided min(0) is slow
    scale = (resolution - 2) / max(float((hi - lo).max()), 1e-9)
    xy = (lv[:, :2] - lo) * scale + 0.5
    xy[:, 1] = resolution - 1 - xy[:, 1]  # rows grow downward, as the rasteriser expects (v is "up")
    depth = (lv[:, 2].max() + 1.0) - lv[:, 2]  # positive, growing away from the light
    frags = rasterize(xy, depth, faces, (resolution, resolution), cull_backfaces=cull_backfaces, perspective=False)
    occluder = np.where(frags.covered, frags.depth, np.inf).astype(np.float32)
    texel = 1.0 / scale
    cos = np.clip(np.asarray(normals, np.float64) @ basis[2], 0.05, 1.0)
    slope = np.minimum(np.sqrt(1 - cos ** 2) / cos, 4.0) * texel
    lp = (np.asarray(points, np.float64) + texel * np.asarray(normals, np.float64)) @ basis.T
    px = (lp[:, 0] - lo[0]) * scale + 0.5
    py = resolution - 1 - ((lp[:, 1] - lo[1]) * scale + 0.5)
    pd = (lv[:, 2].max() + 1.0) - lp[:, 2]
    lit = np.zeros(len(points), np.float32)
    for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):  # percentage-closer filtering over the 2×2 neighbours
        cx = np.clip(np.floor(px).astype(np.int64) + dx, 0, resolution - 1)
        cy = np.clip(np.floor(py).astype(np.int64) + dy, 0, resolution - 1)
        lit += (pd <= occluder[cy, cx] + bias + slope).astype(np.float32)
    return lit / 4.0
