from pathlib import Path

import cv2
import numpy as np
import pytest

from facenormals.conventions import angular_error_deg, decode_normals, encode_normals, sphere_normals
from facenormals.fileio import DataError, read_normals, write_normals
from facenormals.metrics import MetricAccumulator


def test_sphere_sign_convention():
    normals, mask = sphere_normals(64)
    top = normals[10, 32]  # a pixel near the top of the image faces up: +y
    right = normals[32, 54]  # near the right edge faces right: +x
    centre = normals[32, 32]
    assert top[1] > 0.5 and abs(top[0]) < 0.1
    assert right[0] > 0.5 and abs(right[1]) < 0.1
    assert centre[2] > 0.99
    assert np.allclose(np.linalg.norm(normals[mask], axis=1), 1.0, atol=1e-5)


def test_encode_decode_round_trip(rng):
    n = rng.normal(size=(8, 8, 3)).astype(np.float32)
    n /= np.linalg.norm(n, axis=2, keepdims=True)
    assert np.allclose(decode_normals(encode_normals(n)), n, atol=1e-6)
    assert encode_normals(n).min() >= 0 and encode_normals(n).max() <= 1


@pytest.mark.parametrize("suffix", [".png", ".npy"])
def test_normal_file_round_trip(tmp_path: Path, suffix: str):
    normals, mask = sphere_normals(48)
    path = tmp_path / f"n{suffix}"
    write_normals(path, normals, mask)
    back = read_normals(path, mask=mask)
    assert angular_error_deg(back, normals)[mask].max() < 0.01
    assert not np.any(back[~mask])


def test_png16_stores_rgb_order(tmp_path: Path):
    normals = np.zeros((4, 4, 3), np.float32)
    normals[..., 0] = 1.0  # +x only: red channel high
    write_normals(tmp_path / "x.png", normals)
    bgr = cv2.imread(str(tmp_path / "x.png"), cv2.IMREAD_UNCHANGED)
    assert bgr.dtype == np.uint16 and bgr[0, 0, 2] == 65535 and abs(int(bgr[0, 0, 0]) - 32768) <= 1


def test_8bit_png_accepted(tmp_path: Path):
    normals, mask = sphere_normals(32)
    encoded = np.round(encode_normals(normals) * 255).astype(np.uint8)
    encoded[~mask] = 0
    cv2.imwrite(str(tmp_path / "n8.png"), cv2.cvtColor(encoded, cv2.COLOR_RGB2BGR))
    back = read_normals(tmp_path / "n8.png", mask=mask)
    assert angular_error_deg(back, normals)[mask].mean() < 0.5


def test_bad_normal_files(tmp_path: Path):
    with pytest.raises(DataError, match="not found"):
        read_normals(tmp_path / "missing.png")
    np.save(tmp_path / "f64.npy", np.zeros((4, 4, 3)))
    with pytest.raises(DataError, match="float32"):
        read_normals(tmp_path / "f64.npy")
    np.save(tmp_path / "long.npy", np.full((4, 4, 3), 0.9, np.float32))
    with pytest.raises(DataError, match="not unit length"):
        read_normals(tmp_path / "long.npy")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="not a readable image"):
        read_normals(tmp_path / "junk.png")
    cv2.imwrite(str(tmp_path / "gray.png"), np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match="3 channels"):
        read_normals(tmp_path / "gray.png")


def test_metrics_constant_prediction_on_sphere():
    normals, mask = sphere_normals(128)
    flat = np.zeros_like(normals)
    flat[..., 2] = 1.0
    acc = MetricAccumulator()
    acc.add(flat, normals, mask)
    acc.add(normals, normals, mask)
    result = acc.result()
    # angle to +z is arcsin(r) over the disc; its mean over a uniform disc is ∫ 2r·asin(r) dr = π/4 rad = 45°
    expected_first = 45.0
    assert result.n_images == 2
    assert result.mean_deg == pytest.approx(expected_first / 2, abs=0.5)
    assert result.std_deg == pytest.approx(expected_first / 2, abs=0.5)
    # pixels under 20°: half of the perfect image plus sin(20°)² of the disc for the flat one
    expected_pct20 = 100 * (1 + np.sin(np.radians(20)) ** 2) / 2
    assert result.pct_below_20 == pytest.approx(expected_pct20, abs=0.7)


def test_metrics_reject_empty_mask():
    normals, mask = sphere_normals(16)
    with pytest.raises(ValueError, match="empty mask"):
        MetricAccumulator().add(normals, normals, np.zeros_like(mask))
