"""INT8 Q/DQ calibration on real face crops: graph form, head kept fp32, accuracy against fp32, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from facenormals.checkpoint import save_checkpoint
from facenormals.cli import main as cli_main
from facenormals.dataset import DatasetWriter
from facenormals.export.int8 import (
    compare_accuracy,
    load_eval_set,
    qdq_summary,
    quantize_int8,
    trt_qdq_problems,
)
from facenormals.export.onnx_export import export_onnx, head_nodes, set_metadata
from facenormals.export.parity import load_face_crops
from facenormals.export.prepare import create_backend
from facenormals.model import create_model
from facenormals.runtime.backends import OrtBackend
from facenormals.runtime.onnx_info import read_metadata

SIZE = 64


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("int8")


@pytest.fixture(scope="module")
def fp32_onnx(workdir: Path) -> Path:
    torch.manual_seed(1)
    checkpoint = workdir / "fast64.safetensors"
    save_checkpoint(create_model("fast", "plain", input_size=SIZE), checkpoint, inference_only=True)
    out = workdir / "fast64.onnx"
    export_onnx(checkpoint, out, check_parity=False)
    return out


@pytest.fixture(scope="module")
def crops() -> object:
    """A real face crop (MediaPipe + face_crop on scikit-image's astronaut): the same with or without ../shared."""
    return load_face_crops(None, size=SIZE, limit=8)


@pytest.fixture(scope="module")
def cpu_int8(fp32_onnx: Path, crops: object, workdir: Path) -> Path:
    return quantize_int8(fp32_onnx, workdir / "cpu_int8.onnx", crops.images, "minmax")


def _initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    return numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name))


def test_cpu_int8_is_qdq_with_per_channel_weights_and_uint8_activations(cpu_int8: Path) -> None:
    model = onnx.load(str(cpu_int8))
    onnx.checker.check_model(model, full_check=True)
    counts = qdq_summary(cpu_int8)
    assert counts["QuantizeLinear"] > 20 and counts["DequantizeLinear"] > counts["QuantizeLinear"]
    producers = {out: node for node in model.graph.node for out in node.output}
    quantized_convs = 0
    for conv in (n for n in model.graph.node if n.op_type == "Conv"):
        weight_dq = producers.get(conv.input[1])
        if weight_dq is None or weight_dq.op_type != "DequantizeLinear":
            continue
        quantized_convs += 1
        scale = _initializer(model, weight_dq.input[1])
        out_channels = _initializer(model, weight_dq.input[0]).shape[0]
        assert scale.shape == (out_channels,)  # per-channel weights
        assert _initializer(model, weight_dq.input[0]).dtype == np.int8
    assert quantized_convs >= 30
    activation_q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert all(_initializer(model, q.input[2]).dtype == np.uint8 for q in activation_q)
    assert read_metadata(cpu_int8)["precision"] == "int8"
    assert read_metadata(cpu_int8)["int8_target"] == "cpu"


def test_head_conv_and_normalisation_stay_fp32(cpu_int8: Path, fp32_onnx: Path) -> None:
    model = onnx.load(str(cpu_int8))
    head = set(head_nodes(onnx.load(str(fp32_onnx))))
    producers = {out: node for node in model.graph.node for out in node.output}
    head_in_int8 = [n for n in model.graph.node if n.name in head]
    assert {n.op_type for n in head_in_int8} >= {"Conv", "ReduceL2", "Div"}
    head_conv = next(n for n in head_in_int8 if n.op_type == "Conv")
    assert head_conv.input[1] not in producers  # a float initializer, no DequantizeLinear in front
    assert _initializer(model, head_conv.input[1]).dtype == np.float32
    for node in head_in_int8:  # nothing after the head conv is quantised
        assert all(producers[i].op_type != "QuantizeLinear" for i in node.output if i in producers)
        assert all(c.op_type != "QuantizeLinear" for c in model.graph.node if set(c.input) & set(node.output))


def test_int8_stays_within_a_degree_of_fp32_on_face_crops(cpu_int8: Path, fp32_onnx: Path, crops: object) -> None:
    fp32 = OrtBackend("ort-cpu", fp32_onnx, strict=True)
    int8 = create_backend("ort-cpu", cpu_int8, strict=True)
    accuracy = compare_accuracy(fp32, int8, crops.images, crops.masks)
    assert accuracy.nonfinite_pixels == 0
    assert 0.0 < accuracy.mean_deviation_deg <= 1.0  # really quantised, yet close
    out = int8(crops.images[:2])
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-4)


def test_trt_target_is_symmetric_int8_and_cpu_target_is_not(cpu_int8: Path, fp32_onnx: Path, crops: object,
                                                            workdir: Path) -> None:
    trt_int8 = quantize_int8(fp32_onnx, workdir / "trt_int8.onnx", crops.images, "minmax", target="trt")
    assert trt_qdq_problems(onnx.load(str(trt_int8))) == []
    problems = trt_qdq_problems(onnx.load(str(cpu_int8)))
    assert problems and any("UINT8" in p for p in problems)
    assert trt_qdq_problems(onnx.load(str(fp32_onnx))) == ["no QuantizeLinear/DequantizeLinear nodes: not a Q/DQ model"]
    accuracy = compare_accuracy(OrtBackend("ort-cpu", fp32_onnx), OrtBackend("ort-cpu", trt_int8),
                                crops.images, crops.masks)
    assert accuracy.nonfinite_pixels == 0 and accuracy.mean_deviation_deg < 2.0


