"""The ICT fit's measured landmark weights (issue 13): the estimator recovers known noise; the shipped weights."""

from __future__ import annotations

import numpy as np
import pytest

from facenormals import ict_fit
from facenormals.training.data.ict_landmark_noise import HAND_WEIGHTS, fit_residuals, noise_weights
from tests.test_ict_fit import synthetic_face


@pytest.fixture(scope="module")
def face() -> ict_fit.IctFace:
    return ict_fit.load_ict_face()


def test_noisier_landmarks_get_lower_weights_in_the_inverse_square_ratio(face: ict_fit.IctFace) -> None:
    """Landmarks of ICT faces with 4× the noise (4 mm vs 1 mm) on every odd landmark: their weights come out ~16× lower."""
    rng = np.random.default_rng(11)
    sigma_cm = np.where(np.arange(len(face.landmark_vertices)) % 2 == 1, 0.4, 0.1)
    scale = 5.0  # crop px per cm, as synthetic_face poses the face
    points = []
    for _ in range(40):
        _, landmarks, _, _ = synthetic_face(face, rng, yaw_deg=float(rng.uniform(-10.0, 10.0)), scale=scale)
        points.append(landmarks + rng.standard_normal(landmarks.shape) * (scale * sigma_cm)[:, None])
    residuals, yaws = fit_residuals(points, face, HAND_WEIGHTS)
    weights = noise_weights(residuals, yaws)
    odd = np.arange(ict_fit.NUM_FIT_POINTS) % 2 == 1
    ratio = np.median(weights[odd]) / np.median(weights[~odd])
    assert 1 / 32 < ratio < 1 / 8  # 1/16 up to the fit absorbing part of the noise
    assert np.median(weights) == pytest.approx(1.0)


def test_too_few_frontal_fits_is_an_error() -> None:
    with pytest.raises(ValueError, match="too few"):
        noise_weights(np.ones((5, ict_fit.NUM_FIT_POINTS, 2)), np.zeros(5))


def test_shipped_weights_are_the_fit_default_and_trust_the_outline_less() -> None:
    weights = ict_fit.load_landmark_weights()
    assert weights.shape == (ict_fit.NUM_FIT_POINTS,) and (weights > 0).all()
    assert np.median(weights) == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_array_equal(ict_fit.point_weights(ict_fit.FitSettings()), weights)
    # measured, not set by hand: the outline slides over the cheek, so its residual is larger than the inner points'
    outline = np.zeros(ict_fit.NUM_FIT_POINTS, bool)
    outline[list(ict_fit.FACE_OVAL)] = True
    assert np.median(weights[outline]) < 0.5 * np.median(weights[~outline])


def test_missing_weights_file_names_it(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.npy"):
        ict_fit.load_landmark_weights(tmp_path / "missing.npy")
