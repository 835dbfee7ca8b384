"""The face's parts on a crop, from MediaPipe's 468 landmarks: where in the face an error lies (``eval --diagnose``).

Each part is the convex hull of one of MediaPipe's landmark groups (``mp.solutions.face_mesh``'s connection sets, read
from the installed wheel), both sides united where it has two: **eyes** (the lid contours), **brows**, **mouth** (the
outer lip contour, so an open mouth's inside counts as mouth) and **nose** (bridge to nostrils). A pixel belongs to the
first part in that order whose hull holds it (the nose's hull reaches the eyes' inner corners), and **rest** is the
mask's remaining pixels: cheeks, forehead, chin and jaw. Hulls are used rather than the contours' polygons: they need
no ordering of MediaPipe's edge sets, and every group but the mouth (whose hull is the mouth) is near-convex seen
from the front.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from facenormals.geometry import hull_mask

PART_NAMES = ("eyes", "brows", "mouth", "nose")  # in precedence order; "rest" takes what they leave
REST = "rest"
NUM_MESH_POINTS = 468
_CONNECTION_SETS = {"eyes": ("FACEMESH_LEFT_EYE", "FACEMESH_RIGHT_EYE"),
                    "brows": ("FACEMESH_LEFT_EYEBROW", "FACEMESH_RIGHT_EYEBROW"),
                    "mouth": ("FACEMESH_LIPS",), "nose": ("FACEMESH_NOSE",)}


@lru_cache(maxsize=1)
def part_groups() -> dict[str, tuple[tuple[int, ...], ...]]:
    """Per part, the landmark indices of each of its hulls (sorted), from MediaPipe's connection sets."""
    from mediapipe.python.solutions import face_mesh_connections as connections

    return {part: tuple(tuple(sorted({i for edge in getattr(connections, name) for i in edge})) for name in names)
            for part, names in _CONNECTION_SETS.items()}


def face_part_masks(points: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """Disjoint bool masks (H×W each) of the parts and ``rest`` inside ``mask``, from landmark crop points (N×2|3,
    our frame: x = column, y = −row; N ≥ 468) on that mask's crop. They cover ``mask`` exactly."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[0] < NUM_MESH_POINTS or points.shape[1] < 2:
        raise ValueError(f"face parts need MediaPipe's {NUM_MESH_POINTS} landmarks as an N×2|3 array, got {points.shape}")
    mask = np.asarray(mask, dtype=bool)
    pixels = np.stack([points[:, 0], -points[:, 1]], axis=1)
    taken = np.zeros_like(mask)
    out: dict[str, np.ndarray] = {}
    groups = part_groups()
    for part in PART_NAMES:
        region = np.zeros_like(mask)
        for indices in groups[part]:
            region |= hull_mask(pixels[list(indices)], mask.shape)
        out[part] = region & mask & ~taken
        taken |= out[part]
    out[REST] = mask & ~taken
    return out
