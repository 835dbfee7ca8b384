"""Temporal filtering of the normals in crop space: a small stateful stage keyed by face track id.

Per face track the filter keeps its last output (crop-space normals, 3×S×S), that frame's crop matrix and raw
landmarks. On a new frame the kept output is *aligned* to the new crop — the landmark similarity (rotation, scale,
translation in the image, least squares over the 478 points) composed with both crop matrices, and the normals'
x/y rotated by the same in-plane rotation — and blended with the network's new output:

    out = aligned + a · (new − aligned),  renormalised

``a`` (the weight of the new frame) is motion-adaptive, One-Euro style: a cutoff of ``min_cutoff_hz`` for a still
face that rises with the landmarks' *non-rigid* speed (what a 2-D alignment cannot follow: head turns, expressions)
and, less, with their rigid speed, over the frames' real capture times. Per pixel, a change larger than
``snap_deg[0]`` raises ``a`` towards 1, reached at ``snap_deg[1]``: real changes (a turn, a hand, a new track) pass
at once, small frame-to-frame flicker is averaged. Pixels with nothing to align (outside the previous crop) take
the new value. A new track, or one unseen for ``max_age_s``, starts from the network's output.

The realtime :class:`~facenormals.realtime.pipeline.Pipeline` applies it after inference (``--no-temporal`` turns it
off); the Python API does not (still images have no history).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numba
import numpy as np

if TYPE_CHECKING:  # why: the engine imports this module's alignment (facenormals.reuse); no import cycle
    from facenormals.engine import FrameResult


@dataclass(frozen=True)
class TemporalParams:
    # 1.0 Hz / 15 (session 3: 1.5 / 30), chosen on recorded outputs (benchmarks/stability.py): real clip's aligned
    # frame-to-frame change −37 % → −46 %, sample 2.89 → 2.82°, step and turn lags unchanged (0; 1 frame for a 10°
    # turn under still landmarks); lower cutoffs lag that turn by 2+ frames
    min_cutoff_hz: float = 1.0  # cutoff of a still face (lower = smoother)
    beta: float = 15.0  # cutoff rise (Hz) per face size per second of non-rigid landmark speed
    rigid_beta: float = 1.0  # cutoff rise (Hz) per face size per second of rigid motion (the alignment is not exact)
    snap_deg: tuple[float, float] = (6.0, 15.0)  # per pixel: changes above the first start to pass, above the second pass
    max_age_s: float = 0.5  # a track unseen this long starts afresh

    def __post_init__(self) -> None:
        lo, hi = self.snap_deg
        if self.min_cutoff_hz <= 0 or self.beta < 0 or self.rigid_beta < 0 or not 0 <= lo < hi <= 90 or self.max_age_s <= 0:
            raise ValueError(f"invalid temporal filter parameters: {self}")


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares 2-D similarity (rotation, uniform scale, translation; no reflection) taking ``src`` to ``dst``
    (N×2 points), as a 2×3 matrix (Umeyama 1991).

    >>> m = similarity(np.array([[0.0, 0], [1, 0], [0, 1]]), np.array([[1.0, 1], [1, 3], [-1, 1]]))
    >>> np.round(m, 6).tolist()  # 90° (y down: x → y), scale 2, shift (1, 1)
    [[0.0, -2.0, 1.0], [2.0, 0.0, 1.0]]
    """
    a, b, tx, ty = _fit_similarity(np.ascontiguousarray(src, dtype=np.float64), np.ascontiguousarray(dst, dtype=np.float64))
    if not math.isfinite(a):
        raise ValueError("similarity: source points are all identical")
    return np.array([[a, -b, tx], [b, a, ty]])


