"""eval --diagnose (issue 14): the error split into global rotation, low-frequency and detail, checked on analytic cases.

A sphere's normals are the truth; the prediction is the sphere with a known ripple (each normal turned by
α = A·sin(2πx/4 px) about a tangent axis, so its per-pixel error is exactly |α|) and a known global rotation. The
decomposition must give the rotation back, leave exactly the ripple after removing it, and put the ripple (4 px
period, far above σ = 4 px blur's cut-off) in the detail part, not the low-frequency one.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from facenormals.cli import main as cli_main
from facenormals.conventions import angular_error_deg, decode_normals, encode_normals, normalize, sphere_normals
from facenormals.dataset import DatasetWriter
from facenormals.training.diagnose import BAND_SIGMAS, PARTS, border_band, decompose, read_params, sigma_for

SIZE = 256


def _rotation(axis: tuple[float, float, float], angle_deg: float) -> np.ndarray:
    axis = np.asarray(axis, np.float64) / np.linalg.norm(axis)
    rot, _ = cv2.Rodrigues((axis * np.radians(angle_deg)).reshape(3, 1))
    return rot


def _sphere() -> tuple[np.ndarray, np.ndarray]:
    normals, mask = sphere_normals(SIZE, radius_frac=0.45)
    mask &= normals[..., 2] > 0.45  # a face-like cap: no normal near the silhouette
    normals[~mask] = 0.0
    return normals, mask


def _ripple(normals: np.ndarray, amplitude_deg: float, period_px: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Each normal turned by α(x) about the tangent axis n × ŷ: the error against ``normals`` is exactly |α|."""
    cols = np.broadcast_to(np.arange(SIZE, dtype=np.float64), (SIZE, SIZE))
    alpha = np.radians(amplitude_deg) * np.sin(2 * np.pi * cols / period_px + 0.7)
    axis = normalize(np.cross(normals, np.array([0.0, 1.0, 0.0], np.float32)))
    turned = np.cos(alpha)[..., None] * normals + np.sin(alpha)[..., None] * np.cross(axis, normals)
    return normalize(turned), np.degrees(np.abs(alpha))


def test_rotation_and_ripple_are_recovered_exactly():
    truth, mask = _sphere()
    rippled, ripple_err = _ripple(truth, 3.0)
    rot = _rotation((0.3, 1.0, 0.2), 7.0)
    pred = (rippled @ rot.T).astype(np.float32)
    split = decompose(pred, truth, mask)
    ripple_mean = float(ripple_err[mask].mean())  # the known ripple error (≈ 3° · 2/π)

    assert split.mean_deg == pytest.approx(float(angular_error_deg(pred, truth)[mask].mean()), abs=1e-5)
    assert sum(split.parts.values()) == pytest.approx(split.mean_deg, abs=1e-4)  # the three parts add up
    assert split.rotation_angle_deg == pytest.approx(7.0, abs=0.01)  # the rotation given back
    # removing it leaves exactly the ripple ...
    assert split.mean_deg - split.parts["rotation_deg"] == pytest.approx(ripple_mean, abs=0.01)
    # ... which is detail: blurring both sides (σ = 4 px) removes a 4 px ripple
    assert split.parts["low_freq_deg"] < 0.01
    assert split.parts["detail_deg"] == pytest.approx(ripple_mean, abs=0.01)
    # inside the interior the blur never leaves the mask: the split is exact to float precision
    interior = split.regions["interior"]
    assert interior["low_freq_deg"] < 0.005
    assert interior["mean_deg"] - interior["rotation_deg"] == pytest.approx(ripple_err[mask & ~border_band(mask, 12)].mean(),
                                                                            abs=0.01)
    assert split.region_pixels["border"] + split.region_pixels["interior"] == mask.sum()


def test_pure_rotation_and_pure_ripple():
    truth, mask = _sphere()
    rotated = (truth @ _rotation((1.0, -0.4, 0.1), 12.0).T).astype(np.float32)
    split = decompose(rotated, truth, mask)
    assert split.parts["rotation_deg"] == pytest.approx(split.mean_deg, abs=1e-4) and split.mean_deg > 5.0
    assert split.parts["low_freq_deg"] < 1e-3 and abs(split.parts["detail_deg"]) < 1e-3
    assert split.rotation_angle_deg == pytest.approx(12.0, abs=1e-4)

    rippled, ripple_err = _ripple(truth, 5.0)
    split = decompose(rippled, truth, mask)
    assert split.rotation_angle_deg < 0.01 and abs(split.parts["rotation_deg"]) < 1e-3
    assert split.mean_deg == pytest.approx(float(ripple_err[mask].mean()), abs=1e-4)
    assert split.parts["detail_deg"] == pytest.approx(split.mean_deg, abs=0.02)
    # blurred, the prediction has lost the ripple: it is as far from the truth as the blurred truth is (the blur
    # bends the sphere's own curvature near the mask's edge)
    assert split.blurred_prediction_deg == pytest.approx(split.blurred_truth_deg, abs=0.02)
    assert split.blurred_truth_deg < 0.5


