"""``facenormals run --save-mesh DIR`` (issue 20): a subprocess on a real video with a face, meshes read back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh
from pipeline_media import moving_face_frames, small_checkpoint, write_video


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mesh")
    return {"ckpt": small_checkpoint(root / "small.safetensors"),
            "video": write_video(root / "face.mp4", moving_face_frames(4))}


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    return subprocess.run([sys.executable, "-m", "facenormals.cli", "run", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # a subprocess
def test_save_mesh_writes_refined_and_coarse_ply_per_frame(media, tmp_path):
    out = tmp_path / "meshes"
    args = ("--source", f"video:{media['video']}", "--model", str(media["ckpt"]), "--backend", "torch",
            "--headless", "--save-mesh", str(out))
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    refined = sorted(out.glob("*_face0.ply"))
    coarse = sorted(out.glob("*_face0_coarse.ply"))
    assert len(refined) == len(coarse) >= 3
    assert "refined face meshes" in proc.stderr and "ms CPU a face" in proc.stderr
    assert not (tmp_path / "facenormals_out.mp4").exists()  # --save-mesh alone is an output: no default video
    for path in (refined[-1], coarse[-1]):
        mesh = trimesh.load(path, process=False)
        assert len(mesh.vertices) > 500 and len(mesh.faces) > 500
        normals = np.asarray(mesh.vertex_normals)
        np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-3)
        assert np.ptp(mesh.vertices, axis=0).max() < 0.5  # metres: a head, not pixels
    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode != 0 and "--overwrite" in again.stderr


def test_calibration_gives_the_meshes_their_distance(media, tmp_path):
    """``--calibration``: the same video seen with a focal length twice as long puts the head twice as far away
    (weak perspective alone cannot tell the distance): every vertex of the fitted face moves back by the same
    distance Z0 = f / (crop px per metre), its relief unchanged."""
    from facenormals.calibration.calibfile import Calibration, save_calibration
    from facenormals.camera import Intrinsics

    depths = []
    for focal in (300.0, 600.0):
        calibration = tmp_path / f"camera_{focal:.0f}.json"
        save_calibration(calibration, Calibration(Intrinsics(256, 256, focal, focal, 127.5, 127.5), source="test"))
        out = tmp_path / f"meshes_{focal:.0f}"
        proc = run_cli("--source", f"video:{media['video']}", "--model", str(media["ckpt"]), "--backend", "torch",
                       "--headless", "--frames", "2", "--calibration", str(calibration), "--save-mesh", str(out),
                       cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        coarse = trimesh.load(sorted(out.glob("*_face0_coarse.ply"))[-1], process=False)
        refined = trimesh.load(sorted(out.glob("*_face0.ply"))[-1], process=False)
        depths.append(-np.asarray(coarse.vertices[:, 2], np.float64))
        # at the coarse face's distance: the refinement anchors only its mean depth over the face region (λ 2e-4),
        # and this untrained model's normals shape it at will, so its median vertex is a few % off the coarse one's
        assert np.median(refined.vertices[:, 2]) == pytest.approx(np.median(coarse.vertices[:, 2]), rel=0.05)
    shift = depths[1] - depths[0]  # the same fit both times: 2·Z0 − relief minus Z0 − relief
    assert np.ptp(shift) < 1e-4
    assert 0.2 < shift.mean() < 2.0  # Z0: a head a webcam's distance away, in metres
    assert np.ptp(depths[0]) < 0.25  # the relief: a head's, not Z0's
