"""A tracked face's identity pooled over its frames: one face shape per person, not one per frame.

Fitted frame by frame (:mod:`facenormals.ict_fit`), a face's 50 identity coefficients are re-estimated from each
frame's landmarks, so the coarse face's *shape* drifts and jitters while the person does not change: on the two
shared real videos the per-frame identity alone moves the coarse face's normals by 0.16–0.34° from one frame to the
next and lies 1.25–1.46° from the clip's median identity (``benchmarks/identity_track.py``). A tracked face instead
keeps a running estimate of its identity in information form: every frame adds what its landmarks say about the
identity with the frame's expressions solved out (the Schur complement of the landmark fit's normal equations at
the frame's pose), older frames fade with a memory of ``memory_frames``, and the identity is the ridge solution of
the pooled information *scaled to ``evidence`` frames' worth*.

Why scaled: landmark errors on a real face are mostly bias, the same in every frame (MediaPipe's points against
the surface points of an ICT face), not independent noise. Pooled as independent evidence, 59 views of the real scan
fit its identity to that bias (coefficient norm 4.1 against ~0.9 per frame) and the coarse face got 0.34° worse;
scaled to one frame's worth — the precision-weighted mean of the frames — it is as close as the per-frame fits on
average and steady (README "Coarse face": tracked identity).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class IdentityTrack:
    """What a tracked face's frames have said about its identity: Σ ρᵏ·Sₜ, Σ ρᵏ·sₜ and Σ ρᵏ (ρ = 1 − 1/memory).

    ``information`` (K×K) and ``vector`` (K,) are the frames' identity normal equations (expressions solved out),
    in cm² of landmark residual per unit coefficient², like the fit's ridge. Immutable: :meth:`added` returns the
    next frame's track, so a fit that warm-starts another never changes.
    """

    information: np.ndarray
    vector: np.ndarray
    frames: float
    # Σ ρᵏ·cₜ and Σ ρᵏ over the frames that gave an identity prior centre (:mod:`facenormals.landmark_identity`;
    # a frame may give none); no such frame yet: the mean face
    centre: np.ndarray | None = None
    centre_frames: float = 0.0

    @classmethod
    def start(cls, information: np.ndarray, vector: np.ndarray, centre: np.ndarray | None = None) -> IdentityTrack:
        return cls(np.array(information, dtype=np.float64), np.array(vector, dtype=np.float64), 1.0,
                   None if centre is None else np.array(centre, dtype=np.float64), 0.0 if centre is None else 1.0)

    def added(self, information: np.ndarray, vector: np.ndarray, memory_frames: float,
              centre: np.ndarray | None = None) -> IdentityTrack:
        """The track after one more frame, with its prior ``centre`` when it has one; earlier frames (and their
        centres) weigh ρ = 1 − 1/``memory_frames`` less per frame."""
        if memory_frames < 1.0:
            raise ValueError(f"identity memory must be ≥ 1 frame, got {memory_frames:g}")
        keep = 1.0 - 1.0 / memory_frames
        pooled, count = (None, 0.0) if self.centre is None else (keep * self.centre, keep * self.centre_frames)
        if centre is not None:
            pooled, count = (centre if pooled is None else pooled + centre), count + 1.0
        return IdentityTrack(keep * self.information + information, keep * self.vector + vector,
                             keep * self.frames + 1.0, pooled, count)

    def identity(self, prior: np.ndarray, evidence: float) -> np.ndarray:
        """The pooled identity (K,): ridge ``prior`` (K,), centred at the frames' mean centre (the mean face when
        the track has none), against the frames' mean information times ``evidence``."""
        if evidence <= 0.0:
            raise ValueError(f"identity evidence must be > 0 frames, got {evidence:g}")
        weight = evidence / self.frames
        normal = weight * self.information
        normal.reshape(-1)[:: len(normal) + 1] += prior
        vector = weight * self.vector
        if self.centre is not None:
            vector += prior * (self.centre / self.centre_frames)
        return np.linalg.solve(normal, vector)