def test_a_flatter_face_is_low_frequency_error():
    """A sphere squashed in depth (a flatter face): shape error, nothing for a rotation or the detail part."""
    truth, mask = _sphere()
    flat = normalize(truth * np.array([1.0, 1.0, 1.6], np.float32))  # normals of the ellipsoid z/1.6
    split = decompose(flat, truth, mask)
    assert split.mean_deg > 5.0
    assert split.parts["low_freq_deg"] > 0.97 * split.mean_deg
    assert abs(split.parts["rotation_deg"]) < 0.02 * split.mean_deg and abs(split.parts["detail_deg"]) < 0.02 * split.mean_deg
    assert split.regions["border"]["mean_deg"] > split.regions["interior"]["mean_deg"]  # flattening tilts the rim most


def test_sigma_scales_with_the_crop():
    assert sigma_for(256) == 4.0 and sigma_for(128) == 2.0
    mask = np.zeros((20, 20), bool)
    mask[2:18, 2:18] = True
    band = border_band(mask, 3)
    assert band[2, 9] and band[4, 9] and not band[6, 9] and not band[0, 0]


def _decode_model(path: Path) -> Path:
    """The project's I/O contract: normals = normalize(2·image − 1) (the image encodes the prediction)."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])
    normals = helper.make_tensor_value_info("normals", TensorProto.FLOAT, ["N", 3, "H", "W"])
    inits = [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]), helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])]
    nodes = [helper.make_node("Mul", ["image", "two"], ["scaled"]), helper.make_node("Sub", ["scaled", "one"], ["raw"]),
             helper.make_node("LpNormalization", ["raw"], ["normals"], axis=1, p=2)]
    model = helper.make_model(helper.make_graph(nodes, "decode", [image], [normals], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.metadata_props.add(key="convention", value="camera")  # what makes it a facenormals export (check_model_file)
    onnx.save(model, str(path))
    return path


def test_eval_cli_diagnose_json(tmp_path: Path, capsys):
    """End to end: per-image errors, the split, regions, yaw and light bins from params.csv in the JSON."""
    truth, mask = _sphere()
    root = tmp_path / "spheres"
    writer = DatasetWriter(root, normal_format="npy")
    rows = ["name,kind,yaw_deg,light_dir"]
    expected = {}
    for i, (angle, yaw, light) in enumerate([(4.0, 10.0, "0 0 1"), (8.0, -70.0, "0.866 0 0.5"), (0.0, 55.0, "")]):
        pred = truth @ _rotation((0.2, 1.0, 0.0), angle).T
        image = np.round(encode_normals(pred) * 255).astype(np.uint8)
        decoded = normalize(decode_normals(image.astype(np.float32) / 255.0))  # what the model will predict
        writer.write(f"s{i}", mask, image=image, normals=truth)
        expected[f"s{i}"] = float(angular_error_deg(decoded, truth)[mask].mean())
        rows.append(f"s{i},paired,{yaw},{light}")
    (root / "params.csv").write_text("\n".join(rows) + "\n")
    assert read_params(root)["s1"] == {"yaw_deg": -70.0, "light_angle_deg": pytest.approx(60.0, abs=0.01)}

    out = tmp_path / "report.json"
    # one pass: a model reading normals out of colours is not mirror-symmetric as a face model is (test_eval)
    assert cli_main(["eval", "--data", str(root), "--model", str(_decode_model(tmp_path / "m.onnx")), "--diagnose",
                     "--json", str(out), "--no-mirror"]) == 0
    assert "rotation" in capsys.readouterr().out
    report = json.loads(out.read_text())
    d = report["diagnose"]["spheres"]
    assert d["n_images"] == 3 and d["sigma_px"] == 4.0 and d["band_px"] == BAND_SIGMAS * 4.0
    assert d["per_image"] == pytest.approx(expected, abs=1e-3)
    assert d["mean_deg"] == pytest.approx(report["sets"]["spheres"]["mean_deg"], abs=1e-4)
    assert sum(d[k] for k in PARTS) == pytest.approx(d["mean_deg"], abs=1e-3)
    assert d["rotation_angle_deg"] == pytest.approx(4.0, abs=0.1)  # mean of 4°, 8°, 0° (8-bit images: ±0.1°)
    assert set(d["regions"]) == {"border", "interior"}
    assert sum(r["pixel_pct"] for r in d["regions"].values()) == pytest.approx(100.0)
    assert {k: v["n_images"] for k, v in d["by_yaw"].items()} == {"0-15": 1, "45-60": 1, "60-75": 1}
    assert {k: v["n_images"] for k, v in d["by_light_angle"].items()} == {"0-25": 1, "50-75": 1}
    assert d["by_yaw"]["60-75"]["mean_deg"] == pytest.approx(expected["s1"], abs=1e-3)
    assert d["per_image_split"]["s1"]["yaw_deg"] == -70.0 and "light_angle_deg" not in d["per_image_split"]["s2"]
