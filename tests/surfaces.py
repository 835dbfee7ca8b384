"""Analytic surfaces seen by a pinhole camera, with exact depth and normals (our camera space, +z to the camera)."""

from __future__ import annotations

import numpy as np

from facenormals.camera import Intrinsics
from facenormals.depth import pixel_rays


def sphere_depth(intr: Intrinsics, centre_z: float = 0.6, radius: float = 0.1):
    """Ray-cast sphere centred on the optical axis: depth (NaN off the sphere), unit normals (0 off it), hit mask."""
    rays = pixel_rays(intr).astype(np.float64)
    centre = np.array([0.0, 0.0, -centre_z])
    a, b, c = (rays**2).sum(-1), -2 * rays @ centre, centre @ centre - radius**2
    disc = b * b - 4 * a * c
    hit = disc > 0
    t = (-b - np.sqrt(np.where(hit, disc, 0))) / (2 * a)
    normals = ((rays * t[..., None] - centre) / radius).astype(np.float32)
    normals[~hit] = 0
    return np.where(hit, t, np.nan).astype(np.float32), normals, hit
