"""The ICT identity a face's landmarks predict: a linear map learnt on renders, centring a tracked face's identity.

The landmark fit (:mod:`facenormals.ict_fit`) pulls its 50 identity weights toward the mean face with a strong
ridge, because fitted freely they chase landmark noise; its identity ends up barely closer to the rendered one than
the mean face (mean squared vertex distance 5.12 against 5.20 mm on ``val_ict_v2``). Yet the landmarks do carry
identity: MediaPipe's points are biased in ways that are the same for every face (its own shape prior), and a map
learnt from many rendered faces with known identity undoes that bias where a generic noise model cannot. Here: the
468 points similarity-aligned onto a reference face, then one affine map (ridge regression on standardised
coordinates, folded into ``weights`` and ``offset``) to the identity weights. A tracked face's fit centres its
identity prior there, pooled over the track, instead of at the mean face. One view's estimate is noisier on a real
face than on a render, so a still's prior is centred only ``still_share`` of the way there: the share that is best
when the real-face noise (measured as the estimates' spread within real video clips) adds to an estimate of the
renders' size (README "Coarse face").

The asset ``assets/landmark_identity.npz`` is learnt by ``python -m facenormals.training.landmark_identity`` from
ICT training sets with stored landmarks (README "Coarse face"); the real scan is never part of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from facenormals.similarity import weighted_similarity

ASSET = Path(__file__).resolve().parent / "assets" / "landmark_identity.npz"
NUM_POINTS = 468  # MediaPipe's face points; the iris points follow the gaze
FIELDS = ("reference", "weights", "offset", "feature_mean", "basis", "max_residual", "max_norm")
OPTIONAL_FIELDS = {"still_share": 0.0}  # maps learnt before the real-video noise model: stills keep the mean face


@dataclass(frozen=True, eq=False)
class LandmarkIdentity:
    """``identity ≈ aligned(points) · weights + offset``; ``reference`` (468×3) is the face points are aligned onto."""

    reference: np.ndarray  # 468×3, crop pixels of the training crops
    weights: np.ndarray  # (468·3)×K_id
    offset: np.ndarray  # (K_id,)
    # MediaPipe's landmarks lie close to a low-dimensional manifold (160 principal directions of the aligned training
    # points leave a residual of 1.6 px at the median, 3.7 px at the 99th percentile; the real scan's renders 1.6 px)
    # and the map amplifies what lies off it: points further off than ``max_residual`` (not MediaPipe's output:
    # e.g. exact model points, 31 px) get no estimate, and no estimate is further from the mean face than the
    # training faces' largest, ``max_norm``.
    feature_mean: np.ndarray  # (468·3,)
    basis: np.ndarray  # k×(468·3), orthonormal rows
    max_residual: float
    max_norm: float
    # a still's identity prior is centred at this share of the estimate (0: the mean face), S / (S + N): S the
    # estimates' mean square on held-out renders, N their mean square spread within real video clips of one face
    still_share: float = 0.0

    def __post_init__(self) -> None:
        if self.reference.shape != (NUM_POINTS, 3):
            raise ValueError(f"a landmark identity map's reference must be {NUM_POINTS}×3, got {self.reference.shape}")
        if self.weights.shape != (3 * NUM_POINTS, len(self.offset)):
            raise ValueError(f"a landmark identity map's weights must be {3 * NUM_POINTS}×{len(self.offset)}, "
                             f"got {self.weights.shape}")
        if self.feature_mean.shape != (3 * NUM_POINTS,) or self.basis.ndim != 2 or self.basis.shape[1] != 3 * NUM_POINTS:
            raise ValueError(f"a landmark identity map's subspace must be k×{3 * NUM_POINTS}, got {self.basis.shape}")
        if not 0.0 <= self.still_share <= 1.0:
            raise ValueError(f"a landmark identity map's still share must be in [0, 1], got {self.still_share:g}")

    def estimate(self, points: np.ndarray) -> np.ndarray | None:
        """Identity weights (K_id,) for MediaPipe's landmark crop points (N ≥ 468 × 3, our frame), or None for
        points off the manifold of its outputs; any similarity of the points gives the same estimate."""
        return self.from_features(self.features(points))

    def from_features(self, features: np.ndarray | None) -> np.ndarray | None:
        """The estimate from aligned points (:meth:`features`; None, off the manifold: none)."""
        if features is None:
            return None
        estimate = features @ self.weights + self.offset
        norm = float(np.linalg.norm(estimate))
        return estimate * (self.max_norm / norm) if norm > self.max_norm else estimate

    def features(self, points: np.ndarray) -> np.ndarray | None:
        """The first 468 points aligned onto :attr:`reference`, flattened (what the map, and the landmark expression
        map, read), or None for points off the manifold of MediaPipe's outputs."""
        features = aligned_points(points, self.reference).reshape(-1)
        return None if self.residual(features) > self.max_residual else features

    def still_centre(self, points: np.ndarray) -> np.ndarray | None:
        """Where a still's identity prior is centred: ``still_share`` × :meth:`estimate`, or None (the mean face)."""
        return self.centre(self.features(points), tracked=False)

    def centre(self, features: np.ndarray | None, tracked: bool) -> np.ndarray | None:
        """Where a face's identity prior is centred, from its aligned points (:meth:`features`): a track's whole
        estimate, a still's ``still_share`` of it; None (the mean face) off the manifold or at a zero share."""
        share = 1.0 if tracked else self.still_share
        estimate = self.from_features(features) if share > 0.0 else None
        return None if estimate is None else share * estimate

    def residual(self, features: np.ndarray) -> float:
        """How far aligned points (flattened) lie off the training points' principal subspace, crop pixels."""
        centred = features - self.feature_mean
        return float(np.linalg.norm(centred - (self.basis @ centred) @ self.basis))


def aligned_points(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The first 468 points moved by the similarity that brings them closest to ``reference`` (468×3)."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) < NUM_POINTS:
        raise ValueError(f"expected landmark points of shape (468 or 478, 3), got {points.shape}")
    face = points[:NUM_POINTS]
    scale, rot, trans = weighted_similarity(face, reference, np.ones(NUM_POINTS))
    return scale * face @ rot.T + trans


@lru_cache(maxsize=2)
def load_landmark_identity(path: str | Path = ASSET) -> LandmarkIdentity:
    """The shipped map (an ``.npz`` of :data:`FIELDS`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: landmark identity map missing (python -m facenormals.training.landmark_identity)")
    with np.load(path, allow_pickle=False) as z:
        missing = set(FIELDS) - set(z.files)
        if missing:
            raise ValueError(f"{path}: not a landmark identity map (missing {sorted(missing)})")
        arrays = {k: z[k].astype(np.float64) for k in FIELDS}
        arrays |= {k: z[k].astype(np.float64) if k in z.files else np.float64(v) for k, v in OPTIONAL_FIELDS.items()}
    if not all(np.isfinite(a).all() for a in arrays.values()):
        raise ValueError(f"{path}: landmark identity map has non-finite values")
    try:
        return LandmarkIdentity(**{k: float(a) if a.ndim == 0 else a for k, a in arrays.items()})
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
