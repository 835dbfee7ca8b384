"""Drawing a processed frame: normal-map overlay, relit shading, side by side, plus a HUD; a view registry.

Convention: views take a :class:`~facenormals.engine.FrameResult` and a :class:`RenderState`
and return a BGR uint8 image (what OpenCV windows and writers take). Normals are camera space
(+x right, +y up, +z toward the camera) and coloured as (n + 1) / 2 in RGB, the file convention.

Views are looked up by name in a registry; other packages add theirs with :func:`register_view`.
Names in ``VIEW_PLUGINS`` are imported on first use, so ``--view fusion`` loads the RGB-D fusion view
only when asked for.
"""

from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numba
import numpy as np

from facenormals.shading import lambert

if TYPE_CHECKING:
    from facenormals.engine import FrameResult
    from facenormals.realtime.pipeline import LoopStats

ViewRenderer = Callable[["FrameResult", "RenderState"], np.ndarray]

_VIEWS: dict[str, ViewRenderer] = {}
_FUSED_VIEWS: set[str] = set()  # views that draw result.fusion
# view name → module that registers it when imported (optional features stay unimported until used)
VIEW_PLUGINS: dict[str, str] = {"fusion": "facenormals.realtime.views_rgbd", "fit": "facenormals.realtime.views_fit",
                                "3d": "facenormals.realtime.view3d"}

OVERLAY_ALPHA = 0.85  # normal colours over the face; a little of the photo shows through
ALBEDO_BGR = np.array([0.78, 0.84, 0.92], dtype=np.float32)  # relit: a warm plaster colour


@dataclass
class RenderState:
    """What the user controls while running: the light (unit vector, camera space) and the view."""

    light: np.ndarray = field(default_factory=lambda: light_from_angles(-30.0, 25.0))
    view: str = "normals"
    show_hud: bool = True
    cache: dict[str, np.ndarray] = field(default_factory=dict)  # reused output buffers, by purpose
    turn: tuple[float, float] | None = None  # --view 3d: (yaw, pitch) degrees once the user turns it; None = auto
    memory: dict[str, object] = field(default_factory=dict)  # per-view state kept between frames, by view name

    def buffer(self, key: str, shape: tuple[int, ...]) -> np.ndarray:
        """A reusable uint8 image buffer (reallocated only when the frame size changes)."""
        buf = self.cache.get(key)
        if buf is None or buf.shape != shape:
            buf = self.cache[key] = np.empty(shape, dtype=np.uint8)
        return buf

    def move_light(self, d_azimuth: float, d_elevation: float) -> None:
        azimuth, elevation = angles_from_light(self.light)
        self.light = light_from_angles(azimuth + d_azimuth, max(-85.0, min(85.0, elevation + d_elevation)))

    def turn_view(self, d_yaw: float, d_pitch: float) -> None:
        """Turn the 3-D view (degrees); the first turn stops the automatic one."""
        yaw, pitch = self.turn if self.turn is not None else (0.0, 0.0)
        self.turn = ((yaw + d_yaw + 180.0) % 360.0 - 180.0, max(-80.0, min(80.0, pitch + d_pitch)))

    def light_from_pointer(self, x: float, y: float, width: int, height: int) -> None:
        """Light toward the pointer: the window centre is a frontal light, the edges grazing ones."""
        lx, ly = 2.0 * x / max(width, 1) - 1.0, 1.0 - 2.0 * y / max(height, 1)  # +y up
        lz = math.sqrt(max(0.05, 1.0 - lx * lx - ly * ly))
        self.light = (np.array([lx, ly, lz]) / math.sqrt(lx * lx + ly * ly + lz * lz)).astype(np.float32)


def light_from_angles(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """Unit light direction: azimuth about +y (0 = frontal, + = from image right), elevation toward +y.

    >>> light_from_angles(0.0, 0.0).round(3).tolist()
    [0.0, 0.0, 1.0]
    """
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    return np.array([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)], dtype=np.float32)


def angles_from_light(light: np.ndarray) -> tuple[float, float]:
    x, y, z = (float(v) for v in light)
    return math.degrees(math.atan2(x, z)), math.degrees(math.asin(max(-1.0, min(1.0, y))))


# ---------------------------------------------------------------------------------------------- registry


