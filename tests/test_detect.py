"""Face landmarks and their smoothing, on real MediaPipe and real face photos."""

from __future__ import annotations

import numpy as np
import pytest
from pipeline_media import face_photo, moving_face_frames, two_faces

from facenormals.faces import (
    NUM_LANDMARKS,
    FaceMesh,
    FaceMeshDetector,
    FrameError,
    StillFaceDetector,
    TaskFaceDetector,
    create_detector,
    landmark_array,
)
from facenormals.smoothing import LandmarkSmoother, OneEuroFilter, OneEuroParams, landmark_jitter

MS = 1_000_000


@pytest.fixture(scope="module")
def detector_2():
    detector = create_detector(max_faces=2)
    yield detector
    detector.close()


def test_one_face_landmarks_in_pixels():
    photo = face_photo()
    detector = FaceMeshDetector(max_faces=1)
    try:
        faces = detector.detect(photo, 0)
    finally:
        detector.close()
    assert len(faces) == 1
    face = faces[0]
    assert face.landmarks.shape == (NUM_LANDMARKS, 2) and face.landmarks.dtype == np.float32
    # The astronaut's face sits in the upper middle of this crop (columns ~100–190, rows ~60–180).
    lo, hi = face.landmarks.min(axis=0), face.landmarks.max(axis=0)
    assert 80 < lo[0] < 130 and 160 < hi[0] < 220, (lo, hi)
    assert 40 < lo[1] < 100 and 150 < hi[1] < 200, (lo, hi)
    # Landmark 1 (nose tip) lies between the eyes' outer corners (33, 263) horizontally and below them.
    nose, eye_r, eye_l = face.landmarks[1], face.landmarks[33], face.landmarks[263]
    assert min(eye_r[0], eye_l[0]) < nose[0] < max(eye_r[0], eye_l[0])
    assert nose[1] > max(eye_r[1], eye_l[1])
    assert face.box.side == pytest.approx(1.2 * float((hi - lo).max()), rel=1e-4)


def test_landmark_array_reads_the_wire_bytes_exactly(rng):
    """The wire-byte reading equals the attribute-by-attribute one bit for bit: on MediaPipe's own output (a real
    face), on random values (zeros, negatives, NaN included), and on the fallback layout (visibility set)."""
    from mediapipe.framework.formats import landmark_pb2

    def by_attribute(message) -> np.ndarray:
        return np.array([(p.x, p.y, p.z) for p in message.landmark], dtype=np.float32).reshape(-1, 3)

    with FaceMesh(max_faces=1, still=True, steady=False) as mesh:
        found = mesh._mesh.process(face_photo()).multi_face_landmarks
    assert found and len(found[0].landmark) == NUM_LANDMARKS
    assert np.array_equal(landmark_array(found[0]), by_attribute(found[0]))
    message = landmark_pb2.NormalizedLandmarkList()
    for x, y, z in rng.normal(size=(NUM_LANDMARKS, 3)).astype(np.float32):
        message.landmark.add(x=x, y=y, z=z)
    message.landmark[3].x, message.landmark[4].y, message.landmark[5].z = 0.0, -0.0, float("nan")
    out = landmark_array(message)
    assert out.dtype == np.float32 and out.shape == (NUM_LANDMARKS, 3) and out.flags.c_contiguous
    assert np.array_equal(out, by_attribute(message), equal_nan=True)
    message.landmark[7].visibility = 0.5  # another layout: read attribute by attribute
    assert np.array_equal(landmark_array(message), by_attribute(message), equal_nan=True)
    assert landmark_array(landmark_pb2.NormalizedLandmarkList()).shape == (0, 3)


def test_no_face_gives_empty_list(detector_2):
    assert detector_2.detect(np.full((240, 320, 3), 90, np.uint8), 0) == []
    noise = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    assert detector_2.detect(noise, 33 * MS) == []


def test_two_faces_tracked_separately(detector_2):
    image = two_faces()
    first = detector_2.detect(image, 1000 * MS)
    second = detector_2.detect(image, 1033 * MS)
    assert len(first) == len(second) == 2
    halves = sorted((float(f.landmarks[:, 0].mean()) < 320, f.track_id) for f in first)
    assert [left for left, _ in halves] == [False, True]  # one face per half
    assert len({f.track_id for f in first}) == 2
    # Same faces next frame → same track ids, matched by position.
    by_side = {float(f.landmarks[:, 0].mean()) < 320: f.track_id for f in first}
    assert {float(f.landmarks[:, 0].mean()) < 320: f.track_id for f in second} == by_side


@pytest.mark.parametrize("bad", [np.zeros((240, 320), np.uint8), np.zeros((240, 320, 3), np.float32),
                                 np.zeros((8, 8, 3), np.uint8), None, b"\x89PNG truncated"])
def test_corrupt_frame_is_a_frame_error(detector_2, bad):
    with pytest.raises(FrameError, match="frame"):
        detector_2.detect(bad, 0)


