"""The landmark expression map (facenormals/landmark_expression.py, training/landmark_expression.py): a learnt map from
aligned landmarks to the ICT expressions, the centre of the fit's expression ridge."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from facenormals import ict_fit, landmark_expression, landmark_identity, mesh_prior
from facenormals.atomic import OutputError
from facenormals.fileio import DataError
from facenormals.training import landmark_expression as trainer
from facenormals.training.data.jobs import write_params
from facenormals.training.landmark_identity import aligned_features, procrustes_reference
from tests.test_ict_fit import rotation, synthetic_face
from tests.test_landmark_identity import _mediapipe_like

OFF = ict_fit.FitSettings(landmark_expression=False)


@pytest.fixture(scope="module")
def face() -> ict_fit.IctFace:
    return ict_fit.load_ict_face()


@pytest.fixture(scope="module")
def identities() -> landmark_identity.LandmarkIdentity:
    return landmark_identity.load_landmark_identity()


def _constant_map(identities: landmark_identity.LandmarkIdentity, centre: np.ndarray,
                  weight: float) -> landmark_expression.LandmarkExpression:
    """A map that puts every face's expressions at ``centre``."""
    weights = np.zeros((3 * landmark_identity.NUM_POINTS, len(centre)))
    return landmark_expression.LandmarkExpression(identities.reference, weights, centre.astype(np.float64), weight)


def _expressive_points(face: ict_fit.IctFace, rng: np.random.Generator, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """An ICT face with a few random expressions (as the renderer draws them: a handful, weights in [0, 1]) and a
    small random identity, its 468 landmark points posed in a 256² crop with pixel noise; and its expressions."""
    expression = np.zeros(len(face.expression), np.float32)
    expression[rng.choice(len(expression), size=4, replace=False)] = rng.uniform(0.2, 1.0, size=4)
    identity = rng.normal(scale=0.5, size=len(face.identity)).astype(np.float32)
    rot = rotation(rng.uniform(-30, 30), rng.uniform(-10, 10), rng.uniform(-10, 10))
    vertices = rng.uniform(8, 12) * face.shape(identity, expression) @ rot.T + np.array([128.0, -128.0, 0.0])
    return face.landmark_points(vertices)[:468] + rng.normal(scale=noise, size=(468, 3)), expression


def test_a_map_learnt_on_ict_landmarks_recovers_unseen_expressions(face):
    rng = np.random.default_rng(3)
    rows = [_expressive_points(face, rng, noise=0.3) for _ in range(600)]
    points, truth = np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]).astype(np.float64)
    reference = procrustes_reference(points[:500])
    model = trainer.fit_map(points[:500], truth[:500], prior_weight=64.0, ridge=1.0, reference=reference)
    estimates = np.stack([model.from_features(f) for f in aligned_features(points[500:], reference)])
    assert ((estimates >= 0.0) & (estimates <= 1.0)).all()
    mapped = trainer.expression_rms_mm(estimates, truth[500:])
    assert mapped < 0.5 * trainer.expression_rms_mm(0 * truth[500:], truth[500:])


def test_the_fit_takes_its_expressions_toward_the_maps_estimate_by_the_maps_weight(face, identities):
    points = _mediapipe_like(identities, 5)
    plain = ict_fit.fit_landmarks(points, face, OFF)
    centre = np.full(len(face.expression), 0.5)
    pinned = ict_fit.fit_landmarks(points, face, expression_map=_constant_map(identities, centre, 1e7))
    np.testing.assert_allclose(pinned.expression, centre, atol=1e-3)
    # centred at the neutral face with the fit's own weight: the same ridge as the map off
    neutral = ict_fit.fit_landmarks(points, face, expression_map=_constant_map(
        identities, 0 * centre, ict_fit.FitSettings().expression_prior))
    np.testing.assert_allclose(neutral.expression, plain.expression, atol=1e-5)
    np.testing.assert_allclose(neutral.identity, plain.identity, atol=1e-5)
    # in between, the expressions move part of the way
    between = ict_fit.fit_landmarks(points, face, expression_map=_constant_map(identities, centre, 64.0))
    assert np.abs(between.expression - centre).mean() < np.abs(plain.expression - centre).mean()


def test_points_unlike_mediapipes_keep_the_neutral_ridge(face):
    """Exact model points are off the manifold of MediaPipe's outputs: the shipped map gives no estimate there."""
    _, points, _, _ = synthetic_face(face, np.random.default_rng(4))
    assert landmark_expression.load_landmark_expression().estimate(points) is None
    np.testing.assert_array_equal(ict_fit.fit_landmarks(points, face).expression,
                                  ict_fit.fit_landmarks(points, face, OFF).expression)


def test_a_tracks_identity_evidence_solves_the_centred_expressions_out(face, identities):
    """The evidence a frame adds to its track is the fit's own normal equations with the expressions (under the
    centred ridge) eliminated: solved with the identity prior, it gives the joint solve's identity."""
    points = _mediapipe_like(identities, 6)
    design = ict_fit._design(face, ict_fit.FitSettings())
    fit = ict_fit.fit_landmarks(points, face, OFF)
    ridge = ict_fit.ExpressionRidge(np.full(len(face.expression), 0.5), 200.0)  # keeps every weight inside [0, 1]
    normal, rhs = ict_fit._normal_equations(design, points[:468], fit.scale, fit.rotation, fit.translation, 1.0,
                                            (0, 0.0))
    schur, reduced = ict_fit.identity_evidence(design, normal, rhs, np.full(len(face.expression), 0.5), ridge)
    joint = ict_fit._solve_coefficients(design, normal.copy(), rhs, ridge=ridge)
    assert ((joint[design.k_id:] > 0.0) & (joint[design.k_id:] < 1.0)).all()
    identity = np.linalg.solve(schur + np.diag(design.prior[:design.k_id]), reduced)
    np.testing.assert_allclose(identity, joint[:design.k_id], rtol=1e-6, atol=1e-8)


