"""``run --save-mesh DIR`` (issue 20): per frame and face, the refined 3-D face and the fitted ICT face as PLY.

``DIR/{name}_face{k}.ply`` is the refined face (the fitted face's depth refined by the frame's normals,
:mod:`facenormals.face3d`) and ``DIR/{name}_face{k}_coarse.ply`` the fitted ICT face alongside; binary PLY with
vertex normals, metres, x right, y up, z toward the camera, origin at the crop centre on the fitted head's depth
(weak perspective: the scale is the ICT model's centimetres). ``name`` is the frame id (6 digits) or the input
file's name; ``k`` the face's index in the frame. Each tracked face is warm-started from its previous frame
(the ICT fit, the refined depth and the normals' bias rotation, moved into this frame's crop).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facenormals import face3d, fusion
from facenormals.engine import FrameResult
from facenormals.ict_fit import IctFit, fit_landmarks, load_ict_face
from facenormals.mesh_prior import crop_points_from_pixels
from facenormals.realtime.sinks import clear_output_folder, frame_number

log = logging.getLogger(__name__)


@dataclass
class _Track:
    fit: IctFit
    matrix: np.ndarray
    depth_m: np.ndarray
    rotation: np.ndarray | None


class MeshSink:
    """Writes the refined and the coarse face mesh of every face of every frame; see the module docstring."""

    def __init__(self, folder: str | Path, *, overwrite: bool = False,
                 name_of: Callable[[FrameResult], str] = frame_number,
                 config: fusion.FusionConfig = face3d.FACE_FUSION, warm: bool = True) -> None:
        self.folder = Path(folder)
        self.replaced = clear_output_folder(self.folder, self.folder, lambda f: sorted(f.glob("*.ply")), "--save-mesh",
                                            "meshes", overwrite)
        self.name_of, self.config, self.warm = name_of, config, warm  # warm: off for unrelated stills
        self.face = load_ict_face()
        self.tracks: dict[int, _Track] = {}
        self.frames = self.meshes = self.skipped = 0
        self.cpu_seconds = 0.0  # fit (where the model gave none) + coarse depth + refinement, all faces

    def write(self, result: FrameResult, image: np.ndarray) -> None:
        if result.crop_normals is None or not result.faces:
            return
        name = self.name_of(result)
        wrote = False
        live = set()
        for k, (detected, crop) in enumerate(zip(result.faces, result.crops, strict=False)):
            start = time.process_time()
            track = self.tracks.get(detected.track_id) if self.warm else None
            fit = result.fits[k] if k < len(result.fits) else None
            if fit is None:
                if detected.depth is None:
                    self.skipped += 1
                    continue
                points = crop_points_from_pixels(detected.landmarks, detected.depth, crop.matrix)
                fit = fit_landmarks(points, self.face, previous=track.fit if track else None)
            normals = np.ascontiguousarray(result.crop_normals[k].transpose(1, 2, 0), dtype=np.float32)
            init = rotation = None
            if track is not None:
                init = fusion.warp_crop(track.depth_m, track.matrix, crop.matrix)
                if track.rotation is not None:
                    rotation = fusion.warp_crop(track.rotation, track.matrix, crop.matrix)
            try:
                out = face3d.face_3d(fit, normals, crop.mask, self.config, init, rotation, self.face)
            except fusion.DepthError as err:
                log.warning("frame %s face %d: no mesh (%s)", name, k, err)
                self.skipped += 1
                continue
            self.cpu_seconds += time.process_time() - start
            self.tracks[detected.track_id] = _Track(fit, np.asarray(crop.matrix), out.refined.depth_m,
                                                    out.refined.bias_rotation)
            live.add(detected.track_id)
            out.mesh.save_ply(self.folder / f"{name}_face{k}.ply")
            out.coarse_mesh.save_ply(self.folder / f"{name}_face{k}_coarse.ply")
            self.meshes += 1
            wrote = True
        self.tracks = {t: v for t, v in self.tracks.items() if t in live}
        self.frames += wrote

    def close(self) -> None:
        pass
