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
