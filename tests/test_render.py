"""Views, HUD and the view registry, on real pasted normals of a real face."""

from __future__ import annotations

import numpy as np
import pytest

from facenormals.conventions import sphere_normals
from facenormals.crops import PastedNormals
from facenormals.engine import FrameResult
from facenormals.frame import Frame
from facenormals.realtime import render
from facenormals.realtime.pipeline import LoopStats
from facenormals.realtime.render import (
    FrameRenderer,
    RenderState,
    get_view,
    light_from_angles,
    normals_to_bgr,
    register_view,
    shade_bgr,
    view_names,
)


@pytest.fixture
def result() -> FrameResult:
    """A 120×160 grey frame with a hemisphere of normals pasted at (40, 20)."""
    rgb = np.full((120, 160, 3), 100, np.uint8)
    normals, valid = sphere_normals(64)
    normals = normals.astype(np.float32)
    normals[~valid] = np.nan
    frame = Frame(id=7, t_capture_ns=0, rgb=rgb, timings={"detect": 3.0, "infer": 20.0, "total": 31.0})
    return FrameResult(frame, faces=[], normals=[PastedNormals(40, 20, normals, valid)])


def test_normal_colours_follow_the_convention():
    n = np.array([[[0, 0, 1], [1, 0, 0], [0, 1, 0]]], np.float32)
    bgr = normals_to_bgr(n).astype(int)
    np.testing.assert_allclose(bgr[0, 0], [255, 128, 128], atol=1)  # +z → blue
    np.testing.assert_allclose(bgr[0, 1], [128, 128, 255], atol=1)  # +x (right) → red
    np.testing.assert_allclose(bgr[0, 2], [128, 255, 128], atol=1)  # +y (up) → green


def test_lambert_shading_faces_the_light():
    light = light_from_angles(0.0, 0.0)
    n = np.array([[[0, 0, 1], [0, 0, -1], [np.nan, np.nan, np.nan]]], np.float32)
    shade = shade_bgr(n, light).astype(int)
    assert shade[0, 0].mean() > 180  # facing the light
    assert 10 < shade[0, 1].mean() < 40  # facing away: ambient only
    assert shade[0, 2].tolist() == [0, 0, 0]  # NaN: no normal, no light (facenormals.shading.lambert), not garbage


def test_light_controls():
    state = RenderState()
    state.light_from_pointer(80, 60, 160, 120)  # window centre → frontal
    np.testing.assert_allclose(state.light, [0, 0, 1], atol=1e-6)
    state.light_from_pointer(160, 60, 160, 120)  # right edge → from the right, grazing
    assert state.light[0] > 0.9 and abs(np.linalg.norm(state.light) - 1) < 1e-5
    state.light = light_from_angles(0.0, 0.0)
    state.move_light(30.0, 0.0)
    assert state.light[0] == pytest.approx(0.5, abs=1e-5)
    state.move_light(0.0, 200.0)  # elevation is clamped, never flips over the pole
    assert 0.99 < state.light[1] < 1.0


def test_normals_view_changes_only_the_face(result):
    out = get_view("normals")(result, RenderState())
    assert out.shape == (120, 160, 3) and out.dtype == np.uint8
    face = result.normals[0]
    rows, cols = face.region
    changed = np.any(out != 100, axis=2)
    outside = np.ones((120, 160), bool)
    outside[rows, cols] = ~face.valid
    assert not changed[outside].any()
    assert changed[rows, cols][face.valid].mean() > 0.95
    # The centre of the hemisphere faces the camera: bluish.
    b, g, r = out[20 + 32, 40 + 32].astype(int)
    assert b > r + 50 and b > g + 50


def test_relit_view_follows_the_light(result):
    state = RenderState()
    state.light = light_from_angles(70.0, 0.0)  # from the right
    out = get_view("relit")(result, state).astype(int)
    centre_y, centre_x = 20 + 32, 40 + 32
    assert out[centre_y, centre_x + 20].mean() > out[centre_y, centre_x - 20].mean() + 40
    state.light = light_from_angles(-70.0, 0.0)  # from the left
    out = get_view("relit")(result, state).astype(int)
    assert out[centre_y, centre_x - 20].mean() > out[centre_y, centre_x + 20].mean() + 40


