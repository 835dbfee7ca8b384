"""The identity headroom benchmark's person fit (benchmarks/identity_headroom.py): one identity fitted to several
views' normals comes back, and a held identity is the one the fit uses."""

from __future__ import annotations

import numpy as np
import pytest

from facenormals import ict_fit
from facenormals.benchmarks import identity_headroom as headroom
from facenormals.conventions import angular_error_deg
from tests.test_ict_fit import rotation


@pytest.fixture(scope="module")
def face() -> ict_fit.IctFace:
    return ict_fit.load_ict_face()


def _views(face: ict_fit.IctFace, identity: np.ndarray, yaws: list[float]) -> list[headroom.Crop]:
    """Noise-free landmark points of one ICT person in 256² crops; the truth is its own coarse face (``ict-fit``)."""
    crops = []
    for yaw in yaws:
        vertices = (10.0 * face.shape(identity, np.zeros(len(face.expression), np.float32)) @ rotation(yaw, 5.0).T
                    + np.array([headroom.SIZE / 2, -headroom.SIZE / 2, 0.0]))
        points = face.landmark_points(vertices)
        still = ict_fit.fit_landmarks(points, face)
        crop = headroom.Crop(f"yaw{yaw:g}", points, still, np.zeros((1, 3, headroom.SIZE, headroom.SIZE), np.float32),
                             np.zeros((headroom.SIZE, headroom.SIZE, 3), np.float32),
                             np.zeros((headroom.SIZE, headroom.SIZE), bool))
        truth, coverage = headroom.drawn(crop, headroom.held_fit(crop, identity), "ict-fit")
        crop.normals, crop.mask = truth, coverage
        crops.append(crop)
    return crops


def _error(crop: headroom.Crop, identity: np.ndarray | None) -> float:
    fit = crop.still if identity is None else headroom.held_fit(crop, identity)
    return float(angular_error_deg(headroom.drawn(crop, fit, "ict-fit")[0], crop.normals)[crop.mask].mean())


def test_a_held_identity_is_the_fits_identity(face):
    identity = np.random.default_rng(1).normal(size=len(face.identity)).astype(np.float32)
    crop = _views(face, identity, [10.0])[0]
    np.testing.assert_allclose(headroom.held_fit(crop, identity).identity, identity, atol=1e-4)


def test_one_identity_fitted_to_several_views_normals_comes_back(face):
    identity = (np.random.default_rng(2).normal(size=len(face.identity)) * 0.8).astype(np.float32)
    crops = _views(face, identity, [-20.0, 0.0, 25.0])
    fitted = headroom.identity_for_normals(crops, [c.normals for c in crops], ridge=1e-4, rounds=6)
    before = np.mean([_error(c, None) for c in crops])
    after = np.mean([_error(c, fitted) for c in crops])
    assert before > 1.0  # the landmarks alone do not give the shape
    assert after < 0.25 * before


def test_the_figure_shows_each_row_with_both_identities(face):
    from facenormals import zoo
    from facenormals.training.gate import network

    identity = (np.random.default_rng(4).normal(size=len(face.identity)) * 0.8).astype(np.float32)
    crops = _views(face, identity, [0.0, 15.0, -15.0])
    run = network(zoo.model_path("fast-prior"))[0]
    sheet = headroom.figure(crops, [identity] * len(crops), run, rows=2)
    tile = headroom.FIGURE_TILE
    assert sheet.dtype == np.uint8
    assert sheet.shape == (28 + 2 * tile, len(headroom.FIGURE_COLUMNS) * tile, 3)
    # the coarse face with the true identity held is closer to the truth's tile than the fit's own (both blended
    # with MediaPipe's mesh, as the network sees them; the truth is the ICT face alone)
    above_labels = slice(28, 28 + tile - 30)
    truth, coarse, better = (sheet[above_labels, k * tile:(k + 1) * tile].astype(float) for k in (1, 2, 3))
    assert np.abs(better - truth).mean() < 0.8 * np.abs(coarse - truth).mean()
