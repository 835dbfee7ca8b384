"""facenormals eval: analytic answers on synthetic sets, ONNX and checkpoint models, the MediaPipe baseline, JSON schema."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from facenormals.checkpoint import save_checkpoint
from facenormals.cli import main as cli_main
from facenormals.conventions import decode_normals, encode_normals, normalize, sphere_normals
from facenormals.dataset import DatasetWriter
from facenormals.model import create_model

SET_KEYS = {"n_images", "mean_deg", "std_deg", "pct_below_20", "pct_below_25", "pct_below_30"}


def _onnx_model(path: Path, constant: tuple[float, float, float] | None) -> Path:
    """An ONNX model with the project's I/O contract: constant normals, or normalize(2·image − 1)."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])
    normals = helper.make_tensor_value_info("normals", TensorProto.FLOAT, ["N", 3, "H", "W"])
    inits = [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]), helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])]
    if constant is None:
        nodes = [helper.make_node("Mul", ["image", "two"], ["scaled"]), helper.make_node("Sub", ["scaled", "one"], ["raw"]),
                 helper.make_node("LpNormalization", ["raw"], ["normals"], axis=1, p=2)]
    else:
        inits += [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
                  helper.make_tensor("const", TensorProto.FLOAT, [1, 3, 1, 1], list(constant))]
        nodes = [helper.make_node("Mul", ["image", "zero"], ["zeros"]), helper.make_node("Add", ["zeros", "const"], ["normals"])]
    graph = helper.make_graph(nodes, "test", [image], [normals], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.metadata_props.add(key="convention", value="camera")  # what makes it a facenormals export (check_model_file)
    onnx.save(model, str(path))
    return path


def _sphere_set(root: Path, count: int = 3, size: int = 64) -> Path:
    """Spheres whose image encodes their normals exactly (the normals are the decoded 8-bit image)."""
    writer = DatasetWriter(root, normal_format="npy")
    for i in range(count):
        normals, mask = sphere_normals(size, radius_frac=0.3 + 0.05 * i)
        image = np.round(encode_normals(normals) * 255).astype(np.uint8)
        exact = normalize(decode_normals(image.astype(np.float32) / 255.0))
        exact[~mask] = 0
        writer.write(f"sphere{i}", mask, image=image, normals=exact)
    return root


def _eval(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "result.json"
    assert cli_main(["eval", *args, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_ground_truth_model_scores_zero(tmp_path: Path):
    data = _sphere_set(tmp_path / "spheres")
    # one pass: a model that reads the normals out of the colours is not a face model — a mirrored image's colours
    # still encode the unmirrored x, so mirror averaging would (rightly) not give it back the truth
    report = _eval(tmp_path, "--data", str(data), "--model", str(_onnx_model(tmp_path / "gt.onnx", None)),
                   "--no-mirror")
    metrics = report["sets"]["spheres"]
    assert metrics["n_images"] == 3
    assert metrics["mean_deg"] < 0.01 and metrics["pct_below_20"] == 100.0
    mirrored = _eval(tmp_path, "--data", str(data), "--model", str(tmp_path / "gt.onnx"))["sets"]["spheres"]
    assert mirrored["mean_deg"] > 1.0  # the default averages with the mirrored crop: x reads the wrong way there


def test_constant_frontal_on_a_sphere_gives_the_analytic_mean(tmp_path: Path):
    """For (0,0,1) the error at radius r is asin(r); over the disc E[asin r] = π/4 = 45°, P(err < t) = sin²t."""
    writer = DatasetWriter(tmp_path / "sphere", normal_format="npy")
    normals, mask = sphere_normals(256)
    writer.write("s", mask, image=np.zeros((256, 256, 3), np.uint8), normals=normals)
    report = _eval(tmp_path, "--data", str(tmp_path / "sphere"),
                   "--model", str(_onnx_model(tmp_path / "c.onnx", (0.0, 0.0, 1.0))))
    metrics = report["sets"]["sphere"]
    assert metrics["mean_deg"] == pytest.approx(45.0, abs=0.3)
    assert metrics["std_deg"] == 0.0  # one image
    for t in (20, 25, 30):
        assert metrics[f"pct_below_{t}"] == pytest.approx(100 * math.sin(math.radians(t)) ** 2, abs=0.5)


def test_checkpoint_model_and_json_schema(tmp_path: Path):
    data = _sphere_set(tmp_path / "a", count=2)
    other = _sphere_set(tmp_path / "b", count=1)
    ckpt = tmp_path / "m.safetensors"
    save_checkpoint(create_model("fast"), ckpt)
    report = _eval(tmp_path, "--data", str(data), "--data", str(other), "--model", str(ckpt),
                   "--variants", f"full={ckpt}", f"again={ckpt}")
    assert set(report) == {"model", "sets", "baselines", "variants"}
    assert report["model"] == str(ckpt) and report["baselines"] == {}
    assert set(report["sets"]) == {"a", "b"}
    for metrics in report["sets"].values():
        assert set(metrics) == SET_KEYS
    assert report["variants"]["full"]["sets"] == report["sets"]  # same checkpoint, same numbers
    assert report["sets"]["a"]["n_images"] == 2


def test_mediapipe_baseline_on_a_real_face_counts_missed_faces(tmp_path: Path):
    """Real MediaPipe on the astronaut photo (public domain, shipped in scikit-image), plus a faceless sphere."""
    from skimage import data as skdata

    from facenormals.geometry import face_crop
    from facenormals.mesh_prior import create_face_mesh, mesh_normals_for_crop

    photo = skdata.astronaut()
    with create_face_mesh() as mesh:
        points = mesh.find(photo)[0].points
        crop = face_crop(photo, points)
        truth, covered, ok = mesh_normals_for_crop(crop.image, mesh)
    assert ok
    mask = crop.mask & covered
    writer = DatasetWriter(tmp_path / "faces", normal_format="npy")
    writer.write("astronaut", mask, image=crop.image, normals=np.where(mask[..., None], truth, 0))
    sphere, sphere_mask = sphere_normals(256)
    writer.write("sphere", sphere_mask, image=np.full((256, 256, 3), 90, np.uint8), normals=sphere)
    report = _eval(tmp_path, "--data", str(tmp_path / "faces"), "--model",
                   str(_onnx_model(tmp_path / "c.onnx", (0.0, 0.0, 1.0))), "--baseline", "mediapipe-mesh")
    base = report["baselines"]["mediapipe-mesh"]
    assert set(base["sets"]["faces"]) == SET_KEYS
    assert base["no_face"] == {"faces": 1}
    assert base["sets"]["faces"]["n_images"] == 1
    # the baseline rasterises the same mesh that made the ground truth: near 0°, and far better than a constant
    assert base["sets"]["faces"]["mean_deg"] < 2.0
    assert report["sets"]["faces"]["n_images"] == 2
    # the model (constant +z) on the crops the baseline scored: the astronaut alone, not the sphere
    same = base["model_on_same_crops"]["faces"]
    expected = np.degrees(np.arccos(np.clip(truth[mask][:, 2], -1.0, 1.0))).mean()
    assert same["n_images"] == 1 and same["mean_deg"] == pytest.approx(expected, abs=0.05)


def test_bad_inputs_name_the_problem(tmp_path: Path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli_main(["eval", "--data", str(tmp_path / "empty"), "--model", str(tmp_path / "none.onnx")]) == 1
    assert "empty" in capsys.readouterr().err
    data = _sphere_set(tmp_path / "s", count=1)
    assert cli_main(["eval", "--data", str(data), "--model", str(tmp_path / "none.onnx")]) == 1
    assert "none.onnx" in capsys.readouterr().err


def test_input_size_runs_the_network_smaller_and_scores_at_the_data_resolution(tmp_path: Path, capsys):
    """``--input-size``: crops go to the network at that side and its normals come back to the data's 256² (so the
    figures stay comparable); the colour-reading model is exact at 256² and only loses what the resampling loses."""
    data = _sphere_set(tmp_path / "spheres", count=2, size=256)
    model = str(_onnx_model(tmp_path / "gt.onnx", None))
    native = _eval(tmp_path, "--data", str(data), "--model", model, "--no-mirror")["sets"]["spheres"]
    small = _eval(tmp_path, "--data", str(data), "--model", model, "--no-mirror", "--input-size", "64")["sets"]["spheres"]
    assert native["mean_deg"] < 0.01
    assert 0.05 < small["mean_deg"] < 5.0  # resampled 4× down and up: blurred at the rim, not another model
    assert small["n_images"] == 2
    assert "resized to the model's 64×64 input" in capsys.readouterr().err


def test_input_size_of_a_fixed_size_export_or_not_a_multiple_of_32_is_refused(tmp_path: Path, capsys):
    data = _sphere_set(tmp_path / "s", count=1)
    fixed = tmp_path / "fixed.onnx"
    model = onnx.load(str(_onnx_model(tmp_path / "gt.onnx", None)))
    for tensor in (model.graph.input[0], model.graph.output[0]):
        dims = tensor.type.tensor_type.shape.dim
        dims[2].dim_value = dims[3].dim_value = 256  # exported at 256² only, as the shipped INT8 twin is
    onnx.save(model, str(fixed))
    assert cli_main(["eval", "--data", str(data), "--model", str(fixed), "--input-size", "192"]) == 1
    err = capsys.readouterr().err
    assert "exported at 256×256" in err and "--size 192" in err
    assert cli_main(["eval", "--data", str(data), "--model", str(tmp_path / "gt.onnx"), "--input-size", "200"]) == 1
    assert "multiple of 32" in capsys.readouterr().err


@pytest.mark.slow
def test_shipped_model_at_192_is_close_to_256_on_a_real_face():
    """The shipped prior model (PyTorch, real MediaPipe prior) on the astronaut's face crop at 192² and at 256²:
    fully convolutional, the same normals to within a few degrees over the face — not a different answer."""
    from skimage import data as skdata

    from facenormals.conventions import angular_error_deg
    from facenormals.geometry import face_crop
    from facenormals.mesh_prior import create_face_mesh
    from facenormals.training.evaluation import load_predictor
    from facenormals.zoo import model_path

    photo = skdata.astronaut()
    with create_face_mesh() as mesh:
        crop = face_crop(photo, mesh.find(photo)[0].points)
    rgb = crop.image.transpose(2, 0, 1)[None].astype(np.float32) / np.float32(255.0)
    full = load_predictor(model_path("fast-prior"), mirror=False)(rgb)[0].transpose(1, 2, 0)
    small = load_predictor(model_path("fast-prior"), mirror=False, input_size=192)(rgb)[0].transpose(1, 2, 0)
    assert small.shape == full.shape == (*crop.mask.shape, 3)
    error = angular_error_deg(small, full)[crop.mask]
    assert 0.1 < float(error.mean()) < 6.0  # a real (resampled) difference, far below the model's ~10–15° error
    assert float(np.percentile(error, 50)) < 5.0