def test_the_shipped_map_reads_the_identity_maps_features_and_a_broken_one_names_its_file(identities, tmp_path):
    shipped = landmark_expression.load_landmark_expression()
    np.testing.assert_allclose(shipped.reference, identities.reference, atol=1e-3)
    assert shipped.weights.shape == (3 * 468, ict_fit.NUM_EXPRESSION_MODES) and shipped.prior_weight > 0
    estimate = shipped.estimate(_mediapipe_like(identities, 0))
    assert estimate is not None and ((estimate >= 0.0) & (estimate <= 1.0)).all()
    other = landmark_expression.LandmarkExpression(identities.reference + 5.0, shipped.weights, shipped.offset, 64.0)
    trainer.write_map(tmp_path / "other.npz", other)
    with pytest.raises(ValueError, match=r"other\.npz.*another reference"):
        landmark_expression.load_landmark_expression(tmp_path / "other.npz")
    (tmp_path / "broken.npz").write_bytes(b"not a map")
    with pytest.raises(Exception, match=r"broken\.npz|pickle|zip"):
        landmark_expression.load_landmark_expression(tmp_path / "broken.npz")
    np.savez(tmp_path / "partial.npz", reference=identities.reference)
    with pytest.raises(ValueError, match=r"partial\.npz.*missing"):
        landmark_expression.load_landmark_expression(tmp_path / "partial.npz")
    with pytest.raises(ValueError, match="prior weight"):
        landmark_expression.LandmarkExpression(identities.reference, shipped.weights, shipped.offset, 0.0)


def _ict_set(root, identities: landmark_identity.LandmarkIdentity, count: int, seed: int) -> None:
    """A folder as ``facenormals data render`` + ``data prior`` leave it: images, params naming each sample's
    expressions, stored MediaPipe-like landmarks (on the identity map's manifold) that move one way with
    ``jawOpen``."""
    for folder in ("images", "masks", mesh_prior.PRIORS_DIR):
        (root / folder).mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        name = f"ict_{i:06d}"
        jaw = float(rng.uniform(0.0, 1.0))
        shape = (identities.feature_mean + rng.normal(scale=5.0, size=8) @ identities.basis[:8]
                 + 15.0 * jaw * identities.basis[9])
        points = 0.9 * shape.reshape(-1, 3) @ rotation(12.0, -5.0, 3.0).T + np.array([128.0, -128.0, 0.0])
        cv2.imwrite(str(root / "images" / f"{name}.png"), np.zeros((256, 256, 3), np.uint8))
        cv2.imwrite(str(root / "masks" / f"{name}.png"), np.full((256, 256), 255, np.uint8))
        write_params(root, name, {"kind": "paired", "source": "ict", "expressions": {"jawOpen": round(jaw, 4)}})
        landmarks = np.stack([points[:, 0] / 256.0, -points[:, 1] / 256.0, -points[:, 2] / 256.0], axis=1)
        np.save(mesh_prior.stored_prior_path(root, name), np.vstack([landmarks, landmarks[:10]]).astype(np.float32))


def test_the_trainer_learns_a_map_from_rendered_sets_and_reports_on_held_out_ones(identities, tmp_path):
    _ict_set(tmp_path / "train", identities, 60, 1)
    _ict_set(tmp_path / "held", identities, 20, 2)
    out, report = tmp_path / "map.npz", tmp_path / "report.json"
    assert trainer.main(["--ict", str(tmp_path / "train"), "--holdout", str(tmp_path / "held"), "--ridge", "1",
                         "--prior-weight", "32", "--curve-weights", "16", "64", "--out", str(out),
                         "--json", str(report)]) == 0
    model = landmark_expression.load_landmark_expression(out)
    assert model.prior_weight == 32.0
    jaw = ict_fit.load_ict_face().expression_names.index("jawOpen")
    rows = trainer.set_rows(tmp_path / "held")
    estimates = np.stack([model.estimate(p) for p in rows.points])
    assert np.corrcoef(estimates[:, jaw], rows.expressions[:, jaw])[0, 1] > 0.9
    written = json.loads(report.read_text())
    assert written["training"] == {"train": 60} and written["held"]["samples"] == 20
    assert set(written["held_out_training_renders"]["fit centred at the map, by prior weight"]) == {"16", "64"}
    with pytest.raises(OutputError, match="already exists"):  # the map is not written over without --overwrite
        trainer.main(["--ict", str(tmp_path / "train"), "--out", str(out)])
    (tmp_path / "train" / "params" / "ict_000003.json").write_text(json.dumps(
        {"kind": "paired", "source": "ict", "expressions": {"frown": 1.0}}))
    with pytest.raises(DataError, match=r"ict_000003\.json.*frown"):
        trainer.set_rows(tmp_path / "train")
