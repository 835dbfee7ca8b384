"""``FaceResult.mesh()`` (issue 20) on a real photo with the shipped model, real MediaPipe and the real fit."""

from __future__ import annotations

import numpy as np
import pytest

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    from facenormals import FaceNormals

    with pytest.MonkeyPatch.context() as patch:  # any ONNX export cache stays inside the test's tmp dir
        patch.setenv("FACENORMALS_CACHE", str(tmp_path_factory.mktemp("cache")))
        with FaceNormals() as fn:
            return fn(skimage_data.astronaut())


def test_every_face_has_a_fit_and_a_metric_mesh(faces, tmp_path):
    assert len(faces) == 1
    face = faces[0]
    assert face.fit is not None  # fitted by the API when the model has no ict-fit prior of its own
    mesh = face.mesh()
    assert len(mesh.vertices) > 2000 and len(mesh.faces) > 2000
    np.testing.assert_allclose(np.linalg.norm(mesh.normals, axis=1), 1.0, atol=1e-4)
    width, height, relief = np.ptp(mesh.vertices, axis=0)
    assert 0.08 < width < 0.3 and 0.08 < height < 0.35 and 0.02 < relief < 0.2  # metres: a head's size
    tri = mesh.vertices[mesh.faces]
    face_normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    assert ((face_normals * mesh.normals[mesh.faces[:, 0]]).sum(1) > 0).mean() > 0.95
    assert (mesh.normals[:, 2] > 0).mean() > 0.9  # facing the camera
    path = tmp_path / "astronaut.ply"
    mesh.save_ply(path)
    import trimesh

    loaded = trimesh.load(path, process=False)
    assert len(loaded.vertices) == len(mesh.vertices)


def test_mesh_needs_a_fit(faces):
    from dataclasses import replace

    with pytest.raises(ValueError, match="ICT fit"):
        replace(faces[0], fit=None).mesh()