@numba.njit(cache=True, nogil=True)
def _fit_similarity(src: np.ndarray, dst: np.ndarray) -> tuple[float, float, float, float]:  # pragma: no cover - JIT
    """(a, b, tx, ty) of the least-squares similarity [[a, −b, tx], [b, a, ty]]; NaNs for identical source points.
    Complex form: d ≈ z · s with z = Σ conj(s)·d / Σ |s|² over the centred points. One loop (why: the dozen numpy
    calls it replaces cost more than the maths on 478 points)."""
    n = src.shape[0]
    msx = msy = mdx = mdy = 0.0
    for i in range(n):
        msx += src[i, 0]
        msy += src[i, 1]
        mdx += dst[i, 0]
        mdy += dst[i, 1]
    msx, msy, mdx, mdy = msx / n, msy / n, mdx / n, mdy / n
    var = re = im = 0.0
    for i in range(n):
        sx, sy, dx, dy = src[i, 0] - msx, src[i, 1] - msy, dst[i, 0] - mdx, dst[i, 1] - mdy
        var += sx * sx + sy * sy
        re += sx * dx + sy * dy
        im += sx * dy - sy * dx
    if var <= 0.0:
        return np.nan, np.nan, np.nan, np.nan
    a, b = re / var, im / var
    return a, b, mdx - (a * msx - b * msy), mdy - (b * msx + a * msy)


@numba.njit(cache=True, nogil=True)
def _motion_residuals(prev: np.ndarray, cur: np.ndarray, motion: np.ndarray) -> tuple[float, float]:  # pragma: no cover
    """(rigid, non-rigid) of :func:`landmark_motion`, one loop."""
    n = prev.shape[0]
    lo_x = hi_x = cur[0, 0]
    lo_y = hi_y = cur[0, 1]
    rigid = nonrigid = 0.0
    for i in range(n):
        px, py, cx, cy = prev[i, 0], prev[i, 1], cur[i, 0], cur[i, 1]
        mx = motion[0, 0] * px + motion[0, 1] * py + motion[0, 2]
        my = motion[1, 0] * px + motion[1, 1] * py + motion[1, 2]
        rigid += np.sqrt((mx - px) ** 2 + (my - py) ** 2)
        nonrigid += np.sqrt((cx - mx) ** 2 + (cy - my) ** 2)
        lo_x, hi_x, lo_y, hi_y = min(lo_x, cx), max(hi_x, cx), min(lo_y, cy), max(hi_y, cy)
    side = max(hi_x - lo_x, hi_y - lo_y)
    side = side if side > 0 else 1.0
    return rigid / n / side, nonrigid / n / side


def _h(matrix: np.ndarray) -> np.ndarray:
    return np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])


def compose(*matrices: np.ndarray) -> np.ndarray:
    """2×3 affines composed right to left: ``compose(A, B)`` applies B, then A."""
    out = np.eye(3)
    for matrix in matrices:
        out = out @ _h(matrix)
    return out[:2]


def rotate_normals_xy(normals_chw: np.ndarray, linear: np.ndarray) -> np.ndarray:
    """Normals (3×H×W, +y up) of a surface whose image moved by the 2×2 pixel-space (y down) linear map ``linear``
    (its rotation part is used): x/y rotated by the same in-plane rotation, z unchanged. Returns a new array."""
    angle = math.atan2(linear[1, 0], linear[0, 0])  # pixel rotation, y down
    c, s = math.cos(angle), math.sin(angle)
    out = np.empty_like(normals_chw)
    # in pixel axes (x, −y): p' = R p; back to +y up
    out[0] = c * normals_chw[0] + s * normals_chw[1]
    out[1] = -s * normals_chw[0] + c * normals_chw[1]
    out[2] = normals_chw[2]
    return out


_WARP_FLAGS = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP


