"""ONNX export: the file is valid and self-describing, and matches torch on real face crops."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from facenormals.checkpoint import load_image_to_normal, save_checkpoint
from facenormals.cli import main as cli_main
from facenormals.export.fp16 import count_fp16_initializers, to_fp16
from facenormals.export.onnx_export import INPUT_NAME, METADATA_KEYS, OUTPUT_NAME, export_onnx, head_nodes
from facenormals.export.parity import check_parity, load_face_crops
from facenormals.fileio import file_sha256
from facenormals.model import create_model

SIZE = 64


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("export_onnx")


@pytest.fixture(scope="module")
def checkpoint(workdir: Path) -> Path:
    torch.manual_seed(0)
    path = workdir / "fast64.safetensors"
    save_checkpoint(create_model("fast", "full", input_size=SIZE), path)  # full: E_N and D_I must not be exported
    return path


@pytest.fixture(scope="module")
def crops() -> object:
    """A real face crop (MediaPipe + face_crop on scikit-image's astronaut): the same with or without ../shared."""
    return load_face_crops(None, size=SIZE, limit=6)


@pytest.fixture(scope="module")
def fp32_export(checkpoint: Path, workdir: Path) -> Path:
    out = workdir / "fast64.onnx"
    export_onnx(checkpoint, out, check_parity=False)
    return out


@pytest.fixture(scope="module")
def fp16_export(checkpoint: Path, workdir: Path) -> Path:
    out = workdir / "fast64_fp16.onnx"
    export_onnx(checkpoint, out, fp16=True, check_parity=False)
    return out


def test_fp32_file_is_checked_self_contained_and_described(fp32_export: Path, checkpoint: Path) -> None:
    model = onnx.load(str(fp32_export))
    onnx.checker.check_model(model, full_check=True)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert [i.name for i in model.graph.input] == [INPUT_NAME]
    assert [o.name for o in model.graph.output] == [OUTPUT_NAME]
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # dynamic batch
    meta = {p.key: p.value for p in model.metadata_props}
    assert set(METADATA_KEYS) <= set(meta)
    assert (meta["arch"], meta["variant"], meta["size"], meta["in_chans"]) == ("fast", "full", str(SIZE), "3")
    assert meta["source_sha256"] == file_sha256(checkpoint)


def test_only_the_image_to_normal_path_is_exported(fp32_export: Path, checkpoint: Path) -> None:
    onnx_params = sum(numpy_helper.to_array(t).size for t in onnx.load(str(fp32_export)).graph.initializer)
    path_params = sum(p.numel() for p in load_image_to_normal(checkpoint).parameters())
    full_params = sum(p.numel() for p in create_model("fast", "full", input_size=SIZE).parameters())
    # BN folding removes a little; E_N and D_I (over a third of the full network) must be absent.
    assert 0.97 * path_params <= onnx_params <= 1.01 * path_params < 0.75 * full_params


def test_dynamic_batch_runs_and_outputs_unit_normals(fp32_export: Path, crops: object) -> None:
    session = ort.InferenceSession(str(fp32_export), providers=["CPUExecutionProvider"])
    for n in (1, 3):
        batch = np.resize(crops.images, (n, 3, SIZE, SIZE)).astype(np.float32)
        out = session.run(None, {INPUT_NAME: batch})[0]
        assert out.shape == (n, 3, SIZE, SIZE) and out.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-4)


def test_fp32_parity_on_real_face_crops(fp32_export: Path, checkpoint: Path, crops: object) -> None:
    report = check_parity(checkpoint, fp32_export, "fp32", crops)
    assert report.n_crops == len(crops) >= 1
    assert report.passed, report.summary()
    assert report.max_deg <= 0.1


def test_fp16_keeps_fp32_io_and_head_and_meets_parity(fp16_export: Path, checkpoint: Path, crops: object) -> None:
    model = onnx.load(str(fp16_export))
    onnx.checker.check_model(model, full_check=True)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    n_fp16, n_fp32 = count_fp16_initializers(model)
    assert n_fp16 > 20 and n_fp32 <= 4  # conv weights cast; the head conv, Resize scales and Clip stay fp32
    head = head_nodes(model)
    assert {"Conv", "ReduceL2", "Div"} <= {n.op_type for n in model.graph.node if n.name in head}
    report = check_parity(checkpoint, fp16_export, "fp16", crops)
    assert report.passed, report.summary()
    assert report.max_deg <= 0.5
    assert {p.key: p.value for p in model.metadata_props}["precision"] == "fp16"


