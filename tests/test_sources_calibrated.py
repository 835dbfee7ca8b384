"""``--calibration FILE`` on real sources: intrinsics stamped, distortion removed, sizes checked, CLI errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from media import write_image_folder, write_rgbd_folder

from facenormals.calibration.calibfile import Calibration, save_calibration
from facenormals.camera import Intrinsics
from facenormals.realtime.sources.base import SourceError, open_source
from facenormals.realtime.sources.calibrated import CalibratedSource

BARREL = (-0.3, 0.08, 0.0, 0.0, 0.0)


def grid_image(width: int = 64, height: int = 48) -> np.ndarray:
    """Straight dark lines on white: distortion bends them, undistortion must move pixels."""
    rgb = np.full((height, width, 3), 255, np.uint8)
    rgb[::8] = 0
    rgb[:, ::8] = 0
    return rgb


def write_grid_folder(folder: Path, frames: int = 2) -> Path:
    folder.mkdir(parents=True)
    for i in range(frames):
        cv2.imwrite(str(folder / f"{i:03d}.png"), grid_image())
    return folder


def test_distortion_is_removed_and_intrinsics_stamped(tmp_path):
    colour = Intrinsics(64, 48, 40.0, 41.0, 31.5, 23.5, BARREL)
    with CalibratedSource(open_source(f"images:{write_grid_folder(tmp_path / 'grid')}"), Calibration(colour)) as source:
        frames = list(source)
        assert source.intrinsics == Intrinsics(64, 48, 40.0, 41.0, 31.5, 23.5)
    assert len(frames) == 2 and [f.id for f in frames] == [0, 1]
    assert all(f.intrinsics == source.intrinsics for f in frames)
    expected = cv2.undistort(grid_image(), colour.matrix(), np.array(BARREL))
    inner = (slice(8, 40), slice(8, 56))  # the rim differs only by how each remaps the border
    difference = np.abs(frames[0].rgb.astype(int) - expected.astype(int))[inner]
    assert difference.mean() < 1.0 and difference.max() <= 16  # cv2.undistort's fixed-point maps round differently
    assert np.abs(frames[0].rgb.astype(int) - grid_image().astype(int))[inner].mean() > 10  # really remapped


def test_without_distortion_frames_pass_unchanged(tmp_path):
    folder = write_image_folder(tmp_path / "plain", frames=3)
    plain = [f.rgb for f in open_source(f"images:{folder}")]
    colour = Intrinsics(64, 48, 50.0, 50.0, 31.5, 23.5)
    with CalibratedSource(open_source(f"images:{folder}"), Calibration(colour)) as source:
        calibrated = list(source)
    assert all(np.array_equal(a, b.rgb) for a, b in zip(plain, calibrated, strict=True))
    assert calibrated[0].depth is None and calibrated[0].depth_scale_m is None


def test_depth_keeps_the_source_scale_and_is_remapped_nearest(tmp_path):
    folder = write_rgbd_folder(tmp_path / "rgbd", frames=2)
    raw = list(open_source(f"rgbd:{folder}"))
    colour = Intrinsics(64, 48, 50.0, 50.0, 31.5, 23.5, BARREL)
    with CalibratedSource(open_source(f"rgbd:{folder}"), Calibration(colour, depth_scale_m=0.5)) as source:
        frames = list(source)
    assert frames[0].depth_scale_m == raw[0].depth_scale_m == 0.001  # the source's own scale wins
    assert frames[1].depth.dtype == np.uint16
    assert set(np.unique(frames[1].depth)) <= set(np.unique(raw[1].depth)) | {0}  # no blended depths


def test_wrong_resolution_names_both_sizes(tmp_path):
    folder = write_image_folder(tmp_path / "plain", frames=1)
    calibration = Calibration(Intrinsics(640, 480, 500.0, 500.0, 319.5, 239.5), source="board:left")
    source = open_source(f"images:{folder}")
    with pytest.raises(SourceError, match=r"board:left.*640×480.*64×48"):
        CalibratedSource(source, calibration)
    source.close()


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facenormals.cli", "run", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=240)


@pytest.mark.slow  # a subprocess
def test_cli_reports_bad_calibration_files(tmp_path):
    folder = write_image_folder(tmp_path / "plain", frames=1)
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "facenormals-calibration", "version": 1, "colour": {"width": 64}}')
    proc = run_cli("--source", f"images:{folder}", "--calibration", str(broken), "--headless", cwd=tmp_path)
    assert proc.returncode == 1 and "broken.json" in proc.stderr
    other = tmp_path / "other.json"
    save_calibration(other, Calibration(Intrinsics(640, 480, 500.0, 500.0, 319.5, 239.5), source="other-camera"))
    proc = run_cli("--source", f"images:{folder}", "--calibration", str(other), "--headless", cwd=tmp_path)
    assert proc.returncode == 1 and "640×480" in proc.stderr and "64×48" in proc.stderr
