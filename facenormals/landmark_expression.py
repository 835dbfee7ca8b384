"""The ICT expression a face's landmarks predict: a linear map learnt on renders, centring the fit's expression prior.

The landmark fit (:mod:`facenormals.ict_fit`) solves its 53 expression weights under a ridge toward the neutral face,
strong because fitted freely they chase landmark noise; on held-out renders its expressions are barely closer to the
rendered ones than no expression at all (per-expression R² below 0 for most of the 53, the jaw and the smile aside).
MediaPipe's landmarks carry more of the expression than a generic noise model can read — its points move in their own
learnt way when a face smiles or closes its eyes — and a map learnt from many rendered faces with known expressions
reads it, as :mod:`facenormals.landmark_identity` does for the identity: the same 468 points, aligned onto the
identity map's reference face, one affine map (ridge regression on standardised coordinates, folded into ``weights``
and ``offset``) to the expression weights, clipped to the fit's [0, 1]. The fit then centres its expression ridge
there, with the weight ``prior_weight`` that brought held-out *training* renders' fitted expressions closest to the
rendered ones (the validation sets chose nothing). Points the identity map finds off MediaPipe's manifold get no
estimate (the fit keeps its ridge toward the neutral face).

The asset ``assets/landmark_expression.npz`` is learnt by ``python -m facenormals.training.landmark_expression``
from ICT training sets with stored landmarks (README "Coarse face"); the real scan is never part of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from facenormals.landmark_identity import NUM_POINTS, load_landmark_identity

ASSET = Path(__file__).resolve().parent / "assets" / "landmark_expression.npz"
FIELDS = ("reference", "weights", "offset", "prior_weight")


@dataclass(frozen=True, eq=False)
class LandmarkExpression:
    """``expression ≈ clip(aligned(points) · weights + offset, 0, 1)`` on the identity map's aligned features."""

    reference: np.ndarray  # 468×3: the identity map's reference face (the features are shared, and checked so)
    weights: np.ndarray  # (468·3)×K_ex
    offset: np.ndarray  # (K_ex,)
    prior_weight: float  # the fit's expression ridge weight once centred at an estimate

    def __post_init__(self) -> None:
        if self.reference.shape != (NUM_POINTS, 3):
            raise ValueError(f"a landmark expression map's reference must be {NUM_POINTS}×3, got {self.reference.shape}")
        if self.weights.shape != (3 * NUM_POINTS, len(self.offset)):
            raise ValueError(f"a landmark expression map's weights must be {3 * NUM_POINTS}×{len(self.offset)}, "
                             f"got {self.weights.shape}")
        if not self.prior_weight > 0.0:
            raise ValueError(f"a landmark expression map's prior weight must be > 0, got {self.prior_weight:g}")

    def from_features(self, features: np.ndarray) -> np.ndarray:
        """Expression weights (K_ex,) in [0, 1] for aligned points, flattened (the identity map's ``features``)."""
        return np.clip(features @ self.weights + self.offset, 0.0, 1.0)

    def estimate(self, points: np.ndarray) -> np.ndarray | None:
        """Expression weights (K_ex,) for MediaPipe's landmark crop points (N ≥ 468 × 3, our frame), or None for
        points the identity map finds off the manifold of MediaPipe's outputs."""
        features = load_landmark_identity().features(points)
        return None if features is None else self.from_features(features)


@lru_cache(maxsize=2)
def load_landmark_expression(path: str | Path = ASSET) -> LandmarkExpression:
    """The shipped map (an ``.npz`` of :data:`FIELDS`), checked against the identity map whose features it reads."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: landmark expression map missing "
                                "(python -m facenormals.training.landmark_expression)")
    with np.load(path, allow_pickle=False) as z:
        missing = set(FIELDS) - set(z.files)
        if missing:
            raise ValueError(f"{path}: not a landmark expression map (missing {sorted(missing)})")
        arrays = {k: z[k].astype(np.float64) for k in FIELDS}
    if not all(np.isfinite(a).all() for a in arrays.values()):
        raise ValueError(f"{path}: landmark expression map has non-finite values")
    try:
        model = LandmarkExpression(**{k: float(a) if a.ndim == 0 else a for k, a in arrays.items()})
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    if not np.allclose(model.reference, load_landmark_identity().reference, atol=1e-3):
        raise ValueError(f"{path}: learnt on another reference face than the landmark identity map's "
                         "(re-learn it: python -m facenormals.training.landmark_expression)")
    return model
