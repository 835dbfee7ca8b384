"""A coarse face pulled toward the ground truth and turned by a smooth random tilt (issue 14, optional).

Why: on a render the coarse face is an ICT fit to MediaPipe's landmarks, so the gap between it and the truth is
the part of an ICT identity the landmarks do not pin down — which the network can learn to fill in from the ICT
population alone (E[truth | landmarks] over ICT faces), without reading the shading. That population prior is
the wrong one for a real person: every campaign run that got better on ICT faces got worse on the real scan, all of
it low-frequency shape (docs/campaign/HISTORY.md, sessions 8–18). Here a share of the paired samples gets a coarse face whose gap
is mostly noise independent of the face: the stored coarse face moved a random fraction α of the way to the truth
(blurred to the coarse face's scale) over the face, then turned everywhere by a smooth random field of tilts. The
population part of the gap shrinks by α; the tilt can only be undone by reading the image's shading (and what the
image shows of the outline), which is the same physics on a real face.

The result keeps the stored face's coverage and its look (smooth, extended over the crop), so nothing but the
image tells the two kinds of sample apart. The tilt field is a sum of Gaussian-smoothed white noise at a few scales
(default :data:`TILT_SCALES_PX`), scaled so that its RMS tilt over the face is the drawn angle (uniform in
[0, ``max_tilt_deg``]): the ICT fit's own error on renders is ~14° mean, most of it low-frequency (what survives a
σ = 4 px blur). Coarse scales are close to a turn of the whole face, which shading under an unknown light cannot
tell: run c15 (σ 12/24/48 px) learnt to leave the coarse face alone, c16 (6/12/24) did not (docs/campaign/HISTORY.md).

Configured by ``augment.prior_from_truth`` (share of paired samples), ``prior_truth_tilt_deg`` and
``prior_truth_scales_px``; off (0) by default, with no random draws (older runs replay their batches).
"""

from __future__ import annotations

import cv2
import numpy as np

from facenormals import prior
from facenormals.geometry import normalise_rows
from facenormals.training.diagnose import masked_blur

TILT_SCALES_PX = (12.0, 24.0, 48.0)  # default Gaussian σ of the tilt field's components, pixels of a 256² crop
FIELD_PX = 64  # the tilt field is drawn at this side (cheap) and resized to the crop
BLUR_PX = (2.0, 6.0)  # extra blur of the truth before drawing, σ in pixels of a 256² crop (uniform)


def unit(normals: np.ndarray) -> np.ndarray:
    """A float32 copy of H×W×3 vectors scaled to unit length (zero stays zero)."""
    out = np.array(normals, dtype=np.float32, order="C")
    normalise_rows(out.reshape(-1, 3), 1e-6)
    return out


def smooth_field(size: int, rng: np.random.Generator,
                 scales_px: tuple[float, ...] = TILT_SCALES_PX) -> np.ndarray:
    """S×S×3 random vector field, smooth at ``scales_px`` (σ in pixels of a 256² crop, scaled to ``size``), unit
    RMS; drawn at :data:`FIELD_PX`² (σ 6 px is 1.5 of those pixels) and resized."""
    small = np.zeros((FIELD_PX, FIELD_PX, 3), np.float32)
    for sigma in scales_px:
        noise = rng.standard_normal((FIELD_PX, FIELD_PX, 3)).astype(np.float32)
        smooth = cv2.GaussianBlur(noise, (0, 0), sigma * FIELD_PX / 256.0, borderType=cv2.BORDER_REFLECT)
        small += smooth / max(float(smooth.std()), 1e-6) * np.float32(rng.uniform(0.3, 1.0))
    field = cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)
    return field / max(float(field.std()), 1e-6)


def tilt(normals: np.ndarray, field: np.ndarray, region: np.ndarray, rms_deg: float) -> np.ndarray:
    """Unit normals (H×W×3) moved by the tangential part of ``field``, scaled so that the RMS angle moved over
    ``region`` is ``rms_deg`` (to within the small-angle approximation: the scale is set from tan)."""
    tangential = field - np.sum(field * normals, axis=2, keepdims=True) * normals
    rms = float(np.sqrt(np.mean(np.sum(tangential[region] ** 2, axis=1)))) if region.any() else 0.0
    if rms < 1e-9 or rms_deg <= 0.0:
        return normals.astype(np.float32, copy=True)
    return unit(normals + tangential * np.float32(np.tan(np.radians(rms_deg)) / rms))


def truth_prior(stored: np.ndarray, coverage: np.ndarray, truth: np.ndarray, mask: np.ndarray,
                rng: np.random.Generator, max_tilt_deg: float,
                scales_px: tuple[float, ...] = TILT_SCALES_PX) -> np.ndarray:
    """The stored coarse face (S×S×3 over the crop, with its ``coverage``) moved toward the ``truth`` (S×S×3, unit
    inside ``mask``) and tilted: S×S×3 unit normals over the crop, to be fed with the same coverage. No stored face
    (empty coverage): returned unchanged, the no-face fallback stays what it is."""
    size = mask.shape[0]
    if stored.shape != truth.shape or truth.shape[:2] != mask.shape or coverage.shape != mask.shape:
        raise ValueError(f"truth prior: stored {stored.shape}, truth {truth.shape}, mask {mask.shape} and coverage "
                         f"{coverage.shape} must be one crop")
    region = mask & coverage
    if not region.any():
        return stored
    px = size / 256.0
    target = masked_blur(truth, mask, rng.uniform(*BLUR_PX) * px)  # used inside the mask only
    alpha = np.float32(rng.uniform(0.0, 1.0))
    mixed = stored.astype(np.float32, copy=True)
    mixed[region] = (1.0 - alpha) * stored[region] + alpha * target[region]
    # the seam at the mask's edge smoothed as the coarse face itself is (one more blur of an already smooth face)
    mixed = unit(cv2.GaussianBlur(unit(mixed), (0, 0), prior.ICT_SMOOTH_PX * px))
    return tilt(mixed, smooth_field(size, rng, scales_px), region, rng.uniform(0.0, max_tilt_deg))
