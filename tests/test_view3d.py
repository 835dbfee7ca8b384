"""``--view 3d`` (issue 20): the mesh renderer, the turn controls and a headless run writing a readable video."""

from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from pipeline_media import count_video_frames, small_checkpoint
from test_face3d import grid_mesh

from facenormals import face3d
from facenormals.mesh_prior import vertex_normals
from facenormals.realtime import view3d
from facenormals.realtime.render import RenderState, get_view, light_from_angles, view_names
from facenormals.realtime.sinks import apply_key

SIZE = 200


def hemisphere(radius_m: float = 0.08, n: int = 41) -> face3d.Mesh:
    """A hemisphere facing the viewer (+z), metres, wound counter-clockwise from outside."""
    s = np.linspace(-1.0, 1.0, n)
    x, y = np.meshgrid(s, s[::-1])  # rows go down in y: grid_mesh's CCW convention
    r = np.hypot(x, y)
    shrink = np.where(r > 1, 1 / np.maximum(r, 1e-9), 1.0) * 0.999
    x, y = x * shrink, y * shrink
    vertices = np.stack([x, y, np.sqrt(np.maximum(1 - x**2 - y**2, 0))], -1).reshape(-1, 3) * radius_m
    faces = grid_mesh(n, n)[:, [0, 2, 1]]
    return face3d.Mesh(vertices.astype(np.float32), faces.astype(np.int32),
                       vertex_normals(vertices, faces).astype(np.float32))


def width_px(coverage: np.ndarray) -> int:
    cols = np.flatnonzero(coverage.any(axis=0))
    return int(cols[-1] - cols[0] + 1)


def test_the_mesh_is_drawn_metric_lit_and_turned():
    mesh = hemisphere()
    image, coverage = view3d.render_mesh(mesh, view3d.turn_matrix(0, 0), light_from_angles(-60, 0), SIZE)
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    # 0.16 m across a 0.30 m panel: ~107 px wide, whatever the mesh came from
    assert width_px(coverage) == pytest.approx(0.16 / view3d.SPAN_M * SIZE, abs=3)
    grey = image.mean(axis=2)
    left, right = grey[:, : SIZE // 2][coverage[:, : SIZE // 2]], grey[:, SIZE // 2:][coverage[:, SIZE // 2:]]
    assert left.mean() > right.mean() + 40  # the light comes from the viewer's left
    assert (image[~coverage] == view3d.BACKGROUND_BGR).all()
    _, turned = view3d.render_mesh(mesh, view3d.turn_matrix(60, 0), light_from_angles(-60, 0), SIZE)
    assert width_px(turned) < 0.85 * width_px(coverage)  # a cap seen from the side is narrower
    _, tilted = view3d.render_mesh(mesh, view3d.turn_matrix(0, 60), light_from_angles(-60, 0), SIZE)
    assert width_px(tilted.T) < 0.85 * width_px(coverage.T)  # …and from above, shorter


def test_turn_matrix_is_a_rotation_with_the_stated_signs():
    yaw = view3d.turn_matrix(30, 0)
    np.testing.assert_allclose(yaw @ yaw.T, np.eye(3), atol=1e-12)
    assert (yaw @ [1.0, 0, 0])[2] < 0  # the image-right side turns away
    assert (view3d.turn_matrix(0, 30) @ [0, 1.0, 0])[2] > 0  # the top comes toward the viewer


def test_auto_swing_until_the_user_turns():
    state = RenderState(view="3d")
    assert view3d.view_angles(state, 0) == (0.0, 0.0)
    assert view3d.view_angles(state, view3d.AUTO_PERIOD_FRAMES // 4)[0] == pytest.approx(view3d.AUTO_SWING_DEG)
    assert not apply_key(state, ord("l"))
    assert state.turn is not None
    yaw, pitch = view3d.view_angles(state, view3d.AUTO_PERIOD_FRAMES // 4)  # no longer the swing
    assert yaw > 0 and pitch == 0
    apply_key(state, ord("j"))
    apply_key(state, ord("k"))
    assert view3d.view_angles(state, 123) == (0.0, pytest.approx(8.0))


def test_the_view_is_registered():
    assert "3d" in view_names()
    # the same function (doctest collection may import the module a second time under another name)
    assert get_view("3d").__code__.co_filename == view3d.render_3d.__code__.co_filename
    assert get_view("3d").__qualname__ == "render_3d"


def test_headless_run_on_the_sample_writes_a_readable_video(tmp_path):
    """``run --source sample --view 3d --headless``: frames twice the sample's width, a face drawn on the right."""
    ckpt = small_checkpoint(tmp_path / "small.safetensors")
    out = tmp_path / "view3d.mp4"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    proc = subprocess.run([sys.executable, "-m", "facenormals.cli", "run", "--source", "sample", "--view", "3d",
                           "--model", str(ckpt), "--backend", "torch", "--headless", "--frames", "8", "--out",
                           str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert count_video_frames(out) == 8
    capture = cv2.VideoCapture(str(out))
    panels = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        height, width = frame.shape[:2]
        assert width == 2 * 640 and height == 480  # the sample is 640×480
        panel = frame[height // 4: 3 * height // 4, width // 2:].astype(np.int16)  # above the panel's text
        panels.append(panel)
    capture.release()
    drawn = [(np.abs(p - np.array(view3d.BACKGROUND_BGR)).max(axis=2) > 30).mean() for p in panels]
    assert min(drawn) > 0.03  # a face on every frame, not an empty panel
    assert np.abs(panels[-1] - panels[0]).mean() > 0.5  # the automatic turn moved it



def test_a_jumped_crop_is_a_new_face():
    from facenormals.realtime.face3d_tracks import jumped

    crop = np.array([[0.5, 0.0, -40.0], [0.0, 0.5, -30.0]])  # a 512-px square of the frame into 256²
    moved = crop.copy()
    moved[:, 2] -= 20.0  # 40 frame px: a face moving
    assert not jumped(crop, crop, 256) and not jumped(crop, moved, 256)
    far = crop.copy()
    far[0, 2] -= 200.0  # 400 frame px of a 512-px crop
    assert jumped(crop, far, 256)
    zoomed = crop * np.array([[2.0], [2.0]])
    assert jumped(crop, zoomed, 256)
