"""The paper's face crop and its inverse, shared by the data engine, evaluation and the realtime loop.

Convention: pixel coordinates are (x, y) = (column, row), origin at the centre of the top-left
pixel, y growing downwards. The crop is an axis-aligned square (scale + translation only), so
camera-space normals need no rotation when a crop is pasted back.

>>> import numpy as np
>>> points = np.array([[100, 100], [200, 100], [150, 220]], dtype=np.float32)
>>> box = square_box(points)
>>> [round(v, 1) for v in (box.cx, box.cy, box.side)]
[150.0, 160.0, 144.0]
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numba
import numpy as np

CROP_SCALE = 1.2  # the paper: 1.2 × the tightest square around the landmarks
CROP_SIZE = 256


@dataclass(frozen=True)
class SquareBox:
    """A square in frame pixels: centre and side length."""

    cx: float
    cy: float
    side: float

    def as_xyxy(self) -> tuple[float, float, float, float]:
        half = self.side / 2.0
        return (self.cx - half, self.cy - half, self.cx + half, self.cy + half)


@dataclass(frozen=True)
class Crop:
    """A face crop: RGB uint8 size×size×3, its facial mask, and the 2×3 affine ``M`` frame → crop."""

    image: np.ndarray
    mask: np.ndarray
    matrix: np.ndarray
    box: SquareBox

    def to_tensor_array(self) -> np.ndarray:
        """float32 3×S×S in [0, 1]: the network's input layout."""
        return np.ascontiguousarray(self.image.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)


def square_box(points: np.ndarray, scale: float = CROP_SCALE) -> SquareBox:
    """The tightest square around ``points`` (N×2, x/y), enlarged ``scale``× about its centre."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) < 2:
        raise ValueError(f"expected N×2 landmark points (N ≥ 2), got shape {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError("landmark points contain NaN or infinite values")
    lo, hi = points.min(axis=0), points.max(axis=0)
    side = float((hi - lo).max()) * scale
    if side <= 0:
        raise ValueError("landmark points are all identical: no face extent")
    centre = (lo + hi) / 2.0
    return SquareBox(float(centre[0]), float(centre[1]), side)


def box_from_mask(mask: np.ndarray, scale: float = CROP_SCALE) -> SquareBox:
    """Same square, from the pixels of a facial mask instead of landmarks."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        raise ValueError("mask is empty: no face extent")
    # pixel extents: a pixel covers [c - 0.5, c + 0.5]
    corners = np.array([[cols.min() - 0.5, rows.min() - 0.5], [cols.max() + 0.5, rows.max() + 0.5]])
    return square_box(corners, scale)


def crop_matrix(box: SquareBox, size: int = CROP_SIZE) -> np.ndarray:
    """2×3 affine mapping frame pixels to crop pixels (square box → size×size)."""
    s = size / box.side
    x0, y0 = box.cx - box.side / 2.0, box.cy - box.side / 2.0
    # pixel centres: frame edge x0 maps to crop edge -0.5
    return np.array([[s, 0.0, -x0 * s - 0.5], [0.0, s, -y0 * s - 0.5]], dtype=np.float64)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))


