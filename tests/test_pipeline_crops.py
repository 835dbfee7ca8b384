"""Faces → one batch → normals pasted back: region-only paste equals the full-frame inverse warp."""

from __future__ import annotations

import numpy as np
import pytest
from pipeline_media import two_faces

from facenormals.conventions import sphere_normals
from facenormals.crops import CropBatcher, full_normal_map, paste_batch, paste_face
from facenormals.faces import FaceMeshDetector
from facenormals.geometry import face_crop, paste_back


@pytest.fixture(scope="module")
def faces_and_image():
    image = two_faces()
    detector = FaceMeshDetector(max_faces=2)
    try:
        faces = detector.detect(image, 0)
    finally:
        detector.close()
    assert len(faces) == 2
    return image, faces


def test_all_faces_in_one_batch(faces_and_image):
    image, faces = faces_and_image
    batcher = CropBatcher(64, max_faces=2, ring=3)
    batch = batcher(image, faces)
    assert batch.inputs.shape == (2, 3, 64, 64) and batch.inputs.dtype == np.float32
    for i, face in enumerate(faces):
        expected = face_crop(image, face.landmarks, size=64).to_tensor_array()
        np.testing.assert_allclose(batch.inputs[i], expected, atol=1e-6)
    assert batch.inputs.min() >= 0.0 and batch.inputs.max() <= 1.0


def test_batch_buffers_are_reused_round_robin(faces_and_image):
    image, faces = faces_and_image
    batcher = CropBatcher(64, max_faces=2, ring=2)
    first, second, third = (batcher(image, faces) for _ in range(3))
    assert first.inputs.base is third.inputs.base  # ring of 2: the third batch reuses the first buffer
    assert first.inputs.base is not second.inputs.base


def test_more_faces_than_max_are_truncated(faces_and_image):
    image, faces = faces_and_image
    assert len(CropBatcher(64, max_faces=1)(image, faces).crops) == 1


def test_no_faces_gives_empty_batch():
    batch = CropBatcher(64, max_faces=2)(np.zeros((100, 100, 3), np.uint8), [])
    assert batch.inputs.shape == (0, 3, 64, 64) and batch.crops == ()


def test_region_paste_equals_full_frame_paste(faces_and_image):
    image, faces = faces_and_image
    sphere, _ = sphere_normals(64)
    sphere = np.nan_to_num(sphere)
    for face in faces:
        crop = face_crop(image, face.landmarks, size=64)
        pasted = paste_face(sphere.transpose(2, 0, 1), crop, image.shape[:2])
        full, full_valid = paste_back(sphere, crop.mask, crop.matrix, image.shape[:2])
        rows, cols = pasted.region
        assert full_valid[rows, cols].sum() == full_valid.sum()  # nothing lies outside the region
        np.testing.assert_array_equal(pasted.valid, full_valid[rows, cols])
        np.testing.assert_allclose(pasted.normals[pasted.valid], full[rows, cols][full_valid[rows, cols]], atol=1e-5)
        assert pasted.valid.size < 0.5 * full_valid.size  # the work is region-sized
        assert pasted.valid.size < 0.8 * crop.box.side ** 2  # the mask's box, not the whole 1.2× square


def test_paste_batch_and_full_map(faces_and_image):
    image, faces = faces_and_image
    batch = CropBatcher(64, max_faces=2)(image, faces)
    normals = np.zeros((2, 3, 64, 64), np.float32)
    normals[:, 2] = 1.0  # every pixel faces the camera
    pasted = paste_batch(normals, batch.crops, image.shape[:2])
    assert len(pasted) == 2
    full, valid = full_normal_map(pasted, image.shape[:2])
    assert valid[:, :320].any() and valid[:, 320:].any()
    np.testing.assert_allclose(full[valid], [[0, 0, 1]] * int(valid.sum()), atol=1e-5)
    assert not full[~valid].any()
    with pytest.raises(ValueError, match="2 faces"):
        paste_batch(normals[:1], batch.crops, image.shape[:2])


def test_face_partly_outside_the_frame(faces_and_image):
    image, faces = faces_and_image
    left = min(faces, key=lambda face: float(face.landmarks[:, 0].mean()))
    shifted = left.landmarks - np.float32([150, 0])  # the face half off the left edge
    crop = face_crop(image, shifted, size=64)
    pasted = paste_face(np.dstack([np.zeros((64, 64, 2)), np.ones((64, 64))]).transpose(2, 0, 1), crop, image.shape[:2])
    assert pasted is not None and pasted.x0 == 0
    assert pasted.valid.any() and pasted.valid.shape[1] < pasted.valid.shape[0]  # clipped at the edge
    far = face_crop(image, left.landmarks - np.float32([2000, 0]), size=64)
    assert paste_face(np.ones((3, 64, 64), np.float32), far, image.shape[:2]) is None