def warp_normals(normals_chw: np.ndarray, dst_to_src: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resample 3×h×w normals at ``dst_to_src`` (2×3, destination pixel → source pixel) into 3×H×W (``size`` = (H, W));
    outside the source is 0 (no normal). Bilinear; not renormalised."""
    height, width = size
    return np.stack([cv2.warpAffine(np.ascontiguousarray(c, dtype=np.float32), dst_to_src, (width, height), flags=_WARP_FLAGS,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=0) for c in normals_chw])


def align_previous(normals_chw: np.ndarray, prev_matrix: np.ndarray, prev_landmarks: np.ndarray,
                   matrix: np.ndarray, landmarks: np.ndarray, vectors: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The previous frame's crop-space normals moved into the current crop: (3×S×S normals, 0 where nothing maps;
    the frame-pixel similarity previous → current fitted to the landmarks). ``vectors=False``: any C×S×S maps
    (a mask), moved but not rotated."""
    motion = similarity(prev_landmarks, landmarks)  # frame px, previous → current
    current_to_previous = compose(prev_matrix, cv2.invertAffineTransform(motion), cv2.invertAffineTransform(matrix))
    size = normals_chw.shape[1:]
    warped = warp_normals(normals_chw, current_to_previous, size)
    return (rotate_normals_xy(warped, motion[:, :2]) if vectors else warped), motion


def landmark_motion(prev: np.ndarray, cur: np.ndarray, motion: np.ndarray | None = None) -> tuple[float, float]:
    """(rigid, non-rigid) landmark motion between two frames, in face sizes: the mean displacement explained by the
    best similarity, and the mean residual it leaves (head turns, expressions, detector noise)."""
    prev, cur = np.ascontiguousarray(prev, dtype=np.float64), np.ascontiguousarray(cur, dtype=np.float64)
    motion = similarity(prev, cur) if motion is None else motion
    return _motion_residuals(prev, cur, np.ascontiguousarray(motion, dtype=np.float64))

@numba.njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def _rotate_blend(ax: np.ndarray, ay: np.ndarray, az: np.ndarray, new: np.ndarray, cos_r: float, sin_r: float,
                  alpha: float, cos_lo: float, inv_band: float, out: np.ndarray) -> None:  # pragma: no cover - JIT
    """One pass over the pixels (why: the dozen numpy passes it replaces cost twice the warp): the aligned previous
    output (planes ``ax, ay, az``, N each) x/y rotated by (cos_r, sin_r) (as :func:`rotate_normals_xy`), the per-pixel
    weight raised from ``alpha`` towards 1 as its angle to ``new`` (3×N) grows, the blend, renormalised into ``out``
    (3×N). float32 throughout."""
    c, s, a = np.float32(cos_r), np.float32(sin_r), np.float32(alpha)
    lo, band = np.float32(cos_lo), np.float32(inv_band)
    one, zero, tiny = np.float32(1.0), np.float32(0.0), np.float32(1e-12)
    for i in range(new.shape[1]):
        a0, a1, a2 = c * ax[i] + s * ay[i], c * ay[i] - s * ax[i], az[i]
        n0, n1, n2 = new[0, i], new[1, i], new[2, i]
        weight = min(max((lo - (a0 * n0 + a1 * n1 + a2 * n2)) * band, zero), one)  # |aligned| ≤ 1; 0 outside → 1
        weight = a + (one - a) * weight
        o0, o1, o2 = a0 + weight * (n0 - a0), a1 + weight * (n1 - a1), a2 + weight * (n2 - a2)
        inv = one / np.sqrt(max(o0 * o0 + o1 * o1 + o2 * o2, tiny))
        out[0, i] = o0 * inv
        out[1, i] = o1 * inv
        out[2, i] = o2 * inv


def _compile_kernels() -> None:
    """Run each numba kernel once on tiny inputs of the loop's types (why: compiling — or loading numba's disk
    cache — then happens when the filter is built, not on the first filtered frame of a live run: 1–7 s)."""
    points = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    landmark_motion(points, points + 1.0)
    plane = np.zeros(1, np.float32)
    _rotate_blend(plane, plane, plane, np.zeros((3, 1), np.float32), 1.0, 0.0, 0.5, 0.99, 10.0, np.zeros((3, 1), np.float32))


@dataclass
class _Track:
    normals: np.ndarray  # S×S×3 (pixel-interleaved: one warpAffine call moves it), the last output
    matrix: np.ndarray
    landmarks: np.ndarray
    t_s: float


class TemporalFilter:
    """Motion-adaptive, alignment-compensated temporal filter of crop-space normals, one state per track id.

    ``filter_face(track_id, normals, matrix, landmarks, t_s)`` filters one face; calling the object on a
    :class:`~facenormals.engine.FrameResult` filters every face of the frame (replacing ``crop_normals``) and adds
    ``timings["temporal"]``. ``last_alpha`` holds the frame weight last used per track (for reports and tests).
    """

    def __init__(self, params: TemporalParams | None = None) -> None:
        self.params = params or TemporalParams()
        self._tracks: dict[int, _Track] = {}
        self.last_alpha: dict[int, float] = {}
        lo, hi = self.params.snap_deg
        self._cos_lo, self._cos_hi = math.cos(math.radians(lo)), math.cos(math.radians(hi))
        _compile_kernels()

    def reset(self) -> None:
        self._tracks.clear()
        self.last_alpha.clear()

    def frame_weight(self, dt_s: float, rigid: float, nonrigid: float) -> float:
        """The new frame's weight for landmark motion ``rigid``/``nonrigid`` (face sizes) over ``dt_s`` seconds."""
        p = self.params
        cutoff = p.min_cutoff_hz + (p.beta * nonrigid + p.rigid_beta * rigid) / dt_s
        tau = 1.0 / (2.0 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt_s)

    def filter_face(self, track_id: int, normals_chw: np.ndarray, matrix: np.ndarray, landmarks: np.ndarray,
                    t_s: float) -> np.ndarray:
        """One face: the network's 3×S×S normals → filtered 3×S×S (a new float32 array)."""
        new = np.ascontiguousarray(normals_chw, dtype=np.float32)
        track = self._tracks.get(track_id)
        dt = t_s - track.t_s if track is not None else -1.0
        if track is None or track.normals.shape != new.shape[1:] + new.shape[:1] or dt > self.params.max_age_s:
            out, alpha = new.copy(), 1.0
        else:
            dt = dt if dt > 0 else 1.0 / 30.0  # a repeated timestamp: assume a camera frame
            motion = similarity(track.landmarks, landmarks)  # frame px, previous → current
            alpha = self.frame_weight(dt, *landmark_motion(track.landmarks, landmarks, motion))
            current_to_previous = compose(track.matrix, cv2.invertAffineTransform(motion), cv2.invertAffineTransform(matrix))
            # one 3-channel warp + split beats three 1-channel warps (~30 % with cold caches)
            size = (new.shape[2], new.shape[1])
            aligned = cv2.split(cv2.warpAffine(track.normals, current_to_previous, size, flags=_WARP_FLAGS,
                                               borderMode=cv2.BORDER_CONSTANT, borderValue=0))
            angle = math.atan2(motion[1, 0], motion[0, 0])
            out = np.empty(new.shape, np.float32)
            _rotate_blend(*(plane.reshape(-1) for plane in aligned), new.reshape(3, -1), math.cos(angle),
                          math.sin(angle), alpha, self._cos_lo, 1.0 / (self._cos_lo - self._cos_hi), out.reshape(3, -1))
        self._tracks[track_id] = _Track(cv2.merge(list(out)), np.asarray(matrix, dtype=np.float64), np.asarray(landmarks),
                                        t_s)
        self.last_alpha[track_id] = alpha
        self._forget(t_s)
        return out

    def _forget(self, t_s: float) -> None:
        for tid in [tid for tid, tr in self._tracks.items() if t_s - tr.t_s > self.params.max_age_s]:
            del self._tracks[tid]
            self.last_alpha.pop(tid, None)

    def __call__(self, result: FrameResult) -> FrameResult:
        t0 = time.perf_counter()
        if result.crop_normals is not None and len(result.crops):
            t_s = result.frame.t_stream_ns * 1e-9
            filtered = np.empty_like(result.crop_normals, dtype=np.float32)
            for i, (face, crop) in enumerate(zip(result.faces, result.crops, strict=True)):
                filtered[i] = self.filter_face(face.track_id, result.crop_normals[i], crop.matrix, face.raw_landmarks, t_s)
            result.crop_normals = filtered
        result.frame.timings["temporal"] = (time.perf_counter() - t0) * 1000.0
        return result