def test_fp16_refuses_a_model_that_is_already_fp16(fp16_export: Path) -> None:
    with pytest.raises(ValueError, match="already holds fp16"):
        to_fp16(onnx.load(str(fp16_export)))


def test_parity_check_catches_a_wrong_model(fp32_export: Path, checkpoint: Path, crops: object,
                                            tmp_path: Path) -> None:
    model = onnx.load(str(fp32_export))
    head_conv = next(n for n in model.graph.node if n.name == head_nodes(model)[0])
    weight = next(t for t in model.graph.initializer if t.name == head_conv.input[1])
    array = numpy_helper.to_array(weight).copy()
    array[0] *= -1.0  # flip the x component: a sign-convention bug
    weight.CopyFrom(numpy_helper.from_array(array, weight.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    report = check_parity(checkpoint, broken, "fp32", crops)
    assert not report.passed and report.max_deg > 1.0


def test_cli_exports_and_reports_parity(checkpoint: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "cli.onnx", tmp_path / "parity.json"
    assert cli_main(["export", "onnx", "--model", str(checkpoint), "--out", str(out), "--report", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["passed"] is True and data["precision"] == "fp32" and data["max_deg"] <= 0.1


def test_cli_rejects_bad_size_and_missing_model(checkpoint: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["export", "onnx", "--model", str(checkpoint), "--out", str(tmp_path / "a.onnx"),
                     "--size", "50", "--no-parity"]) == 1
    assert "--size must be a positive multiple of 32" in capsys.readouterr().err
    assert cli_main(["export", "onnx", "--model", str(tmp_path / "none.safetensors"),
                     "--out", str(tmp_path / "b.onnx")]) == 1
    assert "none.safetensors" in capsys.readouterr().err
    assert not (tmp_path / "a.onnx").exists() and not (tmp_path / "b.onnx").exists()


PRIOR_SIZE = 128  # MediaPipe finds the face in 128² crops (it rarely does at 64²), so the prior channels carry a mesh


@pytest.mark.parametrize("prior", ["absolute", "residual"])
def test_fp16_of_a_prior_model_is_fully_typed_and_meets_parity(prior: str, tmp_path: Path) -> None:
    """Issue 19 (1): the prior branch's Cast(to=FLOAT) once met fp16 activations (Mul(float16, float))."""
    torch.manual_seed(3)
    checkpoint = tmp_path / f"prior-{prior}.safetensors"
    save_checkpoint(create_model("fast", "plain", input_size=PRIOR_SIZE, prior=prior), checkpoint, inference_only=True)
    out = tmp_path / "prior_fp16.onnx"
    export_onnx(checkpoint, out, fp16=True, check_parity=False)
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    head = set(head_nodes(model))
    float_casts = [n.name for n in model.graph.node if n.op_type == "Cast" and n.name not in head
                   and n.attribute[0].i == onnx.TensorProto.FLOAT and not n.name.startswith("cast_")]
    assert not float_casts  # only the inserted casts into the fp32 head remain
    ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])  # ORT accepts the graph
    report = check_parity(checkpoint, out, "fp16", load_face_crops(None, size=PRIOR_SIZE))
    assert report.passed and report.max_deg <= 0.5, report.summary()


def test_fp16_export_of_the_shipped_default_runs_and_meets_parity(tmp_path: Path) -> None:
    from facenormals.zoo import model_path

    try:
        shipped = model_path()
    except FileNotFoundError:
        pytest.skip("no shipped model in facenormals/weights")
    result = export_onnx(shipped, tmp_path / "shipped_fp16.onnx", fp16=True)  # parity on real crops included
    assert result.parity is not None and result.parity.passed, result.parity.summary()
    assert result.parity.max_deg <= 0.5
