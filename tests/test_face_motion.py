"""Image motion of a face (facenormals.face_motion) and the landmark smoother that follows it, on sequences whose
motion is known exactly: a real photo moved by chosen similarities, and the embedded sample clip through real
MediaPipe."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facenormals.face_motion import TRACK_LANDMARKS, MotionParams, face_motion, to_gray
from facenormals.faces import NUM_LANDMARKS, FaceMeshDetector
from facenormals.realtime.sources.sample import frame_from_photo_matrix, render_pose_rgb, sample_photo, sample_pose
from facenormals.smoothing import LandmarkSmoother, OneEuroFilter, OneEuroParams

SIZE = (480, 640)


def similarity(angle_deg: float, scale: float, shift: tuple[float, float], centre=(320.0, 240.0)) -> np.ndarray:
    matrix = cv2.getRotationMatrix2D(centre, angle_deg, scale)
    matrix[:, 2] += shift
    return matrix


def moved_photo(matrix: np.ndarray) -> np.ndarray:
    """The astronaut photo (real texture) placed in a 640×480 grey frame by ``matrix`` (photo px → frame px)."""
    return to_gray(cv2.warpAffine(sample_photo(), matrix, SIZE[::-1], flags=cv2.INTER_CUBIC,
                                  borderMode=cv2.BORDER_REFLECT101))


def face_points(rng: np.random.Generator, matrix: np.ndarray) -> np.ndarray:
    """478 'landmarks' on the photo's face (its box 180–270 × 80–200 px), in the frame of ``matrix``."""
    photo = np.column_stack([rng.uniform(180, 270, NUM_LANDMARKS), rng.uniform(80, 200, NUM_LANDMARKS)])
    return photo @ matrix[:, :2].T + matrix[:, 2]


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


@pytest.mark.parametrize("follow", [True, False], ids=["landmark-points", "corners"])
@pytest.mark.parametrize("motion", [(0.0, 1.0, (2.3, -1.7)), (3.0, 1.0, (0.0, 0.0)), (-2.0, 1.03, (-4.6, 3.2)),
                                    (0.0, 0.97, (12.0, 6.0))], ids=["shift", "turn", "all", "fast"])
def test_motion_of_a_moved_photo_is_recovered_to_subpixel(rng, follow, motion):
    place = frame_from_photo_matrix(sample_pose(0), *SIZE[::-1])
    prev_points = face_points(rng, place)
    true = similarity(*motion)
    prev, cur = moved_photo(place), moved_photo(np.vstack([true, [0, 0, 1]])[:2] @ np.vstack([place, [0, 0, 1]]))
    follow_points = prev_points[list(TRACK_LANDMARKS)] if follow else None
    found = face_motion(prev, cur, prev_points, follow=follow_points)
    assert found is not None
    error = np.linalg.norm(apply(found, prev_points) - apply(true, prev_points), axis=1)
    # sub-pixel over the whole face (the 165 px face is measured at 120 px: ~0.06 px on shifts, up to ~0.3 px on a turn+zoom)
    assert error.max() < 0.5, error.max()
    assert error.mean() < 0.25, error.mean()


@pytest.mark.parametrize("gain", [0.85, 1.12])
def test_motion_under_a_light_change_is_still_subpixel(rng, gain):
    """The sample clip dims and brightens its light: a global gain between the frames must not read as motion."""
    place = frame_from_photo_matrix(sample_pose(0), *SIZE[::-1])
    prev_points = face_points(rng, place)
    true = similarity(0.0, 1.0, (1.6, 0.8))
    prev = moved_photo(place)
    cur = cv2.convertScaleAbs(moved_photo(np.vstack([true, [0, 0, 1]])[:2] @ np.vstack([place, [0, 0, 1]])), alpha=gain)
    found = face_motion(prev, cur, prev_points, follow=prev_points[list(TRACK_LANDMARKS)])
    assert found is not None  # without matching the gain, 15 % darker frames lose the track
    error = np.linalg.norm(apply(found, prev_points) - apply(true, prev_points), axis=1)
    assert error.mean() < 0.1, error.mean()


