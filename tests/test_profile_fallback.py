"""Faces the face mesh misses (profiles) still get normals: the detector-only face (``facenormals.keypoint_pose``).

Real MediaPipe face detection and mesh, the shipped model on ONNX Runtime, real renders of ICT faces (the data
engine, ../shared) and a real photo. Bounds come from ``benchmarks/profile_fallback.py`` (README "Faces the mesh
misses"): on val_profile the 41 detector-only faces are 19.1° from the truth on average (p90 24.8°).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facenormals.api import FaceNormals
from facenormals.conventions import angular_error_deg
from facenormals.crops import CropBatcher
from facenormals.faces import StillFaceDetector, detector_only_face
from facenormals.geometry import hull_mask
from tests.media import render_ict_profiles
from tests.pipeline_media import face_photo

DETECTOR_FACES_MEAN_BOUND_DEG = 26.0  # val_profile: 19.1° mean over 41 detector-only faces; p90 24.8°


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_detector_face_of_a_real_photo_lands_on_its_mesh_face():
    """The fallback built from the detection of a frontal photo (whose mesh succeeds, so the truth is known; the
    profile gate lowered): its
    estimated landmarks cover the mesh's face, its crop square is near the landmark square, and a prior model gets
    a finite, all-zero prior and a mask inside the crop."""
    photo = face_photo()
    detector = StillFaceDetector(1)
    try:
        boxes = detector.find_boxes(photo)
        mesh_face = detector.detect(photo)[0]
    finally:
        detector.close()
    assert mesh_face.source == "mesh" and mesh_face.keypoints is None
    assert detector_only_face(boxes[0]) is None  # frontal: the fallback is for faces the mesh misses, profiles
    face = detector_only_face(boxes[0], min_yaw_deg=0.0)
    assert face is not None and face.source == "detector" and face.depth is None
    assert face.keypoints.shape == (6, 2) and face.landmarks.shape == (478, 2) and np.isfinite(face.landmarks).all()
    shape = photo.shape[:2]
    assert _iou(hull_mask(face.landmarks, shape), hull_mask(mesh_face.landmarks, shape)) > 0.6
    assert 0.8 < face.box.side / mesh_face.box.side < 1.6  # the training crops' framing (1.46× the box)
    assert np.hypot(face.box.cx - mesh_face.box.cx, face.box.cy - mesh_face.box.cy) < 0.2 * mesh_face.box.side

    batcher = CropBatcher(64, 2, prior="ict-blend", warm_start=False)
    batch = batcher(photo, [mesh_face, face])
    rows, crops = batch.inputs, batch.crops
    assert np.isfinite(rows).all()
    assert np.all(rows[1, 3:] == 0.0)  # no landmarks: the zero prior the network saw in training
    assert rows[0, 6].any()  # the mesh face keeps its ICT prior
    assert batch.fits[1] is None and batch.fits[0] is not None
    crop = crops[1]
    assert crop.box == face.box and crop.mask.shape == (64, 64)
    assert 0.2 < crop.mask.mean() < 0.9  # a face region inside the crop, not the whole square or nothing
    assert not (crop.mask[0].any() or crop.mask[-1].any() or crop.mask[:, 0].any() or crop.mask[:, -1].any())


@pytest.mark.parametrize("photo", ["astronaut", "two_faces"])
def test_detections_the_mesh_rejects_on_real_photos_stay_rejected(photo):
    """The detector fires on a suit badge, the seam of a mirrored pair (scores 0.55–0.65; the mesh rejects them):
    frontal-looking or with keypoints no head fits, they are no face, with the fallback on too."""
    from skimage import data

    from tests.pipeline_media import two_faces

    image = np.ascontiguousarray(data.astronaut()) if photo == "astronaut" else two_faces()
    detector = StillFaceDetector(8)
    try:
        boxes, faces = detector.find_boxes(image), detector.detect(image)
    finally:
        detector.close()
    assert len(boxes) > len(faces)  # spurious detections exist: the check is not vacuous
    assert [face.source for face in faces] == ["mesh"] * (1 if photo == "astronaut" else 2)


def test_a_face_with_a_mesh_is_unchanged_by_the_fallback():
    photo = face_photo()
    results = []
    for fallback in (True, False):
        with FaceNormals(detector=StillFaceDetector(4, fallback=fallback)) as api:
            results.append(api(photo))
    (new,), (old,) = results
    assert new.source == old.source == "mesh"
    for name in ("normals", "mask", "landmarks", "crop_normals", "crop_mask", "crop_matrix"):
        assert np.array_equal(getattr(new, name), getattr(old, name), equal_nan=True), name
    assert new.box == old.box


def _render_profiles(shared_data: Path, out: Path) -> Path:
    return render_ict_profiles(shared_data, out, count=8, seed=7, size=256, yaw_deg=(70, 90))


@pytest.mark.shared
def test_profiles_the_mesh_misses_get_normals_near_the_truth(shared_data, tmp_path):
    """Rendered profiles (|yaw| 70–90°): where the old detector (mesh or nothing) returns no face, the API returns a
    detector face whose normals, inside its mask, are near the ground truth."""
    from facenormals.dataset import load_sample, scan_dataset

    root = _render_profiles(shared_data, tmp_path / "profiles")
    old = StillFaceDetector(4, fallback=False)
    errors = []
    try:
        with FaceNormals() as api:
            for files in scan_dataset(root):
                sample = load_sample(files)
                truth_mask = sample.mask.astype(bool)
                if old.detect(sample.image):
                    continue  # the mesh finds this one
                faces = api(sample.image)
                assert [face.source for face in faces] in ([], ["detector"])
                for face in faces:
                    inside = face.mask & truth_mask
                    assert inside.sum() > 0.1 * truth_mask.sum()  # on the face, not beside it
                    assert face.fit is None and np.isfinite(face.normals[face.mask]).all()
                    assert np.isnan(face.normals[~face.mask]).all()
                    assert np.allclose(np.linalg.norm(face.normals[face.mask], axis=1), 1.0, atol=1e-4)
                    errors.append(float(angular_error_deg(np.nan_to_num(face.normals), sample.normals)[inside].mean()))
    finally:
        old.close()
    assert errors, "no rendered profile fell back to the detector: the test checks nothing"
    assert np.mean(errors) < DETECTOR_FACES_MEAN_BOUND_DEG, errors
