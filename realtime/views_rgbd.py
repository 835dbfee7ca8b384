"""The RGB-D ``fusion`` view: raw depth shading | normal-mapped shading | refined depth shading, side by side.

* left: the sensor's depth lit with its own normals (cross products of back-projected neighbours);
* middle: the same depth lit with the network's normals inside each face (normal mapping);
* right: the depth refined by position + normal fusion (:mod:`facenormals.fusion`) lit with its own normals.

:func:`render_rgbd_views` is self-contained (a frame with depth and intrinsics, each face's crop matrix,
crop-space normals and mask → BGR uint8); the ``fusion`` view adapts the pipeline's ``FrameResult`` to it.
Fallbacks, shown as text on the image rather than raised: a frame without depth or intrinsics shows the
colour frame; a face whose crop has too little valid depth is shown normal-mapped in the right panel.
All faces of a frame are solved together (one batched CG, on CUDA when available). Each face's refined depth is
kept (with its crop matrix) to warm-start the solver on the next frame, and its bias rotation is reused for
``REFRESH_BIAS_EVERY`` frames.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from facenormals.depth import DepthError, check_matches, depth_to_metres, normals_from_depth
from facenormals.frame import Frame
from facenormals.fusion import FusionConfig, PreparedCrop, crop_depth, crop_intrinsics, fuse_many, prepare, warp_crop
from facenormals.geometry import paste_back
from facenormals.shading import lambert, to_gray_bgr

PANEL_TITLES = ("raw depth", "normal-mapped", "refined depth")
DEFAULT_LIGHT = np.array([-0.35, 0.35, 0.87], dtype=np.float32)
SOLVER_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
REFRESH_BIAS_EVERY = 10  # frames between measurements of the normals' low-frequency bias (it drifts slowly)


def _label(image: np.ndarray, text: str, row: int = 0) -> None:
    y = 22 + 20 * row
    cv2.putText(image, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)


def _no_depth(frame: Frame, reason: str) -> np.ndarray:
    panel = (cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR) // 2).astype(np.uint8)
    _label(panel, reason)
    return np.hstack([panel, panel, panel])


def render_rgbd_views(frame: Frame, crop_matrices: Sequence[np.ndarray], crop_normals: Sequence[np.ndarray],
                      crop_masks: Sequence[np.ndarray], light: np.ndarray = DEFAULT_LIGHT,
                      memory: dict[str, np.ndarray] | None = None, config: FusionConfig | None = None) -> np.ndarray:
    """Three panels (H × 3W BGR uint8) for one frame.

    ``crop_normals[i]`` is S×S×3 (or 3×S×S) camera-space normals of face i in its crop, ``crop_masks[i]`` its
    S×S facial mask and ``crop_matrices[i]`` the 2×3 frame → crop affine. ``memory`` (any dict kept between
    frames) holds the warm starts.
    """
    if frame.depth is None or frame.intrinsics is None:
        return _no_depth(frame, "no depth: use an RGB-D source (e.g. --source realsense:FILE)")
    try:
        depth = depth_to_metres(frame.depth, frame.depth_scale_m)
        check_matches(depth, frame.intrinsics, "depth")
    except DepthError as err:
        return _no_depth(frame, f"depth unusable: {err}")
    if depth.shape != frame.rgb.shape[:2]:
        return _no_depth(frame, "depth is not aligned to the colour image")
    light = np.asarray(light, dtype=np.float32)
    config = config or FusionConfig()
    own, valid = normals_from_depth(depth, frame.intrinsics)
    mapped, refined = own.copy(), own.copy()
    notes: list[str] = []
    memory = {} if memory is None else memory
    prepared: list[tuple[int, np.ndarray, PreparedCrop, bool]] = []
    for index, (matrix, normals, mask) in enumerate(zip(crop_matrices, crop_normals, crop_masks, strict=True)):
        normals = np.asarray(normals, dtype=np.float32)
        if normals.shape[0] == 3 and normals.shape[-1] != 3:
            normals = np.ascontiguousarray(normals.transpose(1, 2, 0))
        size = normals.shape[0]
        mask = np.asarray(mask, bool)
        pasted, ok = paste_back(normals, mask, matrix, depth.shape)
        mapped[ok & valid] = pasted[ok & valid]
        init = rotation = None
        key = f"fusion:{index}"
        if f"{key}:depth" in memory:
            init = warp_crop(memory[f"{key}:depth"], memory[f"{key}:matrix"], matrix)
            if f"{key}:rotation" in memory and memory.get(f"{key}:age", np.zeros(1))[0] < REFRESH_BIAS_EVERY:
                rotation = warp_crop(memory[f"{key}:rotation"], memory[f"{key}:matrix"], matrix)
        # the aligned depth has one measurement per frame pixel: that is matrix[0, 0] crop pixels wide
        face_config = dataclasses.replace(config, depth_pixel_px=max(config.depth_pixel_px, float(matrix[0][0])))
        try:
            crop = prepare(crop_depth(depth, matrix, size), normals, mask, crop_intrinsics(frame.intrinsics, matrix, size),
                           face_config, init=init, rotation=rotation)
        except DepthError as err:
            notes.append(f"face {index}: {err}")
            refined[ok & valid] = pasted[ok & valid]
            memory.pop(f"{key}:depth", None)
            continue
        prepared.append((index, np.asarray(matrix, np.float64), crop, rotation is not None))
    # all faces in one solve: a batched CG on CUDA when there is one
    results = fuse_many([crop for _, _, crop, _ in prepared], config, SOLVER_DEVICE)
    for (index, matrix, _, reused), result in zip(prepared, results, strict=True):
        key = f"fusion:{index}"
        memory[f"{key}:depth"], memory[f"{key}:matrix"] = result.depth_m, matrix
        if result.bias_rotation is not None:  # re-measured every REFRESH_BIAS_EVERY frames, reused in between
            age = memory.get(f"{key}:age", np.zeros(1))[0] + 1 if reused else 0
            memory[f"{key}:rotation"], memory[f"{key}:age"] = result.bias_rotation, np.array([age])
        fused, fused_ok = paste_back(result.normals, result.region & np.any(result.normals != 0, axis=2), matrix,
                                     depth.shape)
        refined[fused_ok & valid] = fused[fused_ok & valid]
        notes.append(f"face {index}: {result.solver} {result.iterations} it, {result.seconds * 1000:.0f} ms")
    panels = [to_gray_bgr(lambert(n, light), valid) for n in (own, mapped, refined)]
    for panel, title in zip(panels, PANEL_TITLES, strict=True):
        _label(panel, title)
    for row, note in enumerate(notes[:3], start=1):
        _label(panels[2], note, row)
    return np.hstack(panels)


try:  # the pipeline's view registry (realtime/render.py); the function above works without it
    from facenormals.realtime.render import RenderState, register_view

    @register_view("fusion")
    def render_fusion(result, state: RenderState) -> np.ndarray:
        """``--view fusion``: the three RGB-D panels for a pipeline ``FrameResult``."""
        crops = result.crops
        normals = result.crop_normals if result.crop_normals is not None else np.zeros((0, 3, 1, 1), np.float32)
        return render_rgbd_views(result.frame, [c.matrix for c in crops], list(normals[: len(crops)]),
                                 [c.mask for c in crops], state.light, state.cache)
except ImportError:  # pragma: no cover - render.py absent in a partial install
    pass
