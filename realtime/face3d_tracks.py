"""Per tracked face, a refined 3-D face every frame (issue 20): what ``--save-mesh`` writes and ``--view 3d`` draws.

For each face of a :class:`~facenormals.engine.FrameResult`: the ICT fit (the model's own, else one fitted here to
the landmarks and MediaPipe's depth, warm-started from the track's last fit), the coarse depth and its refinement
by the frame's normals (:func:`facenormals.face3d.face_3d`), warm-started from the same track's detail (refined
minus coarse depth) and bias rotation moved into this frame's crop (unless the crop jumped: a new face under an
old id); a tracked face gets at most ``warm_iterations`` CG iterations a frame (the solve carries on over the
frames: a bounded cost per face). Frames that carry intrinsics (a calibration file, an RGB-D sensor, the sample
clip) are refined on the real camera: metric and in the camera frame; others in weak perspective.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import numpy as np

from facenormals import face3d, fusion, fusion_cg
from facenormals.engine import FrameResult
from facenormals.ict_fit import IctFit, fit_landmarks, load_ict_face
from facenormals.mesh_prior import crop_points_from_pixels

log = logging.getLogger(__name__)


@dataclass
class _Track:
    fit: IctFit
    matrix: np.ndarray
    detail_m: np.ndarray  # refined − coarse depth: moved into the next crop, added to the next coarse depth
    rotation: np.ndarray | None


def jumped(before: np.ndarray, after: np.ndarray, size: int, max_shift: float = 0.5, max_zoom: float = 1.4) -> bool:
    """Whether two frame → crop matrices (2×3, scale + translation) are too far apart to be one face moving: the
    crop's centre moved by more than ``max_shift`` of its side, or its side changed by more than ``max_zoom``×."""
    centre = (size - 1) / 2.0
    side_before, side_after = size / before[0, 0], size / after[0, 0]
    shift = np.hypot(*((centre - before[:, 2]) / before[0, 0] - (centre - after[:, 2]) / after[0, 0]))
    zoom = max(side_before, side_after) / min(side_before, side_after)
    return bool(shift > max_shift * side_before or zoom > max_zoom)


class FaceTracks3D:
    """``update(result)`` → ``[(k, Face3D)]`` for the faces of one frame that got a 3-D face; see the module docstring.

    ``warm``: off for unrelated stills (an image folder). ``mesh_step`` and ``with_coarse_mesh``: as in
    :func:`facenormals.face3d.face_3d`. Counters: ``faces`` refined, ``skipped`` (no fit possible or an empty
    region), ``cpu_seconds`` (fit where the model gave none + coarse depth + refinement + meshes, all faces).
    """

    def __init__(self, config: fusion.FusionConfig = face3d.FACE_FUSION, warm: bool = True, mesh_step: int = 1,
                 with_coarse_mesh: bool = True, warm_iterations: int = face3d.WARM_MAX_ITERATIONS) -> None:
        self.config, self.warm, self.mesh_step, self.with_coarse_mesh = config, warm, mesh_step, with_coarse_mesh
        self.warm_config = replace(config, max_iterations=min(warm_iterations, config.max_iterations))
        self.face = load_ict_face()
        self.tracks: dict[int, _Track] = {}
        self.faces = self.skipped = 0
        self.cpu_seconds = 0.0
        fusion_cg.compile_kernels()  # the CPU solver's numba kernels: compiled (or loaded) now, not on the first face

    def update(self, result: FrameResult, name: str = "") -> list[tuple[int, face3d.Face3D]]:
        if result.crop_normals is None or not result.faces:
            self.tracks = {}
            return []
        camera = result.frame.intrinsics
        out, live = [], {}
        for k, (detected, crop) in enumerate(zip(result.faces, result.crops, strict=False)):
            start = time.process_time()
            track = self.tracks.get(detected.track_id) if self.warm else None
            if track is not None and jumped(track.matrix, np.asarray(crop.matrix), result.crop_normals.shape[-1]):
                track = None  # a new face under an old id (a cut, a swap, another photo): start cold
            fit = result.fits[k] if k < len(result.fits) else None
            if fit is None:
                if detected.depth is None:
                    self.skipped += 1
                    continue
                points = crop_points_from_pixels(detected.landmarks, detected.depth, crop.matrix)
                fit = fit_landmarks(points, self.face, previous=track.fit if track else None)
            normals = np.ascontiguousarray(result.crop_normals[k].transpose(1, 2, 0), dtype=np.float32)
            size = normals.shape[0]
            intrinsics = None if camera is None else fusion.crop_intrinsics(camera, crop.matrix, size)
            detail = rotation = None
            if track is not None:
                detail = fusion.warp_crop(track.detail_m, track.matrix, crop.matrix)
                if track.rotation is not None:
                    rotation = fusion.warp_crop(track.rotation, track.matrix, crop.matrix)
            try:
                config = self.config if detail is None else self.warm_config
                face = face3d.face_3d(fit, normals, crop.mask, config, None, rotation, self.face, intrinsics,
                                      self.mesh_step, self.with_coarse_mesh, init_detail=detail)
            except fusion.DepthError as err:
                log.warning("frame %s face %d: no 3-D face (%s)", name or result.frame.id, k, err)
                self.skipped += 1
                continue
            self.cpu_seconds += time.process_time() - start
            live[detected.track_id] = _Track(fit, np.asarray(crop.matrix), face.detail_m, face.refined.bias_rotation)
            self.faces += 1
            out.append((k, face))
        self.tracks = live  # a face that left takes its warm start with it
        return out
