"""``run --save-mesh DIR`` (issue 20): per frame and face, the refined 3-D face and the fitted ICT face as PLY.

``DIR/{name}_face{k}.ply`` is the refined face (the fitted face's depth refined by the frame's normals,
:mod:`facenormals.face3d`) and ``DIR/{name}_face{k}_coarse.ply`` the fitted ICT face alongside; binary PLY with
vertex normals, metres, x right, y up, z toward the camera. Frames with intrinsics (``--calibration``, an RGB-D
sensor, the sample clip): the camera frame, the head's distance from the focal length; others: weak perspective
(the scale is the ICT model's centimetres), origin at the crop centre on the fitted head's depth. ``name`` is the
frame id (6 digits) or the input file's name; ``k`` the face's index in the frame. Each tracked face is
warm-started from its previous frame (:class:`facenormals.realtime.face3d_tracks.FaceTracks3D`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from facenormals import face3d, fusion
from facenormals.engine import FrameResult
from facenormals.realtime.face3d_tracks import FaceTracks3D
from facenormals.realtime.sinks import clear_output_folder, frame_number


class MeshSink:
    """Writes the refined and the coarse face mesh of every face of every frame; see the module docstring."""

    def __init__(self, folder: str | Path, *, overwrite: bool = False,
                 name_of: Callable[[FrameResult], str] = frame_number,
                 config: fusion.FusionConfig = face3d.FACE_FUSION, warm: bool = True) -> None:
        self.folder = Path(folder)
        self.replaced = clear_output_folder(self.folder, self.folder, lambda f: sorted(f.glob("*.ply")), "--save-mesh",
                                            "meshes", overwrite)
        self.name_of = name_of
        self.tracks = FaceTracks3D(config, warm=warm)  # warm: off for unrelated stills
        self.frames = self.meshes = 0

    @property
    def skipped(self) -> int:
        return self.tracks.skipped

    @property
    def cpu_seconds(self) -> float:
        """Fit (where the model gave none) + coarse depth + refinement + meshes, all faces."""
        return self.tracks.cpu_seconds

    def write(self, result: FrameResult, image: np.ndarray) -> None:
        name = self.name_of(result)
        faces = self.tracks.update(result, name)
        for k, face in faces:
            face.mesh.save_ply(self.folder / f"{name}_face{k}.ply")
            face.coarse_mesh.save_ply(self.folder / f"{name}_face{k}_coarse.ply")
        self.meshes += len(faces)
        self.frames += bool(faces)

    def close(self) -> None:
        pass
