"""Cameras that map camera-space points to crop pixels, and the paper's crop expressed as a camera.

Convention: camera space is OpenGL's (+x right, +y up, +z toward the viewer; the camera looks down −z).
Pixels are (x, y) = (column, row) with y down, pixel centres at integers (as in facenormals.geometry).
``depth`` is the positive distance along the viewing axis, in the mesh's units.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from facenormals.geometry import SquareBox, crop_matrix, square_box


@dataclass(frozen=True)
class PinholeCamera:
    """Perspective projection: pixel = (cx + f·X/d, cy − f·Y/d) with d = −Z."""

    focal: float
    cx: float
    cy: float
    perspective = True

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        points = np.asarray(points, dtype=np.float64)
        depth = -points[:, 2]
        safe = np.where(depth > 1e-9, depth, np.nan)
        xy = np.stack([self.cx + self.focal * points[:, 0] / safe, self.cy - self.focal * points[:, 1] / safe], 1)
        return xy, depth

    def as_dict(self) -> dict:
        return {"type": "pinhole", **asdict(self)}


@dataclass(frozen=True)
class WeakPerspectiveCamera:
    """Scaled orthographic projection: pixel = (cx + s·X, cy − s·Y); depth still metric (−Z)."""

    scale: float
    cx: float
    cy: float
    perspective = False

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        points = np.asarray(points, dtype=np.float64)
        xy = np.stack([self.cx + self.scale * points[:, 0], self.cy - self.scale * points[:, 1]], 1)
        return xy, -points[:, 2]

    def as_dict(self) -> dict:
        return {"type": "weak-perspective", **asdict(self)}


Camera = PinholeCamera | WeakPerspectiveCamera


def crop_camera(kind: str, landmarks_cam: np.ndarray, size: int, jitter_shift: tuple[float, float] = (0.0, 0.0),
                jitter_scale: float = 1.0) -> tuple[Camera, SquareBox]:
    """The camera whose image is the paper's crop around ``landmarks_cam`` (camera-space points).

    The landmarks are projected with a unit camera, the 1.2× tightest square is taken
    (:func:`facenormals.geometry.square_box`, as the realtime path does), optionally shifted by a fraction
    of its side and scaled (detector jitter), and folded into the camera's focal length and centre.
    """
    unit: Camera = PinholeCamera(1.0, 0.0, 0.0) if kind == "pinhole" else WeakPerspectiveCamera(1.0, 0.0, 0.0)
    if kind not in ("pinhole", "weak-perspective"):
        raise ValueError(f"camera must be 'pinhole' or 'weak-perspective', got {kind!r}")
    xy, depth = unit.project(landmarks_cam)
    if (depth <= 0).any():
        raise ValueError("landmarks behind the camera")
    box = square_box(xy)
    box = SquareBox(box.cx + jitter_shift[0] * box.side, box.cy + jitter_shift[1] * box.side, box.side * jitter_scale)
    m = crop_matrix(box, size)
    if kind == "pinhole":
        return PinholeCamera(m[0, 0], m[0, 2], m[1, 2]), box
    return WeakPerspectiveCamera(m[0, 0], m[0, 2], m[1, 2]), box
