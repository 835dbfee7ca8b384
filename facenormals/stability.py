"""Temporal-stability figures of a normal-map sequence (degrees), each 0 for a system that follows the truth.

All inputs are stacks in one common space where the true surface does not move — the photo of the embedded
``sample`` clip (the known motion undone), or the current crop for frame-to-frame change on real video (the
previous frame aligned into it, :func:`facenormals.temporal.align_previous`):

* :func:`deviation_from_median` — per frame, the mean angle of each pixel from its temporal median;
* :func:`frame_to_frame` — the mean angle between consecutive frames (only pairs of consecutive frame ids);
* :func:`pair_change` — the mean angle between two maps on their common pixels (lighting sensitivity: two frames
  that differ only in light);
* :func:`step_lag` — frames until the output is closer to where it should be after a step than to where it was;
* :func:`fast_slow` — the deviation split into a fast part (each frame against a short centred average: flicker, what
  a temporal filter can remove) and a slow part (that average against the median: systematic change).

>>> n = np.zeros((4, 2, 2, 3), np.float32); n[..., 2] = 1
>>> float(deviation_from_median(n, np.ones((4, 2, 2), bool))[0].max())
0.0
"""

from __future__ import annotations

import numpy as np

from facenormals.conventions import angular_error_deg, normalize


def _angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return angular_error_deg(np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32))


def pair_change(a: np.ndarray, b: np.ndarray, valid_a: np.ndarray, valid_b: np.ndarray) -> float:
    """Mean angle (°) between two H×W×3 maps over the pixels valid in both; NaN if there are none."""
    common = np.asarray(valid_a, bool) & np.asarray(valid_b, bool)
    if not common.any():
        return float("nan")
    return float(_angles(a[common], b[common]).mean())


def deviation_from_median(normals: np.ndarray, valid: np.ndarray, min_fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Per frame, the mean angle (°) of each pixel from the pixel's temporal median (component-wise median over the
    frames where it is valid, renormalised). Pixels valid in fewer than ``min_fraction`` of the frames are left out.

    ``normals`` T×H×W×3, ``valid`` T×H×W. Returns (per-frame deviation T, NaN where a frame has no pixel;
    the median map H×W×3)."""
    normals, valid = np.asarray(normals, dtype=np.float32), np.asarray(valid, dtype=bool)
    stack = np.where(valid[..., None], normals, np.nan)
    keep = valid.mean(axis=0) >= min_fraction
    median = np.zeros(normals.shape[1:], np.float32)
    if keep.any():
        median[keep] = normalize(np.nanmedian(stack[:, keep], axis=0))
    per_frame = np.full(len(normals), np.nan)
    for t in range(len(normals)):
        use = valid[t] & keep
        if use.any():
            per_frame[t] = float(_angles(normals[t][use], median[use]).mean())
    return per_frame, median


def frame_to_frame(normals: np.ndarray, valid: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
    """Mean angle (°) between frames t−1 and t over their common pixels, for each t whose id follows t−1's by one
    (a dropped frame would count two frames of motion). ``normals`` T×H×W×3 in a common space."""
    ids = np.arange(len(normals)) if ids is None else np.asarray(ids)
    return np.array([pair_change(normals[t - 1], normals[t], valid[t - 1], valid[t])
                     for t in range(1, len(normals)) if ids[t] - ids[t - 1] == 1], dtype=np.float64)


def step_lag(to_new: np.ndarray, to_old: np.ndarray) -> int:
    """Frames after a step until the output is nearer where it should now be than where it was.

    ``to_new[k]`` / ``to_old[k]``: frame k after the step (k = 0 is the first frame showing the new pose), its mean
    distance from the reference read with the new / the old transform. A system that follows at once has lag 0;
    one that holds its old output for n frames, n. ``len(to_new)`` if it never gets there.

    >>> step_lag(np.array([5.0, 3.0, 0.5]), np.array([1.0, 2.0, 6.0]))
    2
    """
    closer = np.nonzero(np.asarray(to_new) <= np.asarray(to_old))[0]
    return int(closer[0]) if closer.size else len(to_new)


def fast_slow(normals: np.ndarray, valid: np.ndarray, half_window: int = 3,
              min_fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Per frame (T), the fast and the slow part of the deviation from the temporal median (°).

    Fast: each pixel's angle from its centred average over frames t−k…t+k (``k = half_window``, fewer at the ends;
    component-wise mean of the valid frames, renormalised). Slow: :func:`deviation_from_median` of those averages.
    A sequence with only independent per-frame noise has a slow part near 0 (the noise / √(2k+1)); one that drifts
    smoothly has a fast part near 0. ``normals`` T×H×W×3, ``valid`` T×H×W, in one common space.

    >>> n = np.zeros((9, 2, 2, 3), np.float32); n[..., 2] = 1; n[4:, ..., 0] = 1  # a step halfway
    >>> fast, slow = fast_slow(normalize(n), np.ones((9, 2, 2), bool), 1)
    >>> float(fast[0]), float(slow[0]) > 20  # far from the step: no flicker, but not where the median is
    (0.0, True)
    """
    normals, valid = np.asarray(normals, dtype=np.float32), np.asarray(valid, dtype=bool)
    weights = valid.astype(np.float32)
    sums = np.cumsum(np.concatenate([np.zeros_like(normals[:1]), normals * weights[..., None]]), axis=0)
    counts = np.cumsum(np.concatenate([np.zeros_like(weights[:1]), weights]), axis=0)
    frames = len(normals)
    lo = np.clip(np.arange(frames) - half_window, 0, frames)
    hi = np.clip(np.arange(frames) + half_window + 1, 0, frames)
    average = normalize(sums[hi] - sums[lo])
    has_average = (counts[hi] - counts[lo]) > 0
    keep = valid.mean(axis=0) >= min_fraction
    fast = np.full(frames, np.nan)
    for t in range(frames):
        use = valid[t] & keep
        if use.any():
            fast[t] = float(_angles(normals[t][use], average[t][use]).mean())
    slow, _ = deviation_from_median(average, has_average & valid, min_fraction)
    return fast, slow


def summarise(values: np.ndarray) -> dict:
    """Mean / p95 / max of the finite values, rounded (degrees), and how many there were."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"mean": None, "p95": None, "max": None, "n": 0}
    return {"mean": round(float(values.mean()), 3), "p95": round(float(np.percentile(values, 95)), 3),
            "max": round(float(values.max()), 3), "n": int(values.size)}
