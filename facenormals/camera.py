"""Camera models shared by every layer: pinhole intrinsics with optional OpenCV distortion.

Pixels of an image of ``width`` × ``height``; the principal point uses the convention of
:mod:`facenormals.geometry` (pixel centres at integer coordinates).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics (pixels), with optional distortion coefficients (OpenCV order: k1 k2 p1 p2 [k3 ...])."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: tuple[float, ...] = ()

    def matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])


def intrinsics_from_matrix(matrix: object, shape: tuple[int, int]) -> Intrinsics:
    """An :class:`Intrinsics` from a 3×3 pinhole matrix, for an image of ``shape`` (rows, cols).

    >>> intrinsics_from_matrix([[500, 0, 319.5], [0, 500, 239.5], [0, 0, 1]], (480, 640)).cx
    319.5
    """
    if isinstance(matrix, Intrinsics):
        return matrix
    k = np.asarray(matrix, dtype=np.float64)
    if k.shape != (3, 3):
        raise ValueError(f"intrinsics must be an Intrinsics or a 3×3 matrix, got shape {k.shape}")
    return Intrinsics(width=shape[1], height=shape[0], fx=float(k[0, 0]), fy=float(k[1, 1]),
                      cx=float(k[0, 2]), cy=float(k[1, 2]))
