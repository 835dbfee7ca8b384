"""The landmark identity map (facenormals/landmark_identity.py, training/landmark_identity.py): a learnt map from
aligned landmarks to the ICT identity, the centre of a tracked face's identity prior, pooled over the track, and a
share of it the centre of a still's, sized on real video."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facenormals import ict_fit, landmark_identity, mesh_prior
from facenormals.fileio import DataError
from facenormals.identity_track import IdentityTrack
from facenormals.training import landmark_identity as trainer
from facenormals.training.data.jobs import write_params
from tests.test_ict_fit import rotation, synthetic_face

OFF = ict_fit.FitSettings(landmark_identity=False)


@pytest.fixture(scope="module")
def face() -> ict_fit.IctFace:
    return ict_fit.load_ict_face()


@pytest.fixture(scope="module")
def shipped() -> landmark_identity.LandmarkIdentity:
    return landmark_identity.load_landmark_identity()


def _mediapipe_like(model: landmark_identity.LandmarkIdentity, seed: int) -> np.ndarray:
    """Points on the shipped map's manifold (its mean face moved along its principal directions), posed in a crop."""
    rng = np.random.default_rng(seed)
    shape = model.feature_mean + rng.normal(scale=5.0, size=8) @ model.basis[:8]
    return 0.9 * shape.reshape(-1, 3) @ rotation(12.0, -5.0, 3.0).T + np.array([128.0, -128.0, 0.0])


def _posed_points(face: ict_fit.IctFace, identity: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """An ICT face's 468 landmark points under a random pose in a 256² crop, with pixel noise."""
    expression = np.zeros(len(face.expression), np.float32)
    rot = rotation(rng.uniform(-30, 30), rng.uniform(-10, 10), rng.uniform(-10, 10))
    vertices = rng.uniform(8, 12) * face.shape(identity, expression) @ rot.T + np.array([128.0, -128.0, 0.0])
    return face.landmark_points(vertices)[:468] + rng.normal(scale=noise, size=(468, 3))


def test_the_estimate_does_not_depend_on_where_and_how_large_the_face_is(shipped):
    points = _mediapipe_like(shipped, 0)
    moved = 1.7 * points @ rotation(25.0, -10.0, 15.0).T + np.array([40.0, -12.0, 3.0])
    estimate = shipped.estimate(points)
    assert estimate is not None and estimate.shape == (ict_fit.NUM_IDENTITY_MODES,)
    np.testing.assert_allclose(shipped.estimate(moved), estimate, atol=1e-6)


def test_points_unlike_mediapipes_get_no_estimate_and_the_fit_keeps_the_mean_face(face, shipped):
    """Exact model points are far off the manifold of MediaPipe's outputs, where the map means nothing."""
    _, points, _, _ = synthetic_face(face, np.random.default_rng(4))
    assert shipped.estimate(points) is None
    first = ict_fit.fit_landmarks(points, face)
    np.testing.assert_array_equal(ict_fit.fit_landmarks(points, face, previous=first).identity,
                                  ict_fit.fit_landmarks(points, face, OFF, previous=first).identity)


def test_a_map_learnt_on_ict_landmarks_recovers_unseen_identities(face):
    rng = np.random.default_rng(1)
    identities = rng.standard_normal((500, len(face.identity))).astype(np.float32)
    points = np.stack([_posed_points(face, a, rng, noise=0.3) for a in identities])
    model = trainer.fit_map(points[:400], identities[:400].astype(np.float64), ridge=1.0)
    estimates = [model.estimate(p) for p in points[400:]]
    assert sum(e is None for e in estimates) <= 2  # the same kind of points stay on the manifold
    kept = [i for i, e in enumerate(estimates) if e is not None]
    truth = identities[400:][kept].astype(np.float64)
    mapped = trainer.vertex_rms_mm(np.stack([estimates[i] for i in kept]), truth)
    assert mapped < 0.5 * trainer.vertex_rms_mm(0 * truth, truth)


def test_a_written_map_loads_back_and_a_broken_one_names_its_file(face, tmp_path):
    rng = np.random.default_rng(2)
    identities = rng.standard_normal((60, len(face.identity))).astype(np.float32)
    points = np.stack([_posed_points(face, a, rng, noise=0.3) for a in identities])
    model = trainer.fit_map(points, identities.astype(np.float64), ridge=10.0)
    path = tmp_path / "map.npz"
    trainer.write_map(path, model)
    loaded = landmark_identity.load_landmark_identity(path)
    np.testing.assert_allclose(loaded.estimate(points[0]), model.estimate(points[0]), atol=1e-2)
    broken = tmp_path / "broken.npz"
    np.savez(broken, reference=np.zeros((468, 3)))
    with pytest.raises(ValueError, match=r"broken\.npz"):
        landmark_identity.load_landmark_identity(broken)
    with pytest.raises(FileNotFoundError, match=r"missing\.npz"):
        landmark_identity.load_landmark_identity(tmp_path / "missing.npz")


def test_the_fit_centres_its_identity_prior_where_it_is_told(face, shipped):
    _, points, identity, _ = synthetic_face(face, np.random.default_rng(3))
    plain = ict_fit.fit_landmarks(points, face, OFF)
    # the mean face as the centre is the fit without the map, exactly
    zero = ict_fit.fit_landmarks(points, face, OFF, identity_mean=np.zeros(len(face.identity)))
    np.testing.assert_array_equal(zero.identity, plain.identity)
    centred = ict_fit.fit_landmarks(points, face, OFF, identity_mean=identity.astype(np.float64))
    assert np.linalg.norm(centred.identity - identity) < 0.5 * np.linalg.norm(plain.identity - identity)
    # on MediaPipe-like points a still's centre is the map's still share of its estimate; a tracked face's, the
    # estimate itself
    like = _mediapipe_like(shipped, 5)
    first = ict_fit.fit_landmarks(like, face)
    assert 0.0 < shipped.still_share < 1.0
    np.testing.assert_allclose(shipped.still_centre(like), shipped.still_share * shipped.estimate(like))
    np.testing.assert_array_equal(first.identity, ict_fit.fit_landmarks(like, face, OFF,
                                                                        identity_mean=shipped.still_centre(like)).identity)
    assert not np.array_equal(first.identity, ict_fit.fit_landmarks(like, face, OFF).identity)
    tracked = ict_fit.fit_landmarks(like, face, previous=first)
    manual = ict_fit.fit_landmarks(like, face, OFF, previous=first, identity_mean=shipped.estimate(like))
    np.testing.assert_array_equal(tracked.identity, manual.identity)
    assert not np.array_equal(tracked.identity, ict_fit.fit_landmarks(like, face, OFF, previous=first).identity)


def test_a_track_pools_its_frames_centres():
    k = 4
    centres = [np.full(k, 1.0), np.full(k, 3.0)]
    track = IdentityTrack.start(np.zeros((k, k)), np.zeros(k), centres[0]).added(np.zeros((k, k)), np.zeros(k),
                                                                                 1e9, centres[1])
    # no landmark information: the identity is the frames' mean centre
    np.testing.assert_allclose(track.identity(np.ones(k), 1.0), np.full(k, 2.0), atol=1e-6)
    plain = IdentityTrack.start(np.eye(k), np.ones(k))
    np.testing.assert_allclose(plain.identity(np.ones(k), 1.0), np.full(k, 0.5))
    # a frame without an estimate (points off MediaPipe's manifold) keeps the pooled centre; a track that had none
    # takes the first one that comes
    gap = track.added(np.zeros((k, k)), np.zeros(k), 1e9)
    np.testing.assert_allclose(gap.identity(np.ones(k), 1.0), np.full(k, 2.0), atol=1e-6)
    late = plain.added(np.zeros((k, k)), np.zeros(k), 1e9, np.full(k, 4.0))
    assert late.centre_frames == 1.0
    np.testing.assert_allclose(late.identity(np.ones(k), 1.0), np.linalg.solve(0.5 * np.eye(k) + np.eye(k),
                                                                            0.5 * np.ones(k) + np.full(k, 4.0)))


def test_a_stills_share_is_the_renders_size_over_that_plus_the_real_clips_spread():
    renders = np.array([[3.0, 0.0], [0.0, 1.0]])  # mean square 5
    steady = np.array([[1.0, 1.0]] * 4)  # no spread
    moving = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])  # spread 2 about its mean (1, 1)
    report = trainer.still_share(renders, {"a/0": steady, "b/0": moving, "c/0": moving})
    # each clip counts once: N = (0 + 2 + 2) / 3
    assert report["renders_mean_square"] == pytest.approx(5.0)
    assert report["real_noise"] == pytest.approx(4.0 / 3.0)
    assert report["share"] == pytest.approx(5.0 / (5.0 + 4.0 / 3.0))
    assert report["clips"]["b/0"] == {"frames": 4, "spread": pytest.approx(2.0)}
    assert trainer.still_share(renders, {"a/0": steady})["share"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="held-out renders"):
        trainer.still_share(np.zeros((0, 2)), {"a/0": steady})


