"""Lambertian shading of depth surfaces: with their own normals, with predicted normals (normal mapping), refined.

Normal-mapped shading (the paper's supplementary material) keeps the sensor's geometry but lights it with the
network's normals, which carry the detail the depth lacks. Normals are camera space (+x right, +y up, +z toward
the camera); the light is a unit direction toward the light in the same space.

>>> import numpy as np
>>> lambert(np.array([[[0.0, 0.0, 1.0]]], np.float32), np.array([0.0, 0.0, 1.0])).round(3).tolist()
[[1.0]]
"""

from __future__ import annotations

import numpy as np

AMBIENT = 0.12  # light reaching surfaces that face away from the light


def lambert(normals: np.ndarray, light: np.ndarray, ambient: float = AMBIENT) -> np.ndarray:
    """Per-pixel intensity in [0, 1] of unit normals under a directional light; zero/NaN normals give 0."""
    light = np.asarray(light, dtype=np.float32)
    light = light / max(float(np.linalg.norm(light)), 1e-8)
    normals = np.nan_to_num(np.asarray(normals, dtype=np.float32))
    cosine = np.clip(normals @ light, 0.0, 1.0)
    defined = np.any(normals != 0, axis=-1)
    return np.where(defined, ambient + (1.0 - ambient) * cosine, 0.0).astype(np.float32)


def to_gray_bgr(intensity: np.ndarray, valid: np.ndarray, background: int = 24) -> np.ndarray:
    """Intensity → BGR uint8 (grey plaster); invalid pixels get ``background``."""
    grey = np.where(valid, np.clip(intensity * 255.0, 0, 255), background).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)