def test_smoothing_reduces_jitter_on_a_real_sequence():
    """Same frames, raw vs smoothed landmarks: the filter must remove detector noise (jitter drops)."""
    frames = moving_face_frames(16)
    detector = FaceMeshDetector(max_faces=1)
    raw, smooth, sides = [], [], []
    try:
        for i, frame in enumerate(frames):
            # the face drifts smoothly; a 1-level brightness flicker perturbs the detector a little
            faces = detector.detect(frame + np.uint8(i % 2), i * 33 * MS)
            assert len(faces) == 1
            raw.append(faces[0].raw_landmarks)
            smooth.append(faces[0].landmarks)
            sides.append(faces[0].box.side)
    finally:
        detector.close()
    assert landmark_jitter(smooth, sides) < landmark_jitter(raw, sides)


def test_one_euro_uses_real_time_steps():
    """A longer gap between frames lets the filter follow further: dt comes from the timestamps."""
    step = np.array([10.0])
    short, long = OneEuroFilter(1.0, 0.0), OneEuroFilter(1.0, 0.0)
    short(np.zeros(1), 0.0)
    long(np.zeros(1), 0.0)
    assert short(step, 0.010)[0] < long(step, 0.200)[0] < 10.0
    # A repeated timestamp does not divide by zero and returns the last estimate.
    assert np.isfinite(short(step, 0.010)).all()


def test_still_noisy_points_are_stabilised(rng):
    truth = rng.uniform(0, 200, (NUM_LANDMARKS, 2))
    smoother = LandmarkSmoother(OneEuroParams())
    raw, smooth = [], []
    for i in range(60):
        noisy = truth + rng.normal(0, 1.0, truth.shape)
        (track, points), = smoother([noisy.astype(np.float32)], i / 30.0)
        assert track == 0  # one face stays one track
        raw.append(noisy)
        smooth.append(points)
    sides = [200.0] * len(raw)
    assert landmark_jitter(smooth[10:], sides[10:]) < 0.5 * landmark_jitter(raw[10:], sides[10:])


def test_tracks_survive_order_changes_and_expire(rng):
    a = rng.uniform(0, 50, (NUM_LANDMARKS, 2)).astype(np.float32)
    b = a + np.float32(300)
    smoother = LandmarkSmoother(max_age_s=0.5)
    ids_1 = [tid for tid, _ in smoother([a, b], 0.0)]
    ids_2 = [tid for tid, _ in smoother([b, a], 0.033)]
    assert ids_2 == ids_1[::-1]
    ids_3 = [tid for tid, _ in smoother([a], 2.0)]  # both tracks expired after 2 s unseen
    assert ids_3[0] not in ids_1


def test_one_euro_rejects_bad_parameters():
    with pytest.raises(ValueError, match="min_cutoff"):
        OneEuroFilter(min_cutoff=0.0)


def test_tasks_landmarker_needs_a_task_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.task"):
        TaskFaceDetector(tmp_path / "missing.task")
    bogus = tmp_path / "bogus.task"
    bogus.write_bytes(b"not a model bundle")
    with pytest.raises((ValueError, RuntimeError), match=r"bogus\.task"):
        TaskFaceDetector(bogus)


@pytest.mark.shared
def test_shared_photos_face_counts(shared_data):
    from facenormals.fileio import read_rgb

    photo = shared_data / "photos" / "two_people.jpg"
    if not photo.is_file():
        pytest.skip(f"{photo} not present")
    detector = FaceMeshDetector(max_faces=4)
    try:
        faces = detector.detect(read_rgb(photo), 0)
    finally:
        detector.close()
    assert len(faces) == 2


def test_jitter_ignores_gaps_between_frames(rng):
    line = [np.full((4, 2), 10.0 * i) for i in range(6)]  # steady motion: zero acceleration
    sides = [100.0] * 6
    assert landmark_jitter(line, sides) == pytest.approx(0.0)
    jumped = [*line[:3], *[p + 50.0 for p in line[3:]]]  # frames 3.. arrive after a drop: a step
    assert landmark_jitter(jumped, sides) > 100.0
    ids = [0, 1, 2, 10, 11, 12]  # the same samples, with the gap known: no consecutive triple spans it
    assert landmark_jitter(jumped, sides, ids) == pytest.approx(0.0)
    assert np.isnan(landmark_jitter(line[:3], sides[:3], [0, 2, 4]))


def test_still_detector_reads_the_face_on_its_paper_crop():
    """One path for a photo's landmarks: the API's still detector takes them again on the view of the face's paper
    crop, so they are the landmarks the mesh finds on that crop cut out (eval's and the stored priors' view) —
    closer to them than the whole-head view's landmarks are."""
    from facenormals.geometry import face_crop
    from facenormals.mesh_prior import create_face_mesh, crop_landmarks

    photo = face_photo()
    found = {}
    for paper_view in (False, True):
        detector = StillFaceDetector(1, paper_view=paper_view)
        try:
            faces = detector.detect(photo)
        finally:
            detector.close()
        assert len(faces) == 1 and faces[0].source == "mesh" and faces[0].depth is not None
        found[paper_view] = faces[0].landmarks.astype(np.float64)
    crop = face_crop(photo, found[True])
    with create_face_mesh() as face_mesh:
        on_crop = crop_landmarks(crop.image, face_mesh)
    assert on_crop is not None
    scale = crop.matrix[0, 0]
    in_photo = (on_crop[:, :2] * crop.image.shape[0] - crop.matrix[:, 2]) / scale  # crop pixels → photo pixels
    off = {view: np.linalg.norm(points - in_photo, axis=1).mean() for view, points in found.items()}
    assert off[True] < 0.5 and off[True] < off[False], off
