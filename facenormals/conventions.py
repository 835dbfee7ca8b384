"""The one source of truth for how normals are represented.

Convention (used everywhere in facenormals):
    camera space, +x = image right, +y = image **up**, +z = toward the camera.
    Normal maps are H×W×3 float32 (or N×3×H×W tensors), unit length inside the mask.
    Encoded maps store (n + 1) / 2 per channel, RGB order (R = x, G = y, B = z).

Pixel rows grow downwards, so a surface facing the top of the image has n_y > 0.

>>> import numpy as np
>>> n = np.array([[[0.0, 0.0, 1.0]]], dtype=np.float32)
>>> encode_normals(n).tolist()
[[[0.5, 0.5, 1.0]]]
>>> decode_normals(encode_normals(n)).tolist()
[[[0.0, 0.0, 1.0]]]
"""

from __future__ import annotations

import numpy as np

CONVENTION = "camera: +x right, +y up, +z toward camera; encoded (n+1)/2"
CONVENTION_VERSION = 1
UNIT_TOLERANCE = 0.05  # |‖n‖-1| allowed in files: 8-bit quantisation alone gives ~0.01


def encode_normals(normals: np.ndarray) -> np.ndarray:
    """Map unit normals in [-1, 1] to [0, 1] by (n + 1) / 2 (zero vectors stay at 0.5)."""
    return (np.asarray(normals, dtype=np.float32) + 1.0) * 0.5


def decode_normals(encoded: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_normals`: [0, 1] → [-1, 1] (no renormalisation)."""
    return np.asarray(encoded, dtype=np.float32) * 2.0 - 1.0


def normalize(normals: np.ndarray, axis: int = -1, eps: float = 1e-8) -> np.ndarray:
    """L2-normalise along ``axis``; zero vectors stay zero."""
    normals = np.asarray(normals, dtype=np.float32)
    length = np.linalg.norm(normals, axis=axis, keepdims=True)
    return normals / np.maximum(length, eps)


def angular_error_deg(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-pixel angle in degrees between two H×W×3 normal maps (both renormalised first)."""
    if pred.shape != target.shape:
        raise ValueError(f"normal maps differ in shape: {pred.shape} vs {target.shape}")
    a, b = normalize(pred), normalize(target)
    # atan2(|a×b|, a·b) stays accurate near 0°, where float32 arccos loses ~0.02°
    sin = np.linalg.norm(np.cross(a, b), axis=-1)
    cos = np.sum(a * b, axis=-1)
    return np.degrees(np.arctan2(sin, cos))


def sphere_normals(size: int, radius_frac: float = 0.45) -> tuple[np.ndarray, np.ndarray]:
    """Analytic normals of a sphere seen orthographically, centred in a size×size image.

    Returns (normals H×W×3 in our convention, mask H×W bool). Used by tests and docs.
    """
    centre = (size - 1) / 2.0
    radius = radius_frac * size
    cols, rows = np.meshgrid(np.arange(size), np.arange(size))
    x = (cols - centre) / radius
    y = -(rows - centre) / radius  # rows grow downward, +y is up
    r2 = x * x + y * y
    mask = r2 < 1.0
    z = np.sqrt(np.clip(1.0 - r2, 0.0, None))
    normals = np.stack([x, y, z], axis=-1).astype(np.float32)
    normals[~mask] = 0.0
    return normals, mask