def register_view(name: str, fused: bool = False) -> Callable[[ViewRenderer], ViewRenderer]:
    """Decorator: make ``fn(result, state) -> BGR image`` available as ``--view NAME``. ``fused``: the view draws
    ``result.fusion``, so the run builder adds the fusion stage (:mod:`facenormals.fusion_stage`) to the loop."""

    def decorate(fn: ViewRenderer) -> ViewRenderer:
        _VIEWS[name] = fn
        if fused:
            _FUSED_VIEWS.add(name)
        return fn

    return decorate


def view_needs_fusion(name: str) -> bool:
    """Whether ``--view NAME`` draws refined depth (the loop must run the fusion stage for it)."""
    get_view(name)  # plugin views register themselves on import
    return name in _FUSED_VIEWS


def view_names() -> list[str]:
    """Every view that ``--view`` accepts (plugins included, loaded or not)."""
    return sorted(set(_VIEWS) | set(VIEW_PLUGINS))


def registered_views() -> list[str]:
    """Views loaded now (what the window's 'v' key cycles through)."""
    return sorted(_VIEWS)


def get_view(name: str) -> ViewRenderer:
    """The renderer of a view; plugin views are imported here, with a clear error if they are missing."""
    if name not in _VIEWS and name in VIEW_PLUGINS:
        try:
            importlib.import_module(VIEW_PLUGINS[name])
        except ModuleNotFoundError as err:
            raise ValueError(f"view {name!r} is not available in this installation ({err})") from err
    if name not in _VIEWS:
        raise ValueError(f"unknown view {name!r}; choose one of {', '.join(view_names())}")
    return _VIEWS[name]


# ---------------------------------------------------------------------------------------------- views


def _frame_bgr(result: FrameResult, state: RenderState, key: str = "frame") -> np.ndarray:
    rgb = result.frame.rgb
    out = state.buffer(key, rgb.shape)
    cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR, dst=out)
    return out


def normals_to_bgr(normals: np.ndarray) -> np.ndarray:
    """Unit normals h×w×3 (x, y, z) → BGR uint8 of the (n + 1) / 2 colours; NaN pixels become 0."""
    encoded = cv2.convertScaleAbs(np.nan_to_num(normals, nan=-1.0), alpha=127.5, beta=127.5)
    return cv2.cvtColor(encoded, cv2.COLOR_RGB2BGR)


def shade_bgr(normals: np.ndarray, light: np.ndarray) -> np.ndarray:
    """Lambertian shading (:func:`facenormals.shading.lambert`, the project's one) of unit normals under a
    directional light, plaster albedo, BGR uint8."""
    return cv2.convertScaleAbs(lambert(normals, light)[..., None] * (ALBEDO_BGR * 255.0))


def _blend_faces(out: np.ndarray, result: FrameResult, colourise: Callable[[np.ndarray], np.ndarray],
                 alpha: float) -> np.ndarray:
    """Paint each face's colours into ``out`` over its valid pixels only (region-sized work)."""
    for face in result.normals:
        rows, cols = face.region
        roi = out[rows, cols]
        colours = colourise(face.normals)
        if alpha < 1.0:
            colours = cv2.addWeighted(colours, alpha, roi, 1.0 - alpha, 0.0)
        _copy_where(roi, colours, face.valid)
    return out


@numba.njit(cache=True, nogil=True)
def _copy_where(dst: np.ndarray, src: np.ndarray, where: np.ndarray) -> None:  # pragma: no cover - JIT
    """dst[i, j] = src[i, j] where ``where[i, j]``: ``np.copyto(dst, src, where=where[..., None])`` for h×w×C images,
    without numpy's broadcast-mask loop (~0.05 instead of ~0.4 ms for a 200² face)."""
    for i in range(dst.shape[0]):
        for j in range(dst.shape[1]):
            if where[i, j]:
                for k in range(dst.shape[2]):
                    dst[i, j, k] = src[i, j, k]


@register_view("normals")
def render_normals(result: FrameResult, state: RenderState) -> np.ndarray:
    """The frame with each face's normal map overlaid."""
    return _blend_faces(_frame_bgr(result, state), result, normals_to_bgr, OVERLAY_ALPHA)


@register_view("relit")
def render_relit(result: FrameResult, state: RenderState) -> np.ndarray:
    """Each face re-shaded by the predicted normals under the user's light; an inset shows the light."""
    out = _blend_faces(_frame_bgr(result, state), result, lambda n: shade_bgr(n, state.light), 1.0)
    draw_light_gizmo(out, state.light)
    return out