def test_video_clips_group_a_folders_frames_by_video_and_face(tmp_path, shipped):
    for folder in ("images", "masks", mesh_prior.PRIORS_DIR):
        (tmp_path / folder).mkdir()
    # as `facenormals data photos` writes them: a video's frames name it in their params, a photo's do not (even
    # one named like a frame)
    samples = {f"clip_f{i:05d}_f0": (i, {"video": "clip", "face": 0}) for i in range(0, 60, 5)}  # 12 frames
    samples |= {f"two_f{i:05d}_f1": (i, {"video": "two", "face": 1}) for i in range(3)}  # too few for a spread
    samples |= {f"still_f{i:05d}_f0": (i, {"face": 0}) for i in range(12)}
    for name, (seed, params) in samples.items():
        cv2.imwrite(str(tmp_path / "images" / f"{name}.png"), np.zeros((256, 256, 3), np.uint8))
        cv2.imwrite(str(tmp_path / "masks" / f"{name}.png"), np.full((256, 256), 255, np.uint8))
        write_params(tmp_path, name, {"kind": "image-only", "source": "photo", **params})
        points = _mediapipe_like(shipped, seed)
        # stored as MediaPipe gives them: x, y normalised to the image (y down), z by its width
        landmarks = np.stack([points[:, 0] / 256.0, -points[:, 1] / 256.0, -points[:, 2] / 256.0], axis=1)
        np.save(mesh_prior.stored_prior_path(tmp_path, name), np.vstack([landmarks, landmarks[:10]]).astype(np.float32))
    clips = trainer.video_clips(tmp_path)
    assert list(clips) == ["clip/0"] and clips["clip/0"].shape == (12, 468, 3)
    estimates = trainer.estimates_of(shipped, clips["clip/0"])
    np.testing.assert_allclose(estimates[0], shipped.estimate(_mediapipe_like(shipped, 0)), atol=1e-3)
    broken = tmp_path / "params" / "clip_f00000_f0.json"
    broken.write_text("{")
    with pytest.raises(DataError, match=r"clip_f00000_f0\.json"):
        trainer.video_clips(tmp_path)
    for name in list(samples)[:12]:
        (tmp_path / "params" / f"{name}.json").unlink()  # a folder made before its params named the video
    with pytest.raises(DataError, match="no video clip"):
        trainer.video_clips(tmp_path)
