"""The paper's evaluation metrics: mean ± std of per-image mean angular error, % of pixels under 20/25/30°."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from facenormals.conventions import angular_error_deg

THRESHOLDS_DEG = (20, 25, 30)


@dataclass(frozen=True)
class SetMetrics:
    """Metrics of one evaluation set, in the JSON schema of ``facenormals eval``."""

    n_images: int
    mean_deg: float
    std_deg: float
    pct_below_20: float
    pct_below_25: float
    pct_below_30: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def masked_errors(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Angular errors (degrees) of the pixels inside ``mask`` (H×W bool)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != pred.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match normal map {pred.shape[:2]}")
    return angular_error_deg(pred, target)[mask]


class MetricAccumulator:
    """Collects per-image errors; std is across images of the per-image mean (the paper's protocol)."""

    def __init__(self) -> None:
        self._image_means: list[float] = []
        self._below = np.zeros(len(THRESHOLDS_DEG), dtype=np.int64)
        self._pixels = 0

    def add(self, pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
        """Add one image; returns its mean error. Images with an empty mask are rejected."""
        errors = masked_errors(pred, target, mask)
        if errors.size == 0:
            raise ValueError("empty mask: an image without facial pixels cannot be scored")
        self._image_means.append(float(errors.mean()))
        self._below += np.array([(errors < t).sum() for t in THRESHOLDS_DEG])
        self._pixels += errors.size
        return self._image_means[-1]

    def result(self) -> SetMetrics:
        if not self._image_means:
            raise ValueError("no images were scored")
        means = np.array(self._image_means)
        pct = 100.0 * self._below / self._pixels
        return SetMetrics(
            n_images=len(means),
            mean_deg=float(means.mean()),
            std_deg=float(means.std()),
            pct_below_20=float(pct[0]),
            pct_below_25=float(pct[1]),
            pct_below_30=float(pct[2]),
        )
