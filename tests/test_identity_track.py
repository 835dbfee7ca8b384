"""A tracked face's pooled identity (``FitSettings.track_identity``): steadier than per-frame fits, exact algebra,
stills untouched."""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise

import numpy as np
import pytest

from facenormals import ict_fit
from facenormals.identity_track import IdentityTrack
from tests.test_ict_fit import SIZE, rotation

TRACKED = ict_fit.FitSettings()
# one identity per frame under the track's ridge: pooling against not pooling, like for like
PER_FRAME = replace(TRACKED, track_identity=False, identity_prior=TRACKED.track_identity_prior)


@pytest.fixture(scope="module")
def face() -> ict_fit.IctFace:
    return ict_fit.load_ict_face()


def posed_points(face: ict_fit.IctFace, identity: np.ndarray, expression: np.ndarray, yaw: float, pitch: float,
                 rng: np.random.Generator, noise_px: float = 0.8) -> np.ndarray:
    """The landmark points of an ICT face posed in a 128² crop, with independent noise per point (as a detector)."""
    vertices = 5.0 * face.shape(identity, expression) @ rotation(yaw, pitch, 2.0).T + np.array([SIZE / 2, -SIZE / 2, 0.0])
    points = face.landmark_points(vertices)
    return points + rng.normal(0.0, noise_px, points.shape)


def one_person(face: ict_fit.IctFace, frames: int, seed: int, yaw_deg: float = 25.0) -> list[np.ndarray]:
    """One identity over a clip: the head turning and nodding, the expression changing, fresh landmark noise."""
    rng = np.random.default_rng(seed)
    identity = (rng.standard_normal(len(face.identity)) * 0.8).astype(np.float32)
    clip = []
    for t in range(frames):
        expression = np.zeros(len(face.expression), np.float32)
        expression[face.expression_names.index("jawOpen")] = 0.3 + 0.25 * np.sin(t / 5.0)
        clip.append(posed_points(face, identity, expression, yaw_deg * np.sin(t / 9.0), 6.0 * np.cos(t / 7.0), rng))
    return clip


def fit_clip(face: ict_fit.IctFace, clip: list[np.ndarray], settings: ict_fit.FitSettings) -> list[ict_fit.IctFit]:
    fits, previous = [], None
    for points in clip:
        previous = ict_fit.fit_landmarks(points, face, settings, previous=previous)
        fits.append(previous)
    return fits


def identity_steps(fits: list[ict_fit.IctFit]) -> float:
    return float(np.mean([np.linalg.norm(b.identity - a.identity) for a, b in pairwise(fits[10:])]))


def test_a_tracked_identity_is_steadier_than_one_per_frame(face: ict_fit.IctFace) -> None:
    clip = one_person(face, 40, seed=11)
    per_frame, tracked = fit_clip(face, clip, PER_FRAME), fit_clip(face, clip, TRACKED)
    assert identity_steps(tracked) < 0.25 * identity_steps(per_frame)
    assert tracked[-1].identity_track is not None and per_frame[-1].identity_track is None
    # the pose still follows every frame, and the landmarks are fitted as closely as frame by frame
    for a, b in zip(per_frame[10:], tracked[10:], strict=True):
        assert np.abs(np.subtract(a.euler_deg(), b.euler_deg())).max() < 2.0
    assert np.mean([f.rms_px for f in tracked]) < 1.1 * np.mean([f.rms_px for f in per_frame])


def test_stills_fit_their_own_identity_as_before(face: ict_fit.IctFace) -> None:
    points = one_person(face, 1, seed=12)[0]
    per_frame = replace(TRACKED, track_identity=False)
    a, b = ict_fit.fit_landmarks(points, face, TRACKED), ict_fit.fit_landmarks(points, face, per_frame)
    np.testing.assert_array_equal(a.identity, b.identity)
    np.testing.assert_array_equal(a.rotation, b.rotation)
    assert a.identity_track is None  # a track starts at a face's second frame


def test_a_track_has_its_own_identity_ridge_and_a_still_the_still_ridge(face: ict_fit.IctFace) -> None:
    """Stills take ``identity_prior``, a tracked face's frames ``track_identity_prior`` (session 42: the two differ)."""
    clip = one_person(face, 6, seed=16)
    other_track = replace(TRACKED, track_identity_prior=4.0 * TRACKED.track_identity_prior)
    other_still = replace(TRACKED, identity_prior=4.0 * TRACKED.identity_prior)
    # a still ignores the track's ridge and follows its own
    still = ict_fit.fit_landmarks(clip[0], face, TRACKED)
    np.testing.assert_array_equal(still.identity, ict_fit.fit_landmarks(clip[0], face, other_track).identity)
    assert not np.array_equal(still.identity, ict_fit.fit_landmarks(clip[0], face, other_still).identity)
    # a track's frames from the second on follow the track's ridge
    tracked, retuned = fit_clip(face, clip, TRACKED), fit_clip(face, clip, other_track)
    np.testing.assert_array_equal(tracked[0].identity, retuned[0].identity)
    assert all(not np.array_equal(a.identity, b.identity) for a, b in zip(tracked[1:], retuned[1:], strict=True))


def test_a_tracked_clip_is_deterministic(face: ict_fit.IctFace) -> None:
    clip = one_person(face, 8, seed=13)
    first, second = fit_clip(face, clip, TRACKED), fit_clip(face, clip, TRACKED)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.identity, b.identity)
        np.testing.assert_array_equal(a.expression, b.expression)
        np.testing.assert_array_equal(a.translation, b.translation)