def test_unrelated_frames_give_no_motion(rng):
    place = frame_from_photo_matrix(sample_pose(0), *SIZE[::-1])
    points = face_points(rng, place)
    noise = rng.integers(0, 256, SIZE, dtype=np.uint8)
    assert face_motion(moved_photo(place), noise, points, follow=points[list(TRACK_LANDMARKS)]) is None
    assert face_motion(moved_photo(place), moved_photo(place), np.full((4, 2), 100.0)) is None  # no face extent


def test_bad_frames_are_named():
    with pytest.raises(ValueError, match="grey frames of one size"):
        face_motion(np.zeros((10, 10), np.uint8), np.zeros((10, 12), np.uint8), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="invalid face motion"):
        MotionParams(min_inliers=1)


def test_one_euro_follows_a_given_motion_without_lag():
    truth = np.column_stack([np.linspace(0, 100, 20), np.linspace(50, 10, 20)])
    step = similarity(1.0, 1.01, (3.0, -2.0))
    with_motion, plain = OneEuroFilter(1.0, 0.0), OneEuroFilter(1.0, 0.0)
    points = truth
    with_motion(points, 0.0)
    plain(points, 0.0)
    for i in range(1, 10):
        points = apply(step, points)
        followed = with_motion(points, i / 30, motion=step)
        lagged = plain(points, i / 30)
    np.testing.assert_allclose(followed, points, atol=1e-9)  # the motion explains everything: nothing to smooth
    assert np.abs(lagged - points).max() > 5.0
    scalar = OneEuroFilter()
    scalar(np.zeros(3), 0.0)
    with pytest.raises(ValueError, match="N×2"):
        scalar(np.zeros(3), 1.0, motion=step)


def test_smoother_following_the_image_has_no_lag_and_less_noise(rng):
    """A real photo moving 1.5–3 px and turning 0.5° per frame, landmarks = truth + detector-like noise: the smoother
    that follows the image stays on the face (no lag) and is less noisy than the raw points; plain One-Euro trails."""
    place = frame_from_photo_matrix(sample_pose(0), *SIZE[::-1])
    photo_points = face_points(rng, np.array([[1.0, 0, 0], [0, 1.0, 0]]))
    follows = LandmarkSmoother(OneEuroParams(), flow=MotionParams())
    plain = LandmarkSmoother(OneEuroParams())
    errors = {"raw": [], "flow": [], "plain": []}
    for i in range(40):
        matrix = similarity(0.5 * i, 1.0 + 0.002 * i, (3.0 * i, 1.5 * i)) @ np.vstack([place, [0, 0, 1]])
        truth = apply(matrix, photo_points)
        noisy = (truth + rng.normal(0, 0.6, truth.shape)).astype(np.float32)
        (_, a), = follows([noisy], i / 30, moved_photo(matrix))
        (_, b), = plain([noisy], i / 30)
        if i >= 10:
            for name, points in (("raw", noisy), ("flow", a), ("plain", b)):
                errors[name].append(np.linalg.norm(points - truth, axis=1).mean())
        if i > 0:
            assert follows.last_motion[0] is not None  # every frame's motion measured
    raw, flow, plain_error = (float(np.mean(errors[k])) for k in ("raw", "flow", "plain"))
    assert flow < 0.6 * raw, (flow, raw)
    assert plain_error > 2.0 > flow, (plain_error, flow)  # plain One-Euro trails a steadily moving face


def test_detector_landmarks_stay_on_the_moving_sample_face():
    """Real MediaPipe on the sample clip (motion known): the smoothed landmarks, mapped back onto the photo, stay
    closer to their own average position when the smoother follows the image (the crop and prior sit still on the
    face) than with plain One-Euro smoothing, which trails the motion."""
    spread = {}
    for name, flow in (("flow", MotionParams()), ("plain", None)):
        detector = FaceMeshDetector(1, OneEuroParams(), flow=flow)
        centres = []
        try:
            for i in range(45):
                pose = sample_pose(i)
                faces = detector.detect(render_pose_rgb(pose, noise_index=i), int(i * 1e9 / 30))
                assert len(faces) == 1
                back = cv2.invertAffineTransform(frame_from_photo_matrix(pose, *SIZE[::-1]))
                centres.append(apply(back, faces[0].landmarks.astype(np.float64)).mean(axis=0))
        finally:
            detector.close()
        centres = np.array(centres[5:])
        spread[name] = float(np.linalg.norm(centres - centres.mean(axis=0), axis=1).mean())
    assert spread["flow"] < 0.5 * spread["plain"], spread
