"""The ``fit`` view: the ICT-FaceKit face fitted to each face's landmarks, shaded under the user's light, with its
head pose — what a prior model is given as its coarse face (:mod:`facenormals.prior`), drawn sharp.

Only models with an ICT prior (``ict-fit``, ``ict-blend``) fit a face; for others (and faces without a fit) the
frame is shown with a note. The fitted face is drawn in each crop with the mesh prior's z-buffer and pasted like the normals.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from facenormals.crops import paste_face
from facenormals.engine import FrameResult
from facenormals.geometry import Crop
from facenormals.ict_fit import IctFit, load_ict_face
from facenormals.mesh_prior import rasterize_mesh_normals
from facenormals.realtime.render import RenderState, draw_light_gizmo, register_view, shade_bgr


def fitted_face_normals(fit: IctFit, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The fitted face's smooth normals and coverage on its size×size crop (sharp: not the prior's smoothing)."""
    face = load_ict_face()
    return rasterize_mesh_normals(fit.crop_points(face), face.triangles, size)


def _label(image: np.ndarray, text: str, origin: tuple[int, int]) -> None:
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)


def _draw_fit(out: np.ndarray, crop: Crop, fit: IctFit, light: np.ndarray) -> None:
    normals, coverage = fitted_face_normals(fit, crop.mask.shape[0])
    pasted = paste_face(normals.transpose(2, 0, 1), dataclasses.replace(crop, mask=coverage), out.shape[:2])
    if pasted is None:
        return
    rows, cols = pasted.region
    np.copyto(out[rows, cols], shade_bgr(pasted.normals, light), where=pasted.valid[..., None])
    yaw, pitch, roll = fit.euler_deg()
    x0, y0, _, _ = crop.box.as_xyxy()
    _label(out, f"yaw {yaw:+.0f} pitch {pitch:+.0f} roll {roll:+.0f}", (max(0, int(x0)), max(14, int(y0) - 6)))


@register_view("fit")
def render_fit(result: FrameResult, state: RenderState) -> np.ndarray:
    """The frame with each face's fitted ICT face drawn over it, lit from the user's light, and its head pose."""
    out = state.buffer("frame", result.frame.rgb.shape)  # reused per frame, as the other views do
    cv2.cvtColor(result.frame.rgb, cv2.COLOR_RGB2BGR, dst=out)
    fitted = [(crop, fit) for crop, fit in zip(result.crops, result.fits, strict=False) if fit is not None]
    for crop, fit in fitted:
        _draw_fit(out, crop, fit, state.light)
    if result.crops and not fitted:
        _label(out, "no fitted face: the model does not use an ICT prior", (8, 22))
    draw_light_gizmo(out, state.light)
    return out