def test_a_new_face_under_the_same_track_takes_over_within_the_memory(face: ict_fit.IctFace) -> None:
    """A face that takes over another's track id starts with that identity; the pool forgets it over its memory."""
    settings = replace(TRACKED, identity_memory_frames=10.0)
    first, second = one_person(face, 30, seed=14), one_person(face, 60, seed=15)
    alone = fit_clip(face, second, settings)[-1].identity
    after = fit_clip(face, first + second, settings)[-1].identity
    before = fit_clip(face, first, settings)[-1].identity
    assert np.linalg.norm(after - alone) < 0.2 * np.linalg.norm(before - alone)


@pytest.mark.parametrize("yaw", [60.0, -60.0])
def test_a_tracked_face_turning_to_60_degrees_does_not_diverge(face: ict_fit.IctFace, yaw: float) -> None:
    fits = fit_clip(face, one_person(face, 30, seed=16, yaw_deg=yaw), TRACKED)
    yaws = [f.euler_deg()[0] for f in fits]
    assert max(abs(y) for y in yaws) > 50.0
    assert all(f.rms_px < 2.0 and np.linalg.norm(f.identity) < 3.0 for f in fits)


def test_identity_evidence_is_the_identity_part_of_the_joint_solve(face: ict_fit.IctFace) -> None:
    """(S + P)⁻¹ s from the Schur complement equals the identity of the ridge solve over identity and the free
    expressions, the expressions at a bound held there."""
    design = ict_fit._design(face, ict_fit.FitSettings())
    points = one_person(face, 1, seed=17)[0][: ict_fit.NUM_FIT_POINTS]
    fit = ict_fit.fit_landmarks(points, face, PER_FRAME)
    k = design.k_id
    expression = fit.expression.astype(np.float64).copy()
    expression[:3] = (0.0, 1.0, 0.4)  # two at a bound, one free
    normal, rhs = ict_fit._normal_equations(design, points, fit.scale, fit.rotation, fit.translation, 1.0, (0, 0.0))
    information, vector = ict_fit.identity_evidence(design, normal, rhs, expression)
    pooled = np.linalg.solve(information + np.diag(design.prior[:k]), vector)
    bound = np.concatenate([np.zeros(k, bool), (expression <= 0.0) | (expression >= 1.0)])
    coeffs = np.concatenate([np.zeros(k), expression])
    free = ~bound
    joint = normal + np.diag(design.prior)
    solved = np.linalg.solve(joint[np.ix_(free, free)], rhs[free] - joint[np.ix_(free, bound)] @ coeffs[bound])
    np.testing.assert_allclose(pooled, solved[:k], rtol=1e-7, atol=1e-9)


def test_a_fixed_identity_is_kept_and_only_expressions_move(face: ict_fit.IctFace) -> None:
    design = ict_fit._design(face, ict_fit.FitSettings())
    points = one_person(face, 1, seed=18)[0][: ict_fit.NUM_FIT_POINTS]
    fit = ict_fit.fit_landmarks(points, face, PER_FRAME)
    held = np.linspace(-0.5, 0.5, design.k_id)
    normal, rhs = ict_fit._normal_equations(design, points, fit.scale, fit.rotation, fit.translation, 1.0, (0, 0.0))
    coeffs = ict_fit._solve_coefficients(design, normal, rhs, identity=held)
    np.testing.assert_array_equal(coeffs[: design.k_id], held)
    assert (coeffs[design.k_id:] >= 0.0).all() and (coeffs[design.k_id:] <= 1.0).all()


def test_fit_landmarks_holds_a_given_identity_and_fits_the_rest(face: ict_fit.IctFace) -> None:
    rng = np.random.default_rng(21)
    identity = (rng.standard_normal(len(face.identity)) * 0.8).astype(np.float32)
    expression = np.zeros(len(face.expression), np.float32)
    expression[face.expression_names.index("jawOpen")] = 0.5
    points = posed_points(face, identity, expression, 15.0, 5.0, rng, noise_px=0.0)
    still = ict_fit.fit_landmarks(points, face)
    for previous in (None, still):  # a still and a warm start
        held = ict_fit.fit_landmarks(points, face, previous=previous, identity=identity)
        np.testing.assert_allclose(held.identity, identity, atol=1e-6)
        assert held.identity_track is None
        assert held.rms_px < still.rms_px  # with the right identity the pose and expression explain the points better
    with pytest.raises(ValueError, match="held identity has 50 weights"):
        ict_fit.fit_landmarks(points, face, identity=identity[:10])


def test_identity_track_pools_frames_with_its_memory() -> None:
    info, vec = np.eye(2) * 4.0, np.array([4.0, -8.0])
    track = IdentityTrack.start(info, vec)
    np.testing.assert_allclose(track.identity(np.ones(2), 1.0), [0.8, -1.6])  # (4 + 1)⁻¹ · (4, −8)
    # the same frame again: the mean information is unchanged, so is the identity at one frame's evidence
    again = track.added(info, vec, memory_frames=10.0)
    assert again.frames == pytest.approx(1.9)
    np.testing.assert_allclose(again.identity(np.ones(2), 1.0), [0.8, -1.6])
    np.testing.assert_allclose(again.identity(np.ones(2), 4.0), [16 / 17, -32 / 17])  # (16 + 1)⁻¹ · 4 · (4, −8)
    assert track.frames == 1.0  # immutable: the earlier fit's track is untouched
    with pytest.raises(ValueError, match="memory"):
        track.added(info, vec, memory_frames=0.5)
    with pytest.raises(ValueError, match="evidence"):
        track.identity(np.ones(2), 0.0)
