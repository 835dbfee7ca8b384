"""``--view 3d`` (issue 20): the camera frame | each face's refined 3-D mesh, lit by the movable light, turnable.

Right panel: per face (side by side), the refined face of :class:`facenormals.realtime.face3d_tracks.FaceTracks3D`
(the fitted ICT face's depth refined by the frame's normals; a grid mesh of every 2nd crop pixel) drawn with the
mesh prior's orthographic z-buffer (:func:`facenormals.mesh_prior.rasterize_mesh`, numba; no GPU, no display),
Lambert-shaded under the view's light (``RenderState.light``: w/a/s/d, or a left-button drag). The mesh turns
with j/l/i/k or a right-button drag (``RenderState.turn``); until the user turns it, it swings slowly by itself,
one swing every :data:`AUTO_PERIOD_FRAMES` frames (so a headless run's video shows the face from the side).
The scale is metric: the panel spans :data:`SPAN_M` at every face, so a head looks a head's size.
"""

from __future__ import annotations

import math
import time

import cv2
import numpy as np

from facenormals import face3d
from facenormals.engine import FrameResult
from facenormals.mesh_prior import rasterize_mesh
from facenormals.realtime.face3d_tracks import FaceTracks3D
from facenormals.realtime.render import RenderState, register_view, shade_bgr

AUTO_SWING_DEG = 35.0          # the automatic turn's amplitude about the vertical
AUTO_PERIOD_FRAMES = 240       # one swing back and forth: 8 s at 30 FPS
SPAN_M = 0.30                  # metres across a face's square slot
MESH_STEP = 2                  # every 2nd crop pixel: ~12 000 vertices for a 256² crop, ~4× less work than all
BACKGROUND_BGR = (40, 40, 40)
PANEL_TITLE = "refined 3-D face"


def turn_matrix(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """Rotation (3×3) turning a mesh by ``yaw`` about +y (positive: its image-right side away from the viewer),
    then ``pitch`` about +x (positive: its top toward the viewer).

    >>> turn_matrix(0.0, 0.0).tolist() == np.eye(3).tolist()
    True
    """
    a, b = math.radians(yaw_deg), math.radians(pitch_deg)
    yaw = np.array([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]])
    pitch = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(b), -math.sin(b)], [0.0, math.sin(b), math.cos(b)]])
    return pitch @ yaw


def view_angles(state: RenderState, frame_id: int) -> tuple[float, float]:
    """The user's turn, or the automatic swing at this frame (deterministic: by frame id, not by clock)."""
    if state.turn is not None:
        return state.turn
    return AUTO_SWING_DEG * math.sin(2.0 * math.pi * frame_id / AUTO_PERIOD_FRAMES), 0.0


def render_mesh(mesh: face3d.Mesh, rotation: np.ndarray, light: np.ndarray, size: int,
                span_m: float = SPAN_M) -> tuple[np.ndarray, np.ndarray]:
    """A metric mesh turned by ``rotation`` about its median point, orthographic, ``span_m`` across ``size`` px:
    (BGR uint8 size×size, Lambert under ``light`` with the relit view's plaster albedo; coverage bool)."""
    centre = np.median(mesh.vertices, axis=0)
    points = (mesh.vertices.astype(np.float64) - centre) @ rotation.T * (size / span_m)
    points[:, 0] += (size - 1) / 2.0  # crop frame of the rasteriser: x right, y up with row = -y
    points[:, 1] -= (size - 1) / 2.0
    normals, coverage, _ = rasterize_mesh(points, mesh.faces, size)
    image = np.empty((size, size, 3), np.uint8)
    image[:] = BACKGROUND_BGR
    rows, cols = np.flatnonzero(coverage.any(axis=1)), np.flatnonzero(coverage.any(axis=0))
    if rows.size:  # shade the face's bounding box only: a face is a third of the slot
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        np.copyto(image[box], shade_bgr(normals[box], np.asarray(light, np.float32)), where=coverage[box][..., None])
    return image, coverage


def _label(image: np.ndarray, text: str, row: int) -> None:
    """A text line counted from the panel's bottom (the HUD covers the top-left of the whole image)."""
    y = image.shape[0] - 10 - 18 * row
    cv2.putText(image, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)


def draw_3d_panel(panel: np.ndarray, faces: list[face3d.Face3D], rotation: np.ndarray, light: np.ndarray) -> None:
    """Each face's refined mesh in its own square slot of ``panel`` (H×W BGR, filled in place), left to right."""
    height, width = panel.shape[:2]
    panel[:] = BACKGROUND_BGR
    if not faces:
        return
    slot = width // len(faces)
    size = max(16, min(height, slot))
    for i, face in enumerate(faces):
        image, _ = render_mesh(face.mesh, rotation, light, size)
        x0, y0 = i * slot + (slot - size) // 2, (height - size) // 2
        panel[y0:y0 + size, x0:x0 + size] = image


class View3D:
    """The view's memory between frames: the tracked faces' warm starts and the last frame's cost."""

    def __init__(self) -> None:
        self.tracks = FaceTracks3D(mesh_step=MESH_STEP, with_coarse_mesh=False)
        self.last_ms = 0.0

    def draw(self, result: FrameResult, state: RenderState, panel: np.ndarray) -> None:
        start = time.perf_counter()
        faces = [face for _, face in self.tracks.update(result)]
        yaw, pitch = view_angles(state, result.frame.id)
        draw_3d_panel(panel, faces, turn_matrix(yaw, pitch), state.light)
        self.last_ms = 1000.0 * (time.perf_counter() - start)
        _label(panel, PANEL_TITLE if faces else f"{PANEL_TITLE}: no face", 2)
        if faces:
            frame = (f"calibrated, {faces[0].coarse.distance_m:.2f} m" if faces[0].coarse.calibrated
                     else "weak perspective")
            _label(panel, f"{frame}; yaw {yaw:+.0f} pitch {pitch:+.0f}; {self.last_ms:.0f} ms", 1)
        turn = "auto turn; j/l/i/k or right-drag: turn" if state.turn is None else "j/l/i/k or right-drag: turn"
        _label(panel, f"{turn}; w/a/s/d or left-drag: light", 0)


@register_view("3d")
def render_3d(result: FrameResult, state: RenderState) -> np.ndarray:
    """``--view 3d``: the camera frame (left) and the faces' refined 3-D meshes (right), H × 2W BGR uint8."""
    height, width = result.frame.rgb.shape[:2]
    out = state.buffer("3d", (height, 2 * width, 3))
    cv2.cvtColor(result.frame.rgb, cv2.COLOR_RGB2BGR, dst=out[:, :width])
    view = state.memory.get("3d")
    if not isinstance(view, View3D):
        view = state.memory["3d"] = View3D()
    view.draw(result, state, out[:, width:])
    return out
