"""The loop's thread settings change CPU, never results: OpenCV on one thread (``LoopParts``) gives the same crops,
priors and pasted normals, and ONNX Runtime on one intra-op thread (``--threads 1``) the same normals, bit for bit,
on the embedded sample with the shipped INT8 model, real MediaPipe and the real ICT prior."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from facenormals import zoo
from facenormals.crops import CropBatcher, paste_face
from facenormals.faces import create_detector
from facenormals.realtime.sources.base import open_source
from facenormals.runtime import create_backend


@pytest.fixture(scope="module")
def sample_faces():
    with open_source("sample", frames=12) as source:
        frames = list(itertools.islice(source, 12))
    detector = create_detector(1)
    try:
        faces = [detector.detect(frame.rgb, frame.t_capture_ns) for frame in frames]
    finally:
        detector.close()
    assert all(len(f) == 1 for f in faces)
    return frames, faces


@pytest.fixture(scope="module")
def int8_model():
    twin = zoo.int8_twin(zoo.resolve_model(None))
    if twin is None:
        pytest.skip("no shipped INT8 twin of the default model")
    return twin


def _crops_and_pasted(frames, faces, backend):
    batcher = CropBatcher(backend.input_size, 1, ring=2, prior=backend.prior_source)
    inputs, pasted = [], []
    for frame, found in zip(frames, faces, strict=True):
        batch = batcher(frame.rgb, found)
        inputs.append(batch.inputs.copy())
        pasted.append(paste_face(backend(batch.inputs)[0], batch.crops[0], frame.rgb.shape[:2]).normals)
    return np.stack(inputs), pasted


def test_opencv_threads_do_not_change_crops_priors_or_pasted_normals(sample_faces, int8_model):
    frames, faces = sample_faces
    backend = create_backend("ort-cpu", int8_model, threads=1)
    before = cv2.getNumThreads()
    try:
        cv2.setNumThreads(2)
        pooled = _crops_and_pasted(frames, faces, backend)
        cv2.setNumThreads(1)
        single = _crops_and_pasted(frames, faces, backend)
    finally:
        cv2.setNumThreads(before)
    assert backend.in_chans == 7  # the prior channels (ICT fit, rasterised, filled, blurred with OpenCV) are compared
    np.testing.assert_array_equal(single[0], pooled[0])
    for a, b in zip(single[1], pooled[1], strict=True):
        np.testing.assert_array_equal(a, b)


def test_onnx_runtime_intra_op_threads_do_not_change_the_normals(sample_faces, int8_model):
    frames, faces = sample_faces
    one = create_backend("ort-cpu", int8_model, threads=1)
    two = create_backend("ort-cpu", int8_model, threads=2)
    inputs, _ = _crops_and_pasted(frames[::3], faces[::3], one)
    for batch in inputs:
        np.testing.assert_array_equal(one(batch), two(batch))