def test_error_increase_on_a_dataset_with_ground_truth(cpu_int8: Path, fp32_onnx: Path, crops: object,
                                                       tmp_path: Path) -> None:
    """Ground truth here is the fp32 output itself, so fp32 scores ~0° and INT8's increase is its deviation."""
    fp32 = OrtBackend("ort-cpu", fp32_onnx)
    writer = DatasetWriter(tmp_path / "eval")
    for name, image, mask in zip(crops.names, crops.images, crops.masks, strict=True):
        rgb = np.round(image.transpose(1, 2, 0) * 255).astype(np.uint8)
        normals = fp32(rgb.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)[0].transpose(1, 2, 0)
        writer.write(name.replace("#", "_"), mask=mask, image=rgb, normals=normals)
    evaluation = load_eval_set(tmp_path / "eval", SIZE)
    assert evaluation.targets is not None and len(evaluation.images) == len(crops)
    accuracy = compare_accuracy(fp32, OrtBackend("ort-cpu", cpu_int8), evaluation.images, evaluation.masks,
                                evaluation.targets)
    assert accuracy.fp32_error_deg < 0.05  # 16-bit PNG normals round-trip
    assert 0.0 < accuracy.error_increase_deg <= 1.0


@pytest.mark.slow  # entropy calibration searches thresholds in Python: ~15 s alone
@pytest.mark.shared  # real photos to calibrate on
def test_calibrate_cli_compares_methods_and_reports(fp32_onnx: Path, shared_data: Path, tmp_path: Path) -> None:
    photos = shared_data / "photos"
    out, report = tmp_path / "int8.onnx", tmp_path / "int8.json"
    rc = cli_main(["calibrate", "int8", "--onnx", str(fp32_onnx), "--images", str(photos), "--out", str(out),
                   "--limit", "4", "--runs", "2", "--report", str(report)])
    assert rc == 0 and out.is_file()
    data = json.loads(report.read_text())
    assert set(data["methods"]) == {"minmax", "entropy", "percentile"}
    assert data["chosen"] in data["methods"] and data["calibration_crops"] == 4
    assert data["cpu"]["int8_ms"] > 0 and data["cpu"]["fp32_ms"] > 0
    assert read_metadata(out)["int8_calibration"].startswith(data["chosen"])
    assert len(list((tmp_path / ".int8.onnx.calib").glob("*.json"))) == 3  # ranges cached for a rerun


def test_calibrate_cli_errors_name_the_input(fp32_onnx: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nothing"
    assert cli_main(["calibrate", "int8", "--onnx", str(fp32_onnx), "--images", str(missing),
                     "--out", str(tmp_path / "x.onnx")]) == 1
    assert str(missing) in capsys.readouterr().err
    fp16_model = onnx.load(str(fp32_onnx))
    set_metadata(fp16_model, {"precision": "fp16"})
    fp16 = tmp_path / "labelled_fp16.onnx"
    onnx.save(fp16_model, str(fp16))
    with pytest.raises(ValueError, match="quantise the fp32 export"):
        quantize_int8(fp16, tmp_path / "y.onnx", np.zeros((1, 3, SIZE, SIZE), np.float32))
    with pytest.raises(ValueError, match="unknown calibration method"):
        quantize_int8(fp32_onnx, tmp_path / "z.onnx", np.zeros((1, 3, SIZE, SIZE), np.float32), "kl")


def test_a_dataset_images_folder_stands_for_its_dataset(tmp_path: Path) -> None:
    from facenormals.export.int8_cli import _calibration_source

    (tmp_path / "set" / "images").mkdir(parents=True)
    (tmp_path / "set" / "masks").mkdir()
    (tmp_path / "photos").mkdir()
    assert _calibration_source(tmp_path / "set" / "images") == tmp_path / "set"  # crops + masks, no re-detection
    assert _calibration_source(tmp_path / "set") == tmp_path / "set"
    assert _calibration_source(tmp_path / "photos") == tmp_path / "photos"


def test_prior_model_is_calibrated_with_its_mesh_channels(tmp_path: Path) -> None:
    """A mesh-prior model (7 input channels) gets MediaPipe's mesh normals + coverage on every calibration crop."""
    from skimage.data import astronaut

    from facenormals.fileio import write_rgb
    from facenormals.prior import network_inputs

    torch.manual_seed(2)
    checkpoint = tmp_path / "prior128.safetensors"
    save_checkpoint(create_model("fast", "plain", input_size=128, prior="residual"), checkpoint, inference_only=True)
    exported = export_onnx(checkpoint, tmp_path / "prior128.onnx", check_parity=True)  # parity with the mesh channels
    assert exported.parity.passed
    onnx_path = exported.path
    photos = tmp_path / "photos"
    photos.mkdir()
    write_rgb(photos / "astronaut.png", astronaut())
    crops = load_face_crops(photos, size=128, limit=1)
    inputs = network_inputs(crops.images, 7, "mediapipe-mesh")
    assert inputs.shape == (1, 7, 128, 128) and inputs[0, 6].mean() > 0.2  # the mesh was found and rasterised
    assert np.array_equal(inputs[:, :3], crops.images)
    out, report = tmp_path / "prior_int8.onnx", tmp_path / "prior_int8.json"
    assert cli_main(["calibrate", "int8", "--onnx", str(onnx_path), "--images", str(photos), "--out", str(out),
                     "--method", "minmax", "--limit", "1", "--runs", "1", "--report", str(report)]) == 0
    int8 = OrtBackend("ort-cpu", out, strict=True)
    assert int8.in_chans == 7
    deviation = json.loads(report.read_text())["methods"]["minmax"]["mean_deviation_deg"]
    assert deviation < 5.0  # an untrained residual model is its prior: INT8 must keep that
    with pytest.raises(ValueError, match="5 input channels"):
        network_inputs(crops.images, 5, "mediapipe-mesh")
