"""``FaceResult.mesh()`` (issue 20) on a real photo with the shipped model, real MediaPipe and the real fit."""

from __future__ import annotations

import numpy as np
import pytest

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    from facenormals import FaceNormals

    with pytest.MonkeyPatch.context() as patch:  # any ONNX export cache stays inside the test's tmp dir
        patch.setenv("FACENORMALS_CACHE", str(tmp_path_factory.mktemp("cache")))
        with FaceNormals() as fn:
            image = skimage_data.astronaut()
            return fn(image), fn(image, intrinsics=CAMERA)


CAMERA = [[600.0, 0.0, 255.5], [0.0, 600.0, 255.5], [0.0, 0.0, 1.0]]  # a pinhole for the 512² photo


@pytest.fixture(scope="module")
def faces(both):
    return both[0]


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


def test_intrinsics_put_the_mesh_in_the_camera_frame(both):
    """``fn(image, intrinsics=K)``: the face keeps K and ``mesh()`` is metric in the camera frame: the head's distance
    from the focal length, and the mesh projects back onto the face in the photo."""
    plain, calibrated = both
    face = calibrated[0]
    assert face.intrinsics is not None and face.intrinsics.fx == 600.0 and plain[0].intrinsics is None
    mesh = face.mesh()
    x, y, z = np.median(mesh.vertices, axis=0)
    assert 0.2 < -z < 3.0  # metres in front of the camera
    u, v = 600.0 * x / -z + 255.5, 255.5 - 600.0 * y / -z
    x0, y0, x1, y1 = face.box.as_xyxy()
    assert x0 < u < x1 and y0 < v < y1
    assert 0.08 < np.ptp(mesh.vertices[:, 0]) < 0.3  # a head's width, as without intrinsics
    np.testing.assert_allclose(plain[0].mesh(intrinsics=CAMERA).vertices, mesh.vertices, atol=1e-6)
    assert np.median(plain[0].mesh().vertices[:, 2]) > -0.1  # weak perspective: around z = 0, no distance
