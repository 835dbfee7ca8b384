"""One-Euro smoothing of face landmarks over the frames' real timestamps, and a jitter measure.

The One-Euro filter (Casiez, Roussel, Vogel, CHI 2012) is a low-pass filter whose cutoff rises with
speed: still faces get strong smoothing (no jitter), moving faces little (no lag). Time steps come
from the frames' own clock (``Frame.t_stream_ns``: a file's frame times, a camera's capture times) — never an
assumed frame rate — so dropped frames do not distort it, and a file filters alike however fast it is read.

Speeds are measured in face sizes per second (landmarks divided by the face box side), so one set of
parameters works for near and far faces.

With ``flow`` (:class:`LandmarkSmoother`, on by default in the realtime loop) each face's filter state is first
moved by the face's image motion since the last frame (:mod:`facenormals.face_motion`), so the smoothed landmarks
follow a moving face without lag and the filter only smooths what the image motion does not explain.

>>> import numpy as np
>>> f = OneEuroFilter(min_cutoff=1.0, beta=0.0)
>>> first = f(np.array([0.0]), 0.0)
>>> float(f(np.array([1.0]), 1 / 30)[0]) < 0.5   # a sudden step is damped
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from facenormals.face_motion import TRACK_LANDMARKS, MotionParams, face_motion


def _alpha(cutoff_hz: np.ndarray | float, dt_s: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * cutoff_hz)
    return 1.0 / (1.0 + tau / dt_s)


@dataclass(frozen=True)
class OneEuroParams:
    min_cutoff: float = 1.5  # Hz: smoothing of a still face (lower = smoother)
    beta: float = 8.0  # cutoff increase per (face size / s) of speed (higher = less lag)
    d_cutoff: float = 1.0  # Hz: smoothing of the speed estimate


class OneEuroFilter:
    """Element-wise One-Euro filter over arrays of any fixed shape; ``scale`` normalises speeds."""

    def __init__(self, min_cutoff: float = 1.5, beta: float = 8.0, d_cutoff: float = 1.0) -> None:
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError(f"One-Euro parameters must be positive: min_cutoff={min_cutoff}, "
                             f"beta={beta}, d_cutoff={d_cutoff}")
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    def reset(self) -> None:
        self._x = self._dx = self._t = None

    @property
    def value(self) -> np.ndarray | None:
        """The last output (None before the first sample)."""
        return None if self._x is None else self._x.copy()

    def __call__(self, x: np.ndarray, t_s: float, scale: float = 1.0, motion: np.ndarray | None = None) -> np.ndarray:
        """Filter one sample. ``motion``: for N×2 points, a 2×3 affine that moved the scene since the last sample
        (measured from the image, :mod:`facenormals.face_motion`): the state is moved by it first, so motion it
        explains is followed at once (no lag) and only the rest is smoothed."""
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or self._t is None or x.shape != self._x.shape:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t_s
            return x.copy()
        dt = t_s - self._t
        if dt <= 0:  # repeated or out-of-order timestamp: nothing new to filter
            return self._x.copy()
        if motion is not None:
            if x.ndim != 2 or x.shape[1] != 2:
                raise ValueError(f"a motion applies to N×2 points, got shape {x.shape}")
            self._x = self._x @ np.asarray(motion, dtype=np.float64)[:, :2].T + np.asarray(motion)[:, 2]
        dx = (x - self._x) / (dt * max(scale, 1e-9))
        self._dx = self._dx + _alpha(self.d_cutoff, dt) * (dx - self._dx)
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        self._x = self._x + _alpha(cutoff, dt) * (x - self._x)
        self._t = t_s
        return self._x.copy()


@dataclass
class _Track:
    track_id: int
    filter: OneEuroFilter
    centre: np.ndarray
    side: float
    last_t: float


class LandmarkSmoother:
    """Per-face One-Euro filters, matched frame to frame by nearest box centre.

    A detection within ``match_radius`` face sizes of a track's last centre continues it; others
    start new tracks. Tracks unseen for ``max_age_s`` seconds are forgotten.
    """

    def __init__(self, params: OneEuroParams | None = None, match_radius: float = 0.5, max_age_s: float = 0.5,
                 flow: MotionParams | None = None) -> None:
        self.params = params or OneEuroParams()
        self.match_radius = match_radius
        self.max_age_s = max_age_s
        self.flow = flow
        self.last_motion: dict[int, np.ndarray | None] = {}  # per track: the image motion used on the last frame
        self._tracks: list[_Track] = []
        self._next_id = 0
        self._prev_gray: np.ndarray | None = None

    def __call__(self, faces_landmarks: list[np.ndarray], t_s: float,
                 gray: np.ndarray | None = None) -> list[tuple[int, np.ndarray]]:
        """Smooth each face's N×2 landmarks; returns (track id, smoothed landmarks) in input order.

        ``gray`` (uint8 H×W, this frame) with ``flow`` set: each continued track's state is first moved by the
        face's image motion since the last frame (:func:`facenormals.face_motion.face_motion`)."""
        self._tracks = [tr for tr in self._tracks if t_s - tr.last_t <= self.max_age_s]
        prev_gray = self._prev_gray if gray is not None and self._prev_gray is not None \
            and self._prev_gray.shape == gray.shape else None
        self._prev_gray = gray if self.flow is not None else None
        self.last_motion = {}
        free = list(self._tracks)
        out: list[tuple[int, np.ndarray]] = []
        for points in faces_landmarks:
            lo, hi = points.min(axis=0), points.max(axis=0)
            centre, side = (lo + hi) / 2.0, float((hi - lo).max()) or 1.0
            track = self._nearest(free, centre, side)
            if track is None:
                track = _Track(self._next_id, OneEuroFilter(self.params.min_cutoff, self.params.beta,
                                                            self.params.d_cutoff), centre, side, t_s)
                self._next_id += 1
                self._tracks.append(track)
            else:
                free.remove(track)
            motion = None
            if prev_gray is not None and self.flow is not None and (previous := track.filter.value) is not None:
                follow = previous[list(TRACK_LANDMARKS)] if len(previous) > max(TRACK_LANDMARKS) else None
                motion = face_motion(prev_gray, gray, previous, self.flow, follow)
            self.last_motion[track.track_id] = motion
            smoothed = track.filter(points, t_s, scale=side, motion=motion)
            track.centre, track.side, track.last_t = centre, side, t_s
            out.append((track.track_id, smoothed.astype(np.float32)))
        return out

    def _nearest(self, tracks: list[_Track], centre: np.ndarray, side: float) -> _Track | None:
        best, best_d = None, self.match_radius
        for track in tracks:
            d = float(np.linalg.norm(track.centre - centre)) / max(side, track.side)
            if d < best_d:
                best, best_d = track, d
        return best


def landmark_jitter(sequence: list[np.ndarray], sides: list[float], ids: list[int] | None = None) -> float:
    """Mean landmark acceleration ‖x[t+1] − 2x[t] + x[t−1]‖ in ‰ of the face size, over one track.

    Smooth motion has small second differences, detector noise large ones: comparing raw with smoothed
    landmarks on the same frames shows what the filter removes. With ``ids`` (frame ids), only triples of
    consecutive frames count (a dropped frame would make real motion look like jitter). NaN without any.
    """
    if len(sequence) < 3:
        return float("nan")
    points = np.stack(sequence).astype(np.float64)
    accel = np.linalg.norm(points[2:] - 2.0 * points[1:-1] + points[:-2], axis=2).mean(axis=1)
    per_triple = accel / np.asarray(sides[1:-1], dtype=np.float64)
    if ids is not None:
        frame_ids = np.asarray(ids)
        per_triple = per_triple[(frame_ids[2:] - frame_ids[:-2] == 2) & (frame_ids[1:-1] - frame_ids[:-2] == 1)]
        if per_triple.size == 0:
            return float("nan")
    return float(np.mean(per_triple) * 1000.0)
