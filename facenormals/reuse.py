"""Motion-adaptive inference rate: a tracked face that has barely moved since its last inference reuses that
inference's crop-space normals, carried into the new crop, instead of running the network again.

The network is most of the live loop's CPU (INT8: ~28 CPU ms a face against ~20 ms for everything else), while a
face in front of a camera is often nearly still. Two halves, one per thread of the loop:

* :class:`ReuseSchedule` (detect thread, before the crop's network input and coarse-face prior are made): per track
  the landmarks of its last *keyframe* (the last frame sent to the network) in that frame's crop, and how many frames
  reused it. A face is inferred when it is new, when ``every`` frames have passed since its keyframe, or when its 478
  landmarks, each in its own frame's crop, moved more than ``max_nonrigid`` (what a 2-D similarity cannot explain:
  expressions, head turns) or ``max_rigid`` (what the crop did not follow: mostly in-plane rotation) in face sizes.
  Otherwise it is reused, and neither its network input nor its prior (the ICT fit, ~4 ms) is made.
* :class:`KeyframeStore` (infer thread): the network's output of each track's keyframe, its crop matrix and
  landmarks; a reused face gets it moved into the new crop by the landmark similarity keyframe → now, x/y rotated
  with it (:func:`facenormals.temporal.align_previous`, the temporal filter's alignment).

A reuse whose keyframe never reached the backend (a live queue dropped it) is inferred after all (the engine makes
its input then). ``every=1`` infers every frame.

Deferred keyframes (the live loop, :meth:`facenormals.engine.FrameEngine.infer_deferred`): a keyframe of a track
that already has one is shown like a reused face, its previous keyframe carried into its crop, and its own network
run happens after the frame is handed on; the store then holds it for the frames after. No frame waits for the
network; a keyframe's output reaches the screen one frame later. The detect thread does not make such a keyframe's
network input (crop pixels, ICT prior) either: the schedule marks it :data:`DEFERRED`, and the infer thread makes the
input just before the deferred network run, so the keyframe's own frame costs what a reused one does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facenormals.geometry import transform_points
from facenormals.temporal import align_previous, landmark_motion

DEFERRED = -1  # ReuseSchedule.decide: a keyframe whose network input and inference come after its frame is shown


@dataclass(frozen=True)
class ReusePolicy:
    # Thresholds measured on real clips (README "Realtime"): a reused face's distance from the network's own output
    # on that frame follows the non-rigid motion (correlation 0.8–0.94); at ≤ 2 ‰ it is 0.5–0.7° on average, under
    # the network's own frame-to-frame change there (0.7–1.2°), and 74–92 % of the candidate frames are reused.
    every: int = 3  # a face is inferred at least every this many frames (1: every frame, no reuse)
    max_nonrigid: float = 0.002  # face sizes: mean landmark residual after the best similarity, keyframe → now
    max_rigid: float = 0.01  # face sizes: mean landmark motion inside the crop explained by that similarity

    def __post_init__(self) -> None:
        if self.every < 1 or self.max_nonrigid < 0 or self.max_rigid < 0:
            raise ValueError(f"invalid reuse policy: {self}")

    @property
    def active(self) -> bool:
        return self.every > 1


def parse_infer_every(value: str | int) -> int | None:
    """``--infer-every``: ``auto`` (None: the caller's default) or a whole number ≥ 1 (1: infer every frame).

    >>> parse_infer_every("auto"), parse_infer_every("3")
    (None, 3)
    """
    if isinstance(value, str) and value.strip().lower() == "auto":
        return None
    try:
        every = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"--infer-every must be 'auto' or a whole number ≥ 1, got {value!r}") from None
    if every < 1:
        raise ValueError(f"--infer-every must be 'auto' or a whole number ≥ 1, got {value!r}")
    return every


@dataclass
class _Key:
    frame_id: int
    points: np.ndarray  # the keyframe's landmarks in its crop (crop pixels)
    reuses: int = 0


class ReuseSchedule:
    """The detect thread's half: per face, infer or reuse which keyframe (see the module docstring)."""

    def __init__(self, policy: ReusePolicy) -> None:
        self.policy = policy
        self._keys: dict[int, _Key] = {}
        landmark_motion(np.eye(3, 2), np.eye(3, 2) + 1.0)  # numba compiled (or loaded) now, not on a live frame

    def decide(self, track_id: int, frame_id: int, landmarks: np.ndarray, matrix: np.ndarray,
               defer: bool = False) -> int | None:
        """The keyframe id whose output this face reuses, or None: infer it (this frame becomes its keyframe).
        ``defer`` (deferred keyframes): a new keyframe of a track that had one is :data:`DEFERRED` instead of None —
        its network input is made after the frame is shown, with its inference."""
        points = transform_points(landmarks, matrix)  # in its own crop: motion the crop follows does not count
        key = self._keys.get(track_id)
        if key is not None and key.reuses + 1 < self.policy.every and key.points.shape == points.shape:
            rigid, nonrigid = landmark_motion(key.points, points)
            if rigid <= self.policy.max_rigid and nonrigid <= self.policy.max_nonrigid:
                key.reuses += 1
                return key.frame_id
        self._keys[track_id] = _Key(frame_id, points)
        return DEFERRED if defer and key is not None else None

    def forget_except(self, track_ids: set[int]) -> None:
        """Drop the tracks not in the frame (a track that comes back is new: inferred)."""
        for tid in [tid for tid in self._keys if tid not in track_ids]:
            del self._keys[tid]


@dataclass
class _Output:
    frame_id: int
    normals: np.ndarray  # 3×S×S, the network's output on the keyframe
    matrix: np.ndarray
    landmarks: np.ndarray


class KeyframeStore:
    """The infer thread's half: each track's keyframe output, carried into later crops."""

    def __init__(self) -> None:
        self._outputs: dict[int, _Output] = {}

    def keep(self, track_id: int, frame_id: int, normals_chw: np.ndarray, matrix: np.ndarray,
             landmarks: np.ndarray) -> None:
        self._outputs[track_id] = _Output(frame_id, np.array(normals_chw, dtype=np.float32),
                                          np.asarray(matrix, dtype=np.float64), np.asarray(landmarks))

    def has_track(self, track_id: int) -> bool:
        """Whether the track has a keyframe output to carry (any frame)."""
        return track_id in self._outputs

    def has(self, track_id: int, frame_id: int) -> bool:
        output = self._outputs.get(track_id)
        return output is not None and output.frame_id == frame_id

    def carried(self, track_id: int, matrix: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The track's keyframe normals moved into the crop ``matrix`` (3×S×S unit vectors; 0 where the keyframe's
        crop did not reach)."""
        output = self._outputs[track_id]
        aligned, _ = align_previous(output.normals, output.matrix, output.landmarks, matrix, landmarks)
        norm = np.sqrt(np.einsum("chw,chw->hw", aligned, aligned))
        np.divide(aligned, norm, out=aligned, where=norm > 1e-6)  # bilinear mixing shortens unit vectors
        return aligned

    def forget_except(self, track_ids: set[int]) -> None:
        for tid in [tid for tid in self._outputs if tid not in track_ids]:
            del self._outputs[tid]
