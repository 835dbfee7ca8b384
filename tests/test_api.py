"""The Python API on a real photo (scikit-image's astronaut), real MediaPipe and real ONNX Runtime.

Until the shipped default model exists, the tests build a random-init ``fast`` checkpoint and pass it
explicitly: geometry, batching and conventions do not depend on trained weights.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from facenormals import zoo
from facenormals.checkpoint import load_image_to_normal, save_checkpoint
from facenormals.fileio import DataError, write_rgb
from facenormals.geometry import face_crop, square_box
from facenormals.model import create_model

README = Path(__file__).resolve().parents[1] / "README.md"
skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("api") / "fast-random.safetensors"
    save_checkpoint(create_model("fast"), path, inference_only=True, provenance={"note": "random init, tests only"})
    return path


@pytest.fixture(scope="module")
def api(checkpoint, tmp_path_factory):
    from facenormals import FaceNormals

    with pytest.MonkeyPatch.context() as patch:  # the ONNX export cache stays inside the test's tmp dir
        patch.setenv("FACENORMALS_CACHE", str(tmp_path_factory.mktemp("cache")))
        # one network pass: these tests compare the API with the network run directly (mirror averaging:
        # tests/test_mirror_average.py)
        with FaceNormals(model=checkpoint, mirror=False) as fn:
            yield fn


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage_data.astronaut()


def _angles_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip(np.sum(a * b, axis=-1), -1.0, 1.0)))


@pytest.mark.slow  # a subprocess
def test_import_stays_light():
    import subprocess

    code = "import sys, facenormals; facenormals.FaceNormals; print('torch' in sys.modules, 'mediapipe' in sys.modules)"
    lazy = "import sys, facenormals; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", lazy], capture_output=True, text=True, check=True).stdout.strip() == "False"
    # the attribute resolves through facenormals.__getattr__ without importing MediaPipe yet
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[1] == "False"


def test_one_image_gives_frame_normals_mask_box_and_landmarks(api, astronaut):
    faces = api(astronaut)
    assert len(faces) == 1
    face = faces[0]
    height, width = astronaut.shape[:2]
    assert face.normals.shape == (height, width, 3) and face.normals.dtype == np.float32
    assert face.mask.shape == (height, width) and face.mask.dtype == bool
    inside = face.normals[face.mask]
    assert np.allclose(np.linalg.norm(inside, axis=1), 1.0, atol=1e-4)
    assert np.isnan(face.normals[~face.mask]).all()
    assert face.landmarks.shape == (478, 2)
    # the astronaut's face: upper middle of the 512² photo, mask inside the crop square
    assert 150 < face.box.cx < 300 and 60 < face.box.cy < 200 and 90 < face.box.side < 200
    rows, cols = np.nonzero(face.mask)
    x0, y0, x1, y1 = face.box.as_xyxy()
    assert x0 <= cols.min() and cols.max() <= x1 and y0 <= rows.min() and rows.max() <= y1
    assert face.box == square_box(face.landmarks)
    size = api.input_size
    assert face.crop_normals.shape == (size, size, 3) and face.crop_mask.shape == (size, size)


def test_normals_are_what_the_model_gives_for_the_paper_crop(api, astronaut, checkpoint):
    face = api(astronaut)[0]
    crop = face_crop(astronaut, face.landmarks, size=api.input_size)
    with torch.no_grad():
        expected = load_image_to_normal(checkpoint)(torch.from_numpy(crop.to_tensor_array()[None]))[0]
    expected = expected.permute(1, 2, 0).numpy()
    assert np.allclose(face.crop_matrix, crop.matrix)
    assert np.percentile(_angles_deg(face.crop_normals, expected), 99) < 0.5  # ORT vs torch, fp32


def test_paths_lists_and_one_batch_for_all_faces(api, astronaut, tmp_path):
    path = tmp_path / "astronaut.png"
    write_rgb(path, astronaut)
    mirrored = np.ascontiguousarray(astronaut[:, ::-1])
    calls: list[tuple[int, ...]] = []
    backend = api.engine.backend

    def recording(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape)
        return backend(batch)

    api.engine.backend = recording  # the per-frame engine is what runs the network
    try:
        results = api([path, mirrored, np.zeros((96, 96, 3), np.uint8)])
    finally:
        api.engine.backend = backend
    assert [len(faces) for faces in results] == [1, 1, 0]
    assert calls == [(2, 3, api.input_size, api.input_size)]  # every face of every image in one inference
    single = api(astronaut)[0]
    assert np.array_equal(results[0][0].mask, single.mask)  # a PNG path gives the array's result
    assert np.nanmax(np.abs(results[0][0].normals - single.normals)) < 1e-4
    # the mirrored photo's face is found at the mirrored place
    width = astronaut.shape[1]
    assert abs(results[1][0].box.cx - (width - 1 - single.box.cx)) < 4
    assert abs(results[1][0].box.cy - single.box.cy) < 4


def test_grey_and_rgba_arrays_are_one_image_each(api, astronaut):
    grey = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    as_rgb = api(np.repeat(grey[..., None], 3, axis=2))
    for image in (grey, grey[..., None]):  # a 2-D array is one grey image, not a list of rows
        faces = api(image)
        assert len(faces) == len(as_rgb) == 1 and np.array_equal(faces[0].normals, as_rgb[0].normals, equal_nan=True)
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 128, np.uint8)])
    assert np.array_equal(api(rgba)[0].normals, api(astronaut)[0].normals, equal_nan=True)  # the alpha is dropped
    with pytest.raises(ValueError, match=r"grey H×W, RGBA H×W×4\), got uint8 \(512, 512, 2\)"):
        api(astronaut[..., :2])


def test_a_photo_stored_sideways_is_read_upright(api, astronaut, tmp_path):
    """Phones store portrait photos sideways with an EXIF orientation tag that every viewer applies."""
    from PIL import Image

    from facenormals.fileio import read_rgb

    stored = Image.fromarray(np.ascontiguousarray(np.rot90(astronaut)))  # the pixels a quarter turn anticlockwise
    exif = stored.getexif()
    exif[0x0112] = 6  # orientation: turn a quarter clockwise to show
    path = tmp_path / "portrait.png"  # lossless, so the upright pixels come back exactly
    stored.save(path, exif=exif.tobytes())
    assert np.array_equal(read_rgb(path), astronaut)
    (face,), (upright,) = api(path), api(astronaut)
    assert np.array_equal(face.normals, upright.normals, equal_nan=True)


def test_bad_inputs_say_what_is_wrong(api, astronaut, tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        api(astronaut.astype(np.float32) / 255)
    with pytest.raises(DataError, match=r"missing\.png"):
        api(tmp_path / "missing.png")
    with pytest.warns(RuntimeWarning, match="image 0"):
        (bad,) = api([42])  # in a list, the bad item's slot names it (issue 17): the others are kept
    assert isinstance(bad, ValueError) and "image path" in str(bad)
    depth = np.full(astronaut.shape[:2], 600, np.uint16)
    with pytest.raises(ValueError, match="intrinsics"):
        api(astronaut, depth=depth)
    with pytest.raises(ValueError, match="2 images but one array"):
        api([astronaut, astronaut], depth=depth, intrinsics=np.eye(3))


def test_depth_is_refined_per_face(api, astronaut):
    from facenormals.camera import Intrinsics

    height, width = astronaut.shape[:2]
    camera = Intrinsics(width, height, 500.0, 500.0, (width - 1) / 2, (height - 1) / 2)
    depth = np.full((height, width), 600, np.uint16)  # a wall 0.6 m away, in millimetres
    face = api(astronaut, depth=depth, intrinsics=camera)[0]
    assert face.depth.shape == (height, width) and face.crop_depth.shape == face.crop_mask.shape
    inside = face.depth[face.mask]
    assert np.isfinite(inside).mean() > 0.95
    assert abs(float(np.nanmedian(inside)) - 0.6) < 0.01  # the wall stays where the sensor saw it
    assert np.isnan(face.depth[~face.mask]).mean() > 0.99
    # a face the sensor did not see keeps its normals and gets no depth, with a warning
    with pytest.warns(RuntimeWarning, match="no refined depth"):
        blind = api(astronaut, depth=np.zeros_like(depth), intrinsics=camera)[0]
    assert blind.depth is None and blind.mask.sum() == face.mask.sum()


# ------------------------------------------------------------------------------------------ README example


def _readme_example() -> str:
    text = README.read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "README's Python API section has no python code block"
    return blocks[0]


def test_readme_example_runs_with_the_shipped_model(tmp_path, monkeypatch, capsys):
    try:
        zoo.model_path()
    except FileNotFoundError as err:
        pytest.skip(f"no shipped default model yet ({err})")
    monkeypatch.setenv("FACENORMALS_CACHE", str(tmp_path))
    exec(compile(_readme_example(), "README.md", "exec"), {})
    assert "1 face" in capsys.readouterr().out


def test_readme_example_runs_with_a_stand_in_default_model(checkpoint, tmp_path, monkeypatch, capsys):
    """The example verbatim, with ``facenormals.zoo`` pointed at a random-init model as the default."""
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / f"{zoo.DEFAULT_MODEL}.safetensors").write_bytes(checkpoint.read_bytes())
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", weights)
    monkeypatch.setenv("FACENORMALS_CACHE", str(tmp_path / "cache"))
    namespace: dict = {}
    exec(compile(_readme_example(), "README.md", "exec"), namespace)
    assert "1 face" in capsys.readouterr().out
    assert [len(faces) for faces in namespace["many"]] == [1, 1]


# ------------------------------------------------------------------------------------------ mesh-prior models


def test_prior_model_gets_the_detectors_mesh(astronaut, tmp_path, monkeypatch):
    """An untrained residual prior model outputs its prior: the API must feed the mesh normals of the face it
    detected, in the crop's frame — checked against MediaPipe run independently on the crop itself."""
    from facenormals import FaceNormals
    from facenormals.mesh_prior import create_face_mesh, mesh_normals_for_crop

    torch.manual_seed(0)
    path = tmp_path / "prior-random.safetensors"
    save_checkpoint(create_model("fast", prior="residual"), path, inference_only=True,
                    provenance={"note": "random init, tests only"})
    monkeypatch.setenv("FACENORMALS_CACHE", str(tmp_path / "cache"))
    with FaceNormals(model=path, backend="torch") as fn:
        assert fn.uses_prior
        (face,) = fn(astronaut)
    crop = face_crop(astronaut, face.landmarks, size=face.crop_mask.shape[0])
    with create_face_mesh() as mesh:
        reference, coverage, found = mesh_normals_for_crop(crop.image, mesh)
    assert found
    inside = face.crop_mask & coverage
    assert inside.mean() > 0.3
    errors = _angles_deg(face.crop_normals[inside], reference[inside])
    assert np.median(errors) < 4.0  # two MediaPipe runs (frame vs crop) agree to a few degrees
    assert face.crop_normals[inside][:, 2].mean() > 0.5  # facing the camera (+z), as the convention says


def test_rgb_model_fits_the_ict_face_only_when_asked(api, astronaut):
    """A model without an ict-fit prior: the API's faces carry a pending fit, computed on first read (head pose,
    ``mesh()``) and then kept; it is the fit of the detected landmarks, as when it was computed on every call."""
    from facenormals.engine import _PendingFit
    from facenormals.frame import Frame
    from facenormals.ict_fit import IctFit, fit_landmarks
    from facenormals.mesh_prior import crop_points_from_pixels

    face = api(astronaut)[0]
    assert _PendingFit.pending(face)  # the normals came without the fit's cost
    fit = face.fit
    assert isinstance(fit, IctFit) and not _PendingFit.pending(face) and face.fit is fit
    detected = api.engine.process_many([Frame(0, 0, astronaut)])[0].faces[0]
    eager = fit_landmarks(crop_points_from_pixels(detected.landmarks, detected.depth, face.crop_matrix))
    for name in ("identity", "expression", "rotation", "translation"):
        np.testing.assert_array_equal(getattr(fit, name), getattr(eager, name))
    assert fit.scale == eager.scale
