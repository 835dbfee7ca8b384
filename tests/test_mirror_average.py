"""Mirror averaging (facenormals.mirror_average) with the shipped model on ONNX Runtime and real MediaPipe crops."""

from __future__ import annotations

import numpy as np
import pytest

from facenormals.mirror_average import average_normals, mirror_averaged, mirror_inputs, unmirror_normals

skimage_data = pytest.importorskip("skimage.data")


def _angles_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel angle between two N×3×S×S unit normal maps."""
    return np.degrees(np.arccos(np.clip(np.sum(a * b, axis=1), -1.0, 1.0)))


@pytest.fixture(scope="module")
def shipped_inputs():
    """The shipped default on ONNX Runtime and its real network input for the astronaut's face (1×7×S×S)."""
    from facenormals.engine import FrameEngine
    from facenormals.faces import StillFaceDetector
    from facenormals.frame import Frame
    from facenormals.runtime.backends import create_backend

    backend = create_backend("auto", None)  # the shipped INT8 twin on ONNX Runtime
    detector = StillFaceDetector(1)
    try:
        engine = FrameEngine(backend, detector, warm_start=False)
        faces, batch = engine.detect_and_crop(Frame(0, 0, skimage_data.astronaut()))
    finally:
        detector.close()
    assert len(faces) == 1 and batch.inputs.shape[1] == 7
    return backend, batch.inputs[:1].copy()


def test_mirror_inputs_twice_is_identity(rng):
    inputs = rng.standard_normal((2, 7, 8, 8)).astype(np.float32)
    assert np.array_equal(mirror_inputs(mirror_inputs(inputs)), inputs)
    normals = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert np.array_equal(unmirror_normals(unmirror_normals(normals)), normals)
    with pytest.raises(ValueError, match="network inputs"):
        mirror_inputs(inputs[:, :5])


def test_average_of_opposite_normals_is_zero_not_nan():
    a = np.zeros((1, 3, 2, 2), np.float32)
    a[:, 2] = 1.0
    out = average_normals(a, -a)
    assert np.isfinite(out).all() and not out.any()


def test_averaged_network_is_mirror_equivariant(shipped_inputs):
    """The averaged output of a mirrored face is the mirrored output of the face — exactly; one pass is not."""
    backend, inputs = shipped_inputs
    averaged = mirror_averaged(backend)
    direct = averaged(inputs)
    of_mirror = unmirror_normals(averaged(mirror_inputs(inputs)))
    assert np.abs(of_mirror - direct).max() < 1e-5
    one_pass = np.asarray(backend(inputs), np.float32)
    one_pass_of_mirror = unmirror_normals(np.asarray(backend(mirror_inputs(inputs)), np.float32))
    face = inputs[:, 6] > 0.5  # the coarse face's coverage
    assert _angles_deg(one_pass, one_pass_of_mirror)[face].mean() > 0.3  # the network alone is not symmetric
    # the average sits between the two passes
    assert _angles_deg(direct, one_pass)[face].mean() < _angles_deg(one_pass, one_pass_of_mirror)[face].mean()


def test_api_averages_by_default_and_can_be_turned_off(shipped_inputs):
    from facenormals import FaceNormals

    photo = skimage_data.astronaut()
    with FaceNormals() as averaged, FaceNormals(mirror=False) as single:
        a, b = averaged(photo), single(photo)
    assert len(a) == len(b) == 1
    assert a[0].box == b[0].box  # the same face and crop: only the network's passes differ
    mask = a[0].crop_mask > 0.5
    change = _angles_deg(a[0].crop_normals.transpose(2, 0, 1)[None], b[0].crop_normals.transpose(2, 0, 1)[None])[0]
    assert 0.1 < change[mask].mean() < 5.0