@register_view("side")
def render_side(result: FrameResult, state: RenderState) -> np.ndarray:
    """The camera frame (left) and the normal map on black (right)."""
    height, width = result.frame.rgb.shape[:2]
    out = state.buffer("side", (height, 2 * width, 3))
    cv2.cvtColor(result.frame.rgb, cv2.COLOR_RGB2BGR, dst=out[:, :width])
    right = out[:, width:]
    right.fill(0)
    _blend_faces(right, result, normals_to_bgr, 1.0)
    return out


@functools.lru_cache(maxsize=4)
def _sphere(radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit-sphere normals (+y up) on a (2r+1)² grid, NaN outside, and the inside mask."""
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1].astype(np.float32) / radius
    inside = xx * xx + yy * yy <= 1.0
    sphere = np.dstack([xx, -yy, np.sqrt(np.clip(1.0 - xx * xx - yy * yy, 0.0, 1.0))])
    sphere[~inside] = np.nan
    return sphere, inside


def draw_light_gizmo(image: np.ndarray, light: np.ndarray, radius: int = 28) -> None:
    """A small shaded sphere in the bottom-right corner: where the light comes from."""
    height, width = image.shape[:2]
    cx, cy = width - radius - 10, height - radius - 10
    if cx < radius or cy < radius:
        return
    sphere, inside = _sphere(radius)
    roi = image[cy - radius:cy + radius + 1, cx - radius:cx + radius + 1]
    np.copyto(roi, shade_bgr(sphere, light), where=inside[..., None])


# ---------------------------------------------------------------------------------------------- HUD


def hud_lines(result: FrameResult, fps: float, backend: str, dropped: int, network_ms: float = 0.0) -> list[str]:
    """The HUD text: throughput, faces, per-stage milliseconds of this frame, end-to-end latency (and, with deferred
    keyframes, the last keyframe's network time, which ran after its frame)."""
    timings = result.frame.timings
    stages = " ".join(f"{name} {ms:.1f}" for name, ms in timings.items()
                      if name != "total" and not name.startswith("wait_"))  # queue waits: in the benchmark
    lines = [f"{fps:5.1f} FPS  faces {len(result.faces)}  {backend}  dropped {dropped}"]
    if stages:
        lines.append(f"ms: {stages}")
    if "total" in timings:
        after = f"  (keyframe network after its frame {network_ms:.1f} ms)" if network_ms > 0 else ""
        lines.append(f"end-to-end {timings['total']:.1f} ms{after}")
    return lines


HUD_FONT = cv2.FONT_HERSHEY_SIMPLEX
HUD_MARGIN_PX = 8


def hud_scale(width: int, lines: list[str]) -> float:
    """The HUD's font scale: grows with the image width, and shrinks further so the widest line fits (a phone's
    portrait clip is narrow)."""
    scale = max(0.4, min(0.7, width / 1100.0))
    widest = max((cv2.getTextSize(text, HUD_FONT, 1.0, 1)[0][0] for text in lines), default=0)
    if widest > 0:
        scale = min(scale, 0.9 * (width - 2 * HUD_MARGIN_PX) / widest)  # glyphs do not scale exactly linearly
    return max(scale, 0.2)


def draw_hud(image: np.ndarray, lines: list[str]) -> np.ndarray:
    """Text lines at the top-left on a dark band, scaled to the image width."""
    scale = hud_scale(image.shape[1], lines)
    line_h = int(26 * scale / 0.6)
    band = image[: line_h * len(lines) + 8, : min(image.shape[1], int(720 * scale / 0.6))]
    band //= 3  # darken in place: cheaper than a blended rectangle
    for i, text in enumerate(lines):
        cv2.putText(image, text, (HUD_MARGIN_PX, line_h * (i + 1)), HUD_FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return image


class FrameRenderer:
    """The pipeline's renderer: the current view of ``state`` (switchable while running) plus the HUD."""

    def __init__(self, state: RenderState, backend_name: str = "") -> None:
        self.state, self.backend_name = state, backend_name
        get_view(state.view)  # fail before the first frame on an unknown view

    def __call__(self, result: FrameResult, stats: LoopStats) -> np.ndarray:
        image = get_view(self.state.view)(result, self.state)
        if self.state.show_hud:
            draw_hud(image, hud_lines(result, stats.fps, self.backend_name, stats.dropped, stats.network_ms))
        return image
