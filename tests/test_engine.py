"""The one per-frame engine: the API and the realtime loop give the same normals for the same frame."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facenormals.checkpoint import save_checkpoint
from facenormals.engine import FrameResult
from facenormals.export.prepare import onnx_for
from facenormals.faces import StillFaceDetector
from facenormals.frame import Frame
from facenormals.model import create_model

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    from facenormals import FaceNormals

    torch.manual_seed(0)
    checkpoint = tmp_path_factory.mktemp("engine") / "fast-random.safetensors"
    save_checkpoint(create_model("fast"), checkpoint, inference_only=True, provenance={"note": "random init, tests only"})
    with pytest.MonkeyPatch.context() as patch:  # the ONNX export cache stays inside the test's tmp dir
        patch.setenv("FACENORMALS_CACHE", str(tmp_path_factory.mktemp("cache")))
        with FaceNormals(model=checkpoint, backend="ort-cpu", prepare=onnx_for) as fn:
            yield fn


def test_api_and_realtime_loop_give_identical_normals(api):
    from facenormals.realtime.pipeline import Pipeline

    photo = skimage_data.astronaut()
    expected = api(photo)
    assert len(expected) == 1
    results: list[FrameResult] = []
    detector = StillFaceDetector(api.detector.max_faces)  # what the API detects with
    try:
        Pipeline([Frame(0, 0, photo)], detector, api.backend, lambda result, stats: np.zeros((4, 4, 3), np.uint8),
                 on_result=results.append, handle_signals=False).run()
    finally:
        detector.close()
    (live,) = results[0].face_results()
    np.testing.assert_array_equal(live.landmarks, expected[0].landmarks)
    np.testing.assert_array_equal(live.crop_normals, expected[0].crop_normals)
    np.testing.assert_array_equal(live.mask, expected[0].mask)
    np.testing.assert_array_equal(live.normals, expected[0].normals)  # NaN outside the face on both sides

