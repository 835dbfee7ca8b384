"""``facenormals run`` as a user runs it: a subprocess on real media, outputs checked by reading them back."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from pipeline_media import count_video_frames, moving_face_frames, small_checkpoint, write_video

from facenormals.fileio import read_normals


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("run")
    return {"ckpt": small_checkpoint(root / "small.safetensors"),
            "video": write_video(root / "face.mp4", moving_face_frames(6))}


def headless_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_cli(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facenormals.cli", "run", *args], cwd=cwd, env=headless_env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow  # a subprocess
def test_video_to_mp4_normal_maps_and_report(media, tmp_path):
    out, report, maps = tmp_path / "annotated.mp4", tmp_path / "report.json", tmp_path / "maps"
    proc = run_cli("--source", f"video:{media['video']}", "--model", str(media["ckpt"]), "--backend", "torch",
                   "--headless", "--out", str(out), "--view", "side", "--report", str(report),
                   "--save-dir", str(maps), "--save-format", "npy", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert count_video_frames(out) == 6
    assert f"wrote 6 annotated frames to {out}" in proc.stderr
    assert cv2_size(out) == (2 * 256, 256)  # side by side: twice the source width
    data = json.loads(report.read_text())
    assert data["frames"] == 6 and data["dropped"] == 0 and data["stopped_by"] == "end"
    assert data["faces_inferred"] + data["faces_reused"] == 6 and data["faces_inferred"] >= 2  # --infer-every auto: 3
    assert set(data["latency_ms"]) == {"p50", "p95", "p99"} and "infer" in data["stages"]
    files = sorted((maps / "normals").glob("*.npy"))
    assert len(files) == 6
    normals = read_normals(files[0])
    valid = np.any(normals != 0, axis=2)
    np.testing.assert_allclose(np.linalg.norm(normals[valid], axis=1), 1.0, atol=1e-4)


def cv2_size(path: Path) -> tuple[int, int]:
    import cv2

    capture = cv2.VideoCapture(str(path))
    size = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    capture.release()
    return size


@pytest.mark.slow  # a subprocess
@pytest.mark.skipif(any(Path("/dev").glob("video*")), reason="a camera is attached: the default source is the webcam")
def test_no_arguments_without_camera_or_display_writes_the_sample(media, tmp_path):
    proc = run_cli("--model", str(media["ckpt"]), "--backend", "torch", "--frames", "4", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    video = tmp_path / "facenormals-run.mp4"
    assert "using the embedded sample" in proc.stderr
    assert f"writing the annotated video to {video}" in proc.stderr
    assert count_video_frames(video) == 4


@pytest.mark.slow  # a subprocess
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_finalises_a_readable_video(media, tmp_path, sig):
    out = tmp_path / "live.mp4"
    proc = subprocess.Popen(
        [sys.executable, "-m", "facenormals.cli", "run", "--source", "sample", "--model", str(media["ckpt"]),
         "--backend", "torch", "--headless", "--out", str(out), "--realtime"],
        cwd=tmp_path, env=headless_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    partial = tmp_path / ".live.partial.mp4"
    deadline = time.monotonic() + 180
    while not (partial.exists() and partial.stat().st_size > 5_000) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.2)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    written = int(re.search(r"wrote (\d+) annotated frames", stderr).group(1))
    assert "stopped by signal" in stderr
    assert written >= 1 and count_video_frames(out) == written
    assert not partial.exists()


@pytest.mark.slow  # a subprocess
def test_bad_arguments_are_reported(media, tmp_path):
    proc = run_cli("--source", f"video:{media['video']}", "--model", str(media["ckpt"]), "--max-faces", "0",
                   cwd=tmp_path)
    assert proc.returncode == 1 and "--max-faces must be at least 1" in proc.stderr
    proc = run_cli("--source", f"video:{media['video']}", "--model", str(media["ckpt"]), "--infer-every", "0",
                   cwd=tmp_path)
    assert proc.returncode == 1 and "--infer-every must be 'auto' or a whole number ≥ 1, got '0'" in proc.stderr
    proc = run_cli("--source", f"video:{tmp_path / 'missing.mp4'}", "--model", str(media["ckpt"]), "--backend", "torch",
                   "--headless", cwd=tmp_path)
    assert proc.returncode == 1 and "missing.mp4" in proc.stderr


@pytest.mark.slow  # a subprocess
@pytest.mark.realsense
def test_realsense_recording_with_the_fusion_view(media, tmp_path):
    """A .db3 recorded with the SDK's recorder plays back through rs.pipeline into `run --view fusion`."""
    from facenormals.realtime.sources.base import SourceError
    from facenormals.realtime.sources.realsense import import_pyrealsense2
    from facenormals.realtime.sources.realsense_recorder import record_source

    try:
        import_pyrealsense2()
    except (ImportError, SourceError) as err:
        pytest.skip(f"pyrealsense2 unavailable: {err}")

    recording = record_source("sample-rgbd", tmp_path / "face.db3", 4)
    out = tmp_path / "fusion.mp4"
    proc = run_cli("--source", f"realsense:{recording}", "--model", str(media["ckpt"]), "--backend", "torch",
                   "--headless", "--view", "fusion", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert count_video_frames(out) == 4
    assert cv2_size(out) == (3 * 640, 480)  # raw | normal-mapped | refined depth panels