def hull_mask(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Filled convex hull of ``points`` as a bool mask of ``shape`` (rows, cols): the facial region."""
    canvas = np.zeros(shape, dtype=np.uint8)
    hull = cv2.convexHull(np.round(np.asarray(points) * 16).astype(np.int32))
    cv2.fillConvexPoly(canvas, hull, 255, lineType=cv2.LINE_8, shift=4)
    return canvas > 0


def face_crop(image: np.ndarray, landmarks: np.ndarray, size: int = CROP_SIZE,
              scale: float = CROP_SCALE) -> Crop:
    """The paper's crop of an RGB frame around 2-D landmarks; outside the frame is zero-padded.

    The mask is the convex hull of the landmarks in crop coordinates.
    """
    return box_crop(image, square_box(landmarks, scale), landmarks, size)


def box_crop(image: np.ndarray, box: SquareBox, hull_points: np.ndarray, size: int = CROP_SIZE) -> Crop:
    """The crop of an RGB frame on a given square (:func:`face_crop` without the landmark square: a face seen by
    the face detection alone, ``facenormals.keypoint_pose``); the mask is the convex hull of ``hull_points``."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected RGB uint8 H×W×3 image, got {image.dtype} {image.shape}")
    matrix = crop_matrix(box, size)
    interpolation = cv2.INTER_AREA if box.side > size else cv2.INTER_LINEAR
    crop = cv2.warpAffine(image, matrix, (size, size), flags=interpolation,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    mask = hull_mask(transform_points(hull_points, matrix), (size, size))
    return Crop(crop, mask, matrix, box)


def paste_back(crop_normals: np.ndarray, crop_mask: np.ndarray, matrix: np.ndarray,
               frame_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Warp crop-space normals (S×S×3) back into the frame with ``matrix``⁻¹.

    Returns (normals H×W×3 float32, unit inside, NaN outside; valid bool H×W).
    """
    height, width = frame_shape
    inverse = invert_affine(matrix)
    normals = cv2.warpAffine(np.asarray(crop_normals, dtype=np.float32), inverse, (width, height),
                             flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    weight = cv2.warpAffine(crop_mask.astype(np.float32), inverse, (width, height), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    valid = np.empty((height, width), dtype=bool)
    _renormalise(normals, weight, valid)
    return normals, valid


def normalise_rows(vectors: np.ndarray, floor: float) -> np.ndarray:
    """N×3 vectors (C-contiguous, float32 or float64) scaled in place to v / max(|v|, floor); returns them.
    One pass without numpy's temporaries, the same operations in the same order as ``v / np.maximum(
    np.linalg.norm(v, axis=1, keepdims=True), floor)`` (bit-identical). H×W×3 maps: pass ``reshape(-1, 3)``."""
    if vectors.ndim != 2 or vectors.shape[1] != 3 or not vectors.flags.c_contiguous:
        raise ValueError(f"normalise_rows: C-contiguous N×3 vectors expected, got shape {vectors.shape}")
    _normalise_rows(vectors, vectors.dtype.type(floor))
    return vectors


@numba.njit(cache=True, nogil=True)
def _normalise_rows(vectors: np.ndarray, floor: np.floating) -> None:  # pragma: no cover - JIT
    for i in range(vectors.shape[0]):
        x, y, z = vectors[i, 0], vectors[i, 1], vectors[i, 2]
        d = max(np.sqrt(x * x + y * y + z * z), floor)
        vectors[i, 0], vectors[i, 1], vectors[i, 2] = x / d, y / d, z / d


@numba.njit(cache=True, nogil=True)
def _renormalise(normals: np.ndarray, weight: np.ndarray, valid: np.ndarray) -> None:  # pragma: no cover - JIT
    """In place: valid = weight > 0.5 and |n| > 1e-3; n / max(|n|, 1e-6) there, NaN elsewhere. One pass, float32
    throughout, the same operations in the same order as numpy's norm and divide (bit-identical), ~6× faster."""
    half, tiny, floor = np.float32(0.5), np.float32(1e-3), np.float32(1e-6)
    for i in range(normals.shape[0]):
        for j in range(normals.shape[1]):
            x, y, z = normals[i, j, 0], normals[i, j, 1], normals[i, j, 2]
            length = np.sqrt(x * x + y * y + z * z)
            ok = weight[i, j] > half and length > tiny
            valid[i, j] = ok
            if ok:
                d = max(length, floor)
                normals[i, j, 0], normals[i, j, 1], normals[i, j, 2] = x / d, y / d, z / d
            else:
                normals[i, j, 0] = normals[i, j, 1] = normals[i, j, 2] = np.nan
