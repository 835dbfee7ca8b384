"""Measure how noisy each MediaPipe landmark is for the ICT fit: ``facenormals/assets/ict_landmark_weights.npy``.

The fit weighs its 468 landmarks in a least-squares sum. Hand weights (1, the face outline 0.3) guess the noise;
this measures it instead: on training renders of ICT faces with shape outside ICT's span (``ict_paired_v4``:
identities and expressions the model cannot reach exactly, as with a real face) the fit with the hand weights
leaves a residual per landmark — MediaPipe's error there, the correspondence's, and the part of the shape the model
cannot follow. Each landmark's weight is the inverse of its mean squared residual in the image plane (x, y; in cm,
so crop size does not matter), over the renders whose fitted |yaw| is below ``FRONTAL_YAW_DEG`` (the turned-away
half has its own yaw-gated fade in the fit), scaled to median 1 so the fit's ridge priors keep their meaning.
The maximum-likelihood weight of a landmark with Gaussian noise of that size.

``python -m facenormals.training.data.ict_landmark_noise --data /work/datasets/ict_paired_v4`` rewrites the asset
(atomically) from the stored MediaPipe landmarks of every second sample (``--every``, ``--offset``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from facenormals import ict_fit, mesh_prior, prior
from facenormals.atomic import atomic_path

FRONTAL_YAW_DEG = 20.0  # the fade of the turned-away half starts here
HAND_WEIGHTS = ict_fit.FitSettings(measured_weights=False)


def fit_residuals(points: list[np.ndarray], face: ict_fit.IctFace,
                  settings: ict_fit.FitSettings = HAND_WEIGHTS) -> tuple[np.ndarray, np.ndarray]:
    """(image-plane residuals n×468×2 in cm, fitted yaw n degrees) of the fit to each landmark set (crop points)."""
    fitted = slice(0, ict_fit.NUM_FIT_POINTS)
    residuals, yaws = [], []
    for crop_points in points:
        fit = ict_fit.fit_landmarks(crop_points, face, settings)
        shape = face.landmark_points(face.shape(fit.identity, fit.expression))[fitted]
        posed = fit.scale * shape @ fit.rotation.T + fit.translation
        residuals.append((crop_points[:ict_fit.NUM_FIT_POINTS, :2] - posed[:, :2]) / fit.scale)
        yaws.append(fit.euler_deg()[0])
    return np.asarray(residuals), np.asarray(yaws)


def noise_weights(residuals: np.ndarray, yaw_deg: np.ndarray, frontal_yaw_deg: float = FRONTAL_YAW_DEG) -> np.ndarray:
    """Per-landmark inverse mean squared residual over the near-frontal fits, scaled to median 1."""
    frontal = np.abs(yaw_deg) < frontal_yaw_deg
    if frontal.sum() < 10:
        raise ValueError(f"only {frontal.sum()} fits with |yaw| < {frontal_yaw_deg}°: too few to measure the noise")
    mean_square = (residuals[frontal] ** 2).mean(axis=(0, 2))
    weights = 1.0 / mean_square
    return weights / np.median(weights)


def stored_crop_points(root: Path, every: int, offset: int, limit: int) -> list[np.ndarray]:
    """The stored MediaPipe landmarks of every ``every``-th sample of a dataset, as crop points of its crops."""
    paths = sorted((root / "priors").glob("*.npy"))[offset::every][:limit]
    if not paths:
        raise FileNotFoundError(f"{root / 'priors'}: no stored landmarks (facenormals data prior)")
    size = _crop_size(root)
    points = []
    for path in paths:
        landmarks = mesh_prior.read_stored_landmarks(root, path.stem)
        if landmarks is not None:
            points.append(mesh_prior.landmarks_in_crop(landmarks, (size, size), prior.IDENTITY))
    return points


def _crop_size(root: Path) -> int:
    mask = next((root / "masks").glob("*.png"), None)
    if mask is None:
        raise FileNotFoundError(f"{root / 'masks'}: no masks to read the crop size from")
    return int(cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE).shape[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="training set of ICT renders with stored landmarks")
    parser.add_argument("--every", type=int, default=2)
    parser.add_argument("--offset", type=int, default=1)
    parser.add_argument("--max-images", type=int, default=4000)
    parser.add_argument("--out", type=Path, default=ict_fit.LANDMARK_WEIGHTS)
    args = parser.parse_args(argv)
    points = stored_crop_points(args.data, args.every, args.offset, args.max_images)
    residuals, yaws = fit_residuals(points, ict_fit.load_ict_face())
    weights = noise_weights(residuals, yaws)
    with atomic_path(args.out) as tmp, open(tmp, "wb") as fh:
        np.save(fh, weights.astype(np.float32))
    outline = weights[list(ict_fit.FACE_OVAL)]
    print(f"{args.out}: {len(points)} fits, {int((np.abs(yaws) < FRONTAL_YAW_DEG).sum())} near-frontal; weights "
          f"5/50/95 % {np.percentile(weights, [5, 50, 95]).round(2).tolist()}, face outline median {np.median(outline):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