def test_side_view_is_twice_as_wide(result):
    out = get_view("side")(result, RenderState())
    assert out.shape == (120, 320, 3)
    assert (out[:, :160] == 100).all()
    assert not out[:10, 160:].any() and out[20 + 32, 160 + 40 + 32].any()


def test_hud_is_drawn(result):
    state = RenderState(view="normals")
    stats = LoopStats(fps=29.5, dropped=3)
    with_hud = FrameRenderer(state, "ort-cpu")(result, stats).copy()
    state.show_hud = False
    without = FrameRenderer(state, "ort-cpu")(result, stats)
    assert (with_hud[:20, :100] != without[:20, :100]).any()
    lines = render.hud_lines(result, 29.5, "ort-cpu", 3)
    assert "29.5 FPS" in lines[0] and "dropped 3" in lines[0]
    assert "infer 20.0" in lines[1] and "31.0" in lines[2] and "keyframe" not in lines[2]
    deferred = render.hud_lines(result, 29.5, "ort-cpu", 3, network_ms=11.25)  # deferred keyframes: shown apart
    assert "keyframe network after its frame 11.2 ms" in deferred[2]


@pytest.mark.parametrize("width", [240, 360, 1280])
def test_hud_fits_a_narrow_frame(result, width):
    # a phone's portrait clip: every line inside the frame, none cut at its right edge
    lines = render.hud_lines(result, 29.5, "ort-cpu", 3, network_ms=11.25)
    image = render.draw_hud(np.zeros((200, width, 3), np.uint8), lines)
    text_columns = np.flatnonzero(image.any(axis=(0, 2)))
    assert text_columns.size and text_columns.max() < width - render.HUD_MARGIN_PX // 2


def test_view_registry(monkeypatch, result):
    with pytest.raises(ValueError, match=r"unknown view 'nope'.*normals"):
        get_view("nope")
    monkeypatch.setitem(render.VIEW_PLUGINS, "missing", "facenormals.realtime.no_such_view_module")
    with pytest.raises(ValueError, match="not available"):
        get_view("missing")

    @register_view("test-negative")
    def negative(res: FrameResult, state: RenderState) -> np.ndarray:
        return 255 - res.frame.rgb[..., ::-1]

    try:
        assert "test-negative" in view_names()
        assert (FrameRenderer(RenderState(view="test-negative", show_hud=False))(result, LoopStats()) == 155).all()
    finally:
        render._VIEWS.pop("test-negative")
    assert "fusion" in view_names()  # the RGB-D view plugs in by name


def test_window_keys_drive_the_render_state():
    from facenormals.realtime.render import angles_from_light
    from facenormals.realtime.sinks import apply_key

    state = RenderState(view="normals", light=light_from_angles(0.0, 0.0))
    assert not apply_key(state, ord("d"))
    assert angles_from_light(state.light)[0] == pytest.approx(8.0, abs=1e-4)  # light moved toward image right
    apply_key(state, ord("w"))
    assert angles_from_light(state.light)[1] == pytest.approx(8.0, abs=1e-4)
    apply_key(state, ord("h"))
    assert not state.show_hud
    seen = {state.view}
    for _ in range(len(render.registered_views())):
        apply_key(state, ord("v"))
        seen.add(state.view)
    assert {"normals", "relit", "side"} <= seen and state.view == "normals"  # cycles back
    assert apply_key(state, ord("q")) and apply_key(state, 27)


def test_copy_where_is_numpys_masked_copy():
    """The faces' paint step equals ``np.copyto(dst, src, where=mask[..., None])`` exactly (3 and 1 channels)."""
    rng = np.random.default_rng(2)
    for channels in (3, 1):
        dst = rng.integers(0, 256, (37, 23, channels), dtype=np.uint8)
        src = rng.integers(0, 256, (37, 23, channels), dtype=np.uint8)
        mask = rng.random((37, 23)) < 0.4
        expected = dst.copy()
        np.copyto(expected, src, where=mask[..., None])
        render._copy_where(dst, src, mask)
        np.testing.assert_array_equal(dst, expected)
