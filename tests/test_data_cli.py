"""The data engine's CLI on real files: determinism, resume after a kill, parallel = serial, bad inputs.

Uses a synthetic head mesh with a 68-landmark sidecar (MediaPipe finds no face on it, so the landmark
fallback is exercised), so nothing here needs ../shared.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import trimesh

from facenormals.dataset import load_sample, scan_dataset
from facenormals.training.data import cli as data_cli
from facenormals.training.data.jobs import run_parallel, sample_rng
from facenormals.training.data.render_job import RenderJob
from facenormals.training.data.synth import RenderSettings


def _head(folder: Path, name: str = "head") -> Path:
    """An ellipsoid 'head' in cm (face toward +z) and 68 landmarks: jaw, brows, then points on the front."""
    sphere = trimesh.creation.icosphere(subdivisions=4)
    verts = np.asarray(sphere.vertices) * np.array([8.0, 11.0, 9.0])
    mesh = trimesh.Trimesh(verts, sphere.faces, process=False)
    path = folder / f"{name}.ply"
    mesh.export(path)
    t = np.linspace(np.pi * 1.15, np.pi * 1.85, 17)
    jaw = np.stack([6.5 * np.cos(t), 6.0 * np.sin(t) - 1.0], 1)
    brows = np.stack([np.linspace(-5, 5, 10), np.full(10, 3.0)], 1)
    rest = np.stack([np.linspace(-3, 3, 41), np.linspace(-4, 2, 41)], 1)
    xy = np.vstack([jaw, brows, rest])
    z = 9.0 * np.sqrt(np.clip(1 - (xy[:, 0] / 8) ** 2 - (xy[:, 1] / 11) ** 2, 0, 1))
    np.save(folder / f"{name}.landmarks.npy", np.column_stack([xy, z]).astype(np.float32))
    return path


def _run_cli(*argv: str) -> int:
    import argparse

    parser = argparse.ArgumentParser()
    data_cli.add_arguments(parser)
    return data_cli.main(parser.parse_args(list(argv)))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix in (".png", ".json") and p.name != "contact_sheet.png"}


@pytest.fixture(scope="module")
def mesh_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("meshes")
    _head(folder)
    return folder


@pytest.mark.slow  # a subprocess
def test_render_meshes_paired_outputs_dataset(mesh_dir, tmp_path):
    out = tmp_path / "ds"
    rc = _run_cli("render", "--source", str(mesh_dir), "--count", "3", "--out", str(out), "--seed", "4",
                  "--size", "64", "--workers", "1", "--backgrounds")
    assert rc == 0
    samples = scan_dataset(out)
    assert [s.kind.value for s in samples] == ["paired"] * 3 and all(s.depth for s in samples)
    for files in samples:
        sample = load_sample(files)
        assert sample.image.shape == (64, 64, 3)
        assert 0.1 < sample.mask.mean() < 0.9  # the face, not the background
        n = sample.normals[sample.mask]
        assert np.median(n[:, 2]) > 0.5  # facing the camera
        depth = sample.depth_mm[sample.mask]
        assert depth.min() > 200 and depth.max() < 3000  # mm: a head 0.3–2 m away
        params = json.loads((out / "params" / f"{files.name}.json").read_text())
        assert abs(params["rotation_angle_deg"]) <= 45 and params["light_dir"][2] > 0
        assert 0 <= params["light_intensity"] <= 2 and params["albedo"] == "uniform-skin-tone"
    assert (out / "params.csv").read_text().count("\n") == 4
    assert (out / "contact_sheet.png").is_file()


def test_same_seed_same_files_serial_or_parallel(mesh_dir, tmp_path):
    settings = RenderSettings(size=48, kind="normal-only")
    job_a = RenderJob(out=tmp_path / "a", source=str(mesh_dir), seed=9, kind="normal-only", prefix="m",
                      settings=settings)
    job_b = RenderJob(out=tmp_path / "b", source=str(mesh_dir), seed=9, kind="normal-only", prefix="m",
                      settings=settings)
    assert run_parallel(job_a, range(4), workers=1, desc="a").written == 4
    assert run_parallel(job_b, [3, 1, 2, 0], workers=2, desc="b").written == 4
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    job_c = RenderJob(out=tmp_path / "c", source=str(mesh_dir), seed=10, kind="normal-only", prefix="m",
                      settings=settings)
    run_parallel(job_c, range(4), workers=1, desc="c")
    assert _files(tmp_path / "a") != _files(tmp_path / "c")
    assert sample_rng(9, 3).random() == sample_rng(9, 3).random() != sample_rng(9, 4).random()


@pytest.mark.slow  # a subprocess
def test_resume_after_kill_gives_the_uninterrupted_result(mesh_dir, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "facenormals.cli", "data", "render", "--source", str(mesh_dir), "--count", "200",
           "--out", str(out), "--seed", "5", "--size", "48", "--workers", "2", "--kind", "normal-only",
           "--no-contact-sheet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "masks").glob("*.png"))) < 5:
        time.sleep(0.02)
    import os

    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its worker processes, mid-run
    proc.wait()
    done = len(list((out / "masks").glob("*.png")))
    assert 5 <= done < 200, f"kill came too late to test resuming ({done} samples)"
    assert subprocess.run(cmd, capture_output=True, timeout=300).returncode == 0
    fresh = tmp_path / "fresh"
    rc = _run_cli("render", "--source", str(mesh_dir), "--count", "200", "--out", str(fresh), "--seed", "5",
                  "--size", "48", "--workers", "1", "--kind", "normal-only", "--no-contact-sheet")
    assert rc == 0
    assert _files(out) == _files(fresh)
    assert not [p for p in out.rglob(".*") if p.is_file()]  # no temporary files left behind
    assert len(scan_dataset(out)) == 200


@pytest.mark.slow  # a subprocess
def test_broken_mesh_is_skipped_with_a_count(tmp_path, capsys):
    folder = tmp_path / "meshes"
    folder.mkdir()
    _head(folder, "good")
    (folder / "broken.obj").write_text("v 1 2\nf 1 2 9\nthis is not a mesh\n")
    out = tmp_path / "ds"
    rc = _run_cli("render", "--source", str(folder), "--count", "4", "--out", str(out), "--seed", "1",
                  "--size", "48", "--workers", "1", "--kind", "normal-only", "--no-contact-sheet")
    assert rc == 0
    summary = capsys.readouterr().out
    assert "2 written" in summary and "2 skipped" in summary and "broken.obj" in summary


@pytest.mark.slow  # a subprocess
def test_missing_texture_renders_with_a_skin_tone(tmp_path):
    folder = tmp_path / "meshes"
    folder.mkdir()
    _head(folder, "scan")
    mesh = trimesh.load(folder / "scan.ply", process=False)
    obj = trimesh.exchange.obj.export_obj(mesh, include_texture=False)
    (folder / "scan.ply").unlink()
    (folder / "scan.obj").write_text("mtllib scan.mtl\nusemtl skin\n" + obj)
    (folder / "scan.mtl").write_text("newmtl skin\nmap_Kd missing_texture.jpg\n")
    out = tmp_path / "ds"
    rc = _run_cli("render", "--source", str(folder), "--count", "1", "--out", str(out), "--seed", "1",
                  "--size", "48", "--workers", "1", "--no-contact-sheet", "--backgrounds")
    assert rc == 0
    params = json.loads(next((out / "params").glob("*.json")).read_text())
    assert params["albedo"] == "uniform-skin-tone"


@pytest.mark.slow  # a subprocess
def test_bad_sources_give_clear_errors(tmp_path):
    from facenormals.fileio import DataError

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no mesh files"):
        _run_cli("render", "--source", str(empty), "--count", "1", "--out", str(tmp_path / "o"), "--workers", "1")
    with pytest.raises(DataError, match="not found"):
        _run_cli("render", "--source", str(tmp_path / "nope"), "--count", "1", "--out", str(tmp_path / "o"))
    with pytest.raises(DataError, match="ICT-FaceKit model not found"):
        _run_cli("render", "--source", "ict", "--ict", str(tmp_path / "x.npz"), "--count", "1",
                 "--out", str(tmp_path / "o"))
    with pytest.raises(ValueError, match="--count"):
        _run_cli("render", "--source", "ict", "--count", "0", "--out", str(tmp_path / "o"))


@pytest.mark.slow  # a subprocess
@pytest.mark.parametrize("suffix", [".obj", ".glb", ".wrl"])
def test_mesh_formats_load_and_render(tmp_path, suffix):
    from facenormals.training.data.meshes import load_mesh

    folder = tmp_path / "meshes"
    folder.mkdir()
    ply = _head(folder, "head")
    mesh = trimesh.load(ply, process=False)
    colors = np.tile(np.array([[200, 150, 120, 255]], np.uint8), (len(mesh.vertices), 1))
    colors[mesh.vertices[:, 1] > 5] = [40, 30, 20, 255]  # "hair": the colours must survive the format
    target = folder / f"head{suffix}"
    if suffix == ".wrl":
        points = " ".join(f"{x:.5f} {y:.5f} {z:.5f}," for x, y, z in mesh.vertices)
        index = " ".join(f"{a}, {b}, {c}, -1," for a, b, c in mesh.faces)
        rgb = " ".join(f"{r / 255:.4f} {g / 255:.4f} {b / 255:.4f}," for r, g, b, _ in colors)
        target.write_text("#VRML V2.0 utf8\nShape { geometry IndexedFaceSet {\n"
                          f"coord Coordinate {{ point [ {points} ] }}\ncoordIndex [ {index} ]\n"
                          f"color Color {{ color [ {rgb} ] }}\ncolorPerVertex TRUE\n}} }}\n")
    else:
        trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_colors=colors, process=False).export(target)
    ply.unlink()
    loaded = load_mesh(target)
    assert len(loaded.vertices) == len(mesh.vertices) and loaded.colors is not None
    assert loaded.colors.min() < 0.2 < 0.7 < loaded.colors.max()
    out = tmp_path / "ds"
    rc = _run_cli("render", "--source", str(folder), "--count", "1", "--out", str(out), "--seed", "2",
                  "--size", "48", "--workers", "1", "--no-contact-sheet", "--backgrounds")
    assert rc == 0
    assert json.loads(next((out / "params").glob("*.json")).read_text())["albedo"] == "vertex-colors"


@pytest.mark.shared
def test_ict_faces_wear_the_james_texture_only_when_asked(shared_data, tmp_path):
    # the James scan is the real-scan validation set: without --james not one ICT face may wear its texture,
    # however high the transfer share
    out = tmp_path / "ict"
    rc = _run_cli("render", "--source", "ict", "--ict", str(shared_data / "ict-facekit" / "ict_facekit.npz"),
                  "--count", "3", "--out", str(out), "--seed", "8", "--workers", "1", "--size", "64",
                  "--p-transfer", "1.0", "--no-contact-sheet")
    assert rc == 0
    albedos = [json.loads(p.read_text())["albedo"] for p in sorted((out / "params").glob("*.json"))]
    assert albedos == ["procedural"] * 3
