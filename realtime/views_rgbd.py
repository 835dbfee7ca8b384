"""The RGB-D ``fusion`` view: raw depth shading | normal-mapped shading | refined depth shading, side by side.

* left: the sensor's depth lit with its own normals (cross products of back-projected neighbours);
* middle: the same depth lit with the network's normals inside each face (normal mapping);
* right: the depth refined by the fusion stage (:mod:`facenormals.fusion_stage`) lit with its own normals.

The view only draws: the solve runs in the fusion stage, on the loop's infer thread (``Pipeline(..., fusion=)``,
which ``facenormals run --view fusion`` turns on), keyed by the face's track id; :func:`render_rgbd_views` draws a
frame and its :class:`~facenormals.fusion_stage.FrameFusion`. Fallbacks, shown as text on the image rather than
raised: a frame without usable depth shows the colour frame with the reason; a face whose crop has too little valid
depth is shown normal-mapped in the right panel.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from facenormals.depth import normals_from_depth
from facenormals.frame import Frame
from facenormals.fusion_stage import FrameFusion
from facenormals.geometry import paste_back
from facenormals.realtime.render import RenderState, register_view
from facenormals.shading import lambert, to_gray_bgr

PANEL_TITLES = ("raw depth", "normal-mapped", "refined depth")
DEFAULT_LIGHT = np.array([-0.35, 0.35, 0.87], dtype=np.float32)


def _label(image: np.ndarray, text: str, row: int = 0) -> None:
    y = 22 + 20 * row
    cv2.putText(image, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)


def _no_depth(frame: Frame, reason: str) -> np.ndarray:
    panel = (cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR) // 2).astype(np.uint8)
    _label(panel, reason)
    return np.hstack([panel, panel, panel])


def render_rgbd_views(frame: Frame, fused: FrameFusion | None, crop_matrices: Sequence[np.ndarray],
                      crop_normals: Sequence[np.ndarray], crop_masks: Sequence[np.ndarray],
                      light: np.ndarray = DEFAULT_LIGHT) -> np.ndarray:
    """Three panels (H × 3W BGR uint8) for one frame and its fusion.

    ``crop_normals[i]`` is S×S×3 (or 3×S×S) camera-space normals of face i in its crop, ``crop_masks[i]`` its
    S×S facial mask and ``crop_matrices[i]`` the 2×3 frame → crop affine; ``fused.faces[i]`` its refined depth.
    """
    if fused is None:
        return _no_depth(frame, "no fusion stage ran: use --view fusion")
    if fused.depth_m is None or fused.intrinsics is None:
        return _no_depth(frame, fused.problem or "no depth")
    depth = fused.depth_m
    own, valid = normals_from_depth(depth, fused.intrinsics)
    mapped, refined = own.copy(), own.copy()
    for index, (matrix, normals, mask) in enumerate(zip(crop_matrices, crop_normals, crop_masks, strict=True)):
        normals = np.asarray(normals, dtype=np.float32)
        if normals.shape[0] == 3 and normals.shape[-1] != 3:
            normals = np.ascontiguousarray(normals.transpose(1, 2, 0))
        pasted, ok = paste_back(normals, np.asarray(mask, bool), matrix, depth.shape)
        mapped[ok & valid] = pasted[ok & valid]
        face = fused.faces[index] if index < len(fused.faces) else None
        if face is None:  # too little depth: shown normal-mapped
            refined[ok & valid] = pasted[ok & valid]
            continue
        fused_normals, fused_ok = paste_back(face.normals, face.region & np.any(face.normals != 0, axis=2), face.matrix,
                                             depth.shape)
        refined[fused_ok & valid] = fused_normals[fused_ok & valid]
    panels = [to_gray_bgr(lambert(n, light), valid) for n in (own, mapped, refined)]
    for panel, title in zip(panels, PANEL_TITLES, strict=True):
        _label(panel, title)
    for row, note in enumerate(fused.notes[:3], start=1):
        _label(panels[2], note, row)
    return np.hstack(panels)


@register_view("fusion", fused=True)
def render_fusion(result, state: RenderState) -> np.ndarray:
    """``--view fusion``: the three RGB-D panels for a pipeline ``FrameResult`` (``result.fusion`` from the stage)."""
    crops = result.crops
    normals = result.crop_normals if result.crop_normals is not None else np.zeros((0, 3, 1, 1), np.float32)
    return render_rgbd_views(result.frame, result.fusion, [c.matrix for c in crops], list(normals[: len(crops)]),
                             [c.mask for c in crops], state.light)
