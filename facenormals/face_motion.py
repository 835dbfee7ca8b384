"""A face's 2-D motion between two frames, measured from the image: sparse optical flow + a robust similarity.

Why: the landmarks drive the crop and, for prior models, the coarse-face prior drawn into it. Smoothing them over
time (One-Euro, :mod:`facenormals.smoothing`) removes the detector's jitter but makes them trail a moving face by a
pixel or two, and the network is very sensitive to its prior sitting off the face (issue 16: ~2.8° of the sample's
2.99° deviation). Image motion is not noisy the way a landmark detector is, and has no lag: the smoother moves its
state by this motion before it filters (:class:`facenormals.smoothing.OneEuroFilter`, ``motion=``), so it only has
to smooth what the image motion does not explain (detector noise, expressions, head turns).

Method (per face, on grey frames, in the face's region downscaled so that the face is at most
:attr:`MotionParams.max_side_px` across: the cost does not grow with the face): points to follow — the smoother
passes its previous landmarks at :data:`TRACK_LANDMARKS` (eye corners and lids, brows, nostrils, lips, irises:
textured, so Lucas–Kanade holds on them, and no corner search is needed), otherwise Shi–Tomasi corners inside the
previous landmarks' hull — pyramidal Lucas–Kanade to the current frame, then ``cv2.estimateAffinePartial2D`` with
RANSAC (rotation, uniform scale, translation). ``None`` when too few points track or too few agree (fast motion,
blur, occlusion): the smoother then falls back to plain One-Euro smoothing for that frame.

Convention: pixel coordinates (x, y) = (column, row), origin at the centre of the top-left pixel; matrices are
2×3 affines taking previous-frame pixels to current-frame pixels.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> prev = (cv2.GaussianBlur(rng.random((120, 160)), (0, 0), 1.5) * 255).astype(np.uint8)
>>> shift = np.array([[1.0, 0.0, 2.5], [0.0, 1.0, -1.25]])
>>> cur = cv2.warpAffine(prev, shift, (160, 120), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
>>> box = np.array([[40.0, 30], [120, 30], [120, 90], [40, 90]])
>>> np.round(face_motion(prev, cur, box)[:, 2], 1).tolist()
[2.5, -1.3]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

# face-mesh landmarks on texture: eye corners and lids, brows, nose bridge and nostrils, lips, chin, irises
TRACK_LANDMARKS = (33, 133, 362, 263, 159, 145, 386, 374, 160, 144, 385, 380, 70, 105, 107, 336, 334, 300, 168, 6, 197,
                   1, 4, 98, 327, 97, 326, 61, 291, 0, 17, 13, 14, 78, 308, 152, 199, 468, 473, 57, 287)


@dataclass(frozen=True)
class MotionParams:
    # faces larger than this are measured on a (bilinear) downscaled copy: 0.57 vs 0.72 CPU ms for the sample's 165 px
    # face, at 0.06–0.3 px instead of 0.02–0.1 px per frame; the sample's deviation is the same (1.18° either way)
    max_side_px: float = 120.0
    max_corners: int = 40  # Shi–Tomasi corners, when no points to follow are given
    quality: float = 0.01  # Shi–Tomasi quality level (of the strongest corner)
    min_distance_px: float = 5.0
    window_px: int = 11  # Lucas–Kanade window
    levels: int = 2  # pyramid levels above the base (motion up to ~window · 2^levels px per frame)
    ransac_px: float = 1.0  # inlier threshold, in (downscaled) pixels
    min_inliers: int = 12
    min_inlier_fraction: float = 0.5
    match_gain: bool = True  # scale the current region's brightness to the previous one's before tracking

    def __post_init__(self) -> None:
        if (self.max_side_px < 32 or self.max_corners < 3 or self.window_px < 5 or self.levels < 0
                or self.ransac_px <= 0 or self.min_inliers < 3 or not 0 < self.min_inlier_fraction <= 1):
            raise ValueError(f"invalid face motion parameters: {self}")


def face_motion(prev_gray: np.ndarray, gray: np.ndarray, prev_points: np.ndarray,
                params: MotionParams = MotionParams(), follow: np.ndarray | None = None) -> np.ndarray | None:
    """The similarity (2×3, previous frame px → current frame px) that moved the face whose landmarks were
    ``prev_points`` (N×2, previous frame) from ``prev_gray`` to ``gray`` (uint8 H×W, same size); None when the
    image does not say (too few points track, or they disagree). ``follow``: M×2 previous-frame points on texture
    to track (default: Shi–Tomasi corners inside the hull of ``prev_points``)."""
    if prev_gray.shape != gray.shape or prev_gray.ndim != 2:
        raise ValueError(f"face_motion: grey frames of one size expected, got {prev_gray.shape} and {gray.shape}")
    points = np.asarray(prev_points, dtype=np.float64)
    lo, hi = points.min(axis=0), points.max(axis=0)
    side = float((hi - lo).max())
    if not math.isfinite(side) or side < 8:
        return None
    # the region: the face box with a margin for the motion, clipped to the frame
    margin = 0.25 * side
    height, width = gray.shape
    x0, y0 = max(0, int(lo[0] - margin)), max(0, int(lo[1] - margin))
    x1, y1 = min(width, int(hi[0] + margin) + 1), min(height, int(hi[1] + margin) + 1)
    if x1 - x0 < 16 or y1 - y0 < 16:
        return None
    scale = min(1.0, params.max_side_px / side)
    a, b = prev_gray[y0:y1, x0:x1], gray[y0:y1, x0:x1]
    if scale < 1.0:
        size = (max(16, round((x1 - x0) * scale)), max(16, round((y1 - y0) * scale)))
        a, b = cv2.resize(a, size, interpolation=cv2.INTER_LINEAR), cv2.resize(b, size, interpolation=cv2.INTER_LINEAR)
    if params.match_gain:  # a global light change would read as motion where brightness constancy breaks
        mean_a, mean_b = float(a.mean()), float(b.mean())
        if mean_b > 1.0 and abs(mean_a / mean_b - 1.0) > 0.002:
            b = cv2.convertScaleAbs(b, alpha=mean_a / mean_b)
    # roi pixel = (frame pixel − origin) · s + (s − 1)/2: pixel centres, as cv2.resize places them
    sx, sy = a.shape[1] / (x1 - x0), a.shape[0] / (y1 - y0)
    to_roi = np.array([[sx, 0.0, (0.5 - x0) * sx - 0.5], [0.0, sy, (0.5 - y0) * sy - 0.5]])
    if follow is not None:
        corners = (np.asarray(follow, dtype=np.float64) @ to_roi[:, :2].T + to_roi[:, 2]).astype(np.float32)[:, None]
    else:
        mask = np.zeros(a.shape, np.uint8)
        hull = cv2.convexHull(np.round((points @ to_roi[:, :2].T + to_roi[:, 2]) * 16).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 255, lineType=cv2.LINE_8, shift=4)
        corners = cv2.goodFeaturesToTrack(a, params.max_corners, params.quality, params.min_distance_px * min(sx, 1.0),
                                          mask=mask, blockSize=5)
    if corners is None or len(corners) < params.min_inliers:
        return None
    window = (params.window_px, params.window_px)
    moved, status, _ = cv2.calcOpticalFlowPyrLK(a, b, corners, None, winSize=window, maxLevel=params.levels,
                                                criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 20, 0.01))
    ok = status.reshape(-1).astype(bool)
    if ok.sum() < params.min_inliers:
        return None
    matrix, inliers = cv2.estimateAffinePartial2D(corners[ok], moved[ok], method=cv2.RANSAC,
                                                  ransacReprojThreshold=params.ransac_px, maxIters=200,
                                                  refineIters=10)
    if matrix is None or inliers is None:
        return None
    count = int(inliers.sum())
    if count < params.min_inliers or count < params.min_inlier_fraction * ok.sum():
        return None
    # back to frame pixels: frame → roi → (motion in roi) → roi → frame
    from_roi = cv2.invertAffineTransform(to_roi)
    return _compose(from_roi, matrix, to_roi)


def _compose(*matrices: np.ndarray) -> np.ndarray:
    out = np.eye(3)
    for matrix in matrices:
        out = out @ np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])
    return out[:2]


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """uint8 H×W×3 RGB → uint8 H×W grey (what :func:`face_motion` measures on)."""
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
