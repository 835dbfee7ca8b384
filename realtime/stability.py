"""Temporal stability of the pipeline's output, measured while it runs (``facenormals bench``'s ``stability`` block
and ``benchmarks/stability.py``).

:class:`StabilityProbe` sees every finished frame (``Pipeline(on_result=...)``) and keeps each face's crop-space
normals (every second pixel, float16), crop matrix, mask and raw landmarks; the figures are computed at the end,
off the timed loop:

* any source: the frame-to-frame change in landmark-aligned crop space (the previous output moved into the current
  crop by the landmark similarity, its normals' x/y rotated with it), beside the landmark motion (rigid and
  non-rigid, ‰ of the face size per frame), so real motion can be told from flicker;
* the embedded ``sample`` (``photo_of``: frame id → the known photo → frame matrix): every output mapped back onto
  the photo (the known 2-D transform undone, the normals' x/y rotated back), then the deviation of each pixel from
  its temporal median and the frame-to-frame change there. Both are 0 for a system that follows the truth.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from facenormals.engine import FrameResult
from facenormals.stability import deviation_from_median, frame_to_frame, pair_change, summarise
from facenormals.temporal import align_previous, compose, landmark_motion, rotate_normals_xy, warp_normals

PHOTO_WINDOW = (150, 50, 160, 190)  # x0, y0, width, height in the 512² sample photo: the face and a margin
STRIDE = 2  # crop pixels kept per axis (every second: 128² of a 256² crop)


def to_photo(normals_chw: np.ndarray, mask: np.ndarray, crop_matrix: np.ndarray, photo_to_frame: np.ndarray,
             window: tuple[int, int, int, int] = PHOTO_WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """Crop-space normals (3×s×s, ``crop_matrix`` frame → crop) mapped onto the sample photo's ``window``: the known
    photo → frame transform undone, the normals' x/y rotated back. Returns (h×w×3 unit normals, valid h×w)."""
    x0, y0, width, height = window
    window_to_crop = compose(crop_matrix, photo_to_frame, np.array([[1.0, 0, x0], [0, 1.0, y0]]))
    normals = warp_normals(normals_chw.astype(np.float32), window_to_crop, (height, width))
    inside = cv2.warpAffine(mask.astype(np.float32), window_to_crop, (width, height),
                            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    normals = rotate_normals_xy(normals, cv2.invertAffineTransform(photo_to_frame)[:, :2]).transpose(1, 2, 0)
    length = np.linalg.norm(normals, axis=2)
    valid = (inside > 0.99) & (length > 0.5)
    return normals / np.maximum(length, 1e-6)[..., None], valid


@dataclass
class _Sample:
    frame_id: int
    normals: np.ndarray  # float16 3×s×s (strided)
    mask: np.ndarray
    matrix: np.ndarray  # frame → strided crop
    landmarks: np.ndarray  # raw, frame pixels


class StabilityProbe:
    """Collects the output of every frame after ``warmup``; :meth:`summary` gives the figures (see the module)."""

    def __init__(self, warmup: int = 0, photo_of: Callable[[int], np.ndarray] | None = None,
                 limit: int = 2000) -> None:
        self.warmup, self.photo_of, self.limit = warmup, photo_of, limit
        self.tracks: dict[int, list[_Sample]] = defaultdict(list)

    def __call__(self, result: FrameResult) -> None:
        if result.frame.id < self.warmup or result.crop_normals is None:
            return
        scale = np.diag([1.0 / STRIDE, 1.0 / STRIDE])
        for face, crop, normals in zip(result.faces, result.crops, result.crop_normals, strict=False):
            samples = self.tracks[face.track_id]
            if len(samples) < self.limit:
                samples.append(_Sample(result.frame.id, normals[:, ::STRIDE, ::STRIDE].astype(np.float16),
                                       crop.mask[::STRIDE, ::STRIDE].copy(), scale @ crop.matrix,
                                       np.asarray(face.raw_landmarks, dtype=np.float32)))

    # -- figures ------------------------------------------------------------------------------------------
    def aligned_changes(self) -> tuple[list[int], list[float], list[float], list[float]]:
        """Per consecutive pair (any track): (frame id, change °, rigid ‰, non-rigid ‰ of the face size)."""
        ids, change, rigid, nonrigid = [], [], [], []
        for samples in self.tracks.values():
            for prev, cur in itertools.pairwise(samples):
                if cur.frame_id - prev.frame_id != 1:
                    continue
                aligned, motion = align_previous(prev.normals.astype(np.float32), prev.matrix, prev.landmarks,
                                                 cur.matrix, cur.landmarks)
                inside, _ = align_previous(prev.mask[None].astype(np.float32), prev.matrix, prev.landmarks,
                                           cur.matrix, cur.landmarks, vectors=False)
                aligned = aligned.transpose(1, 2, 0)
                valid = (inside[0] > 0.99) & (np.linalg.norm(aligned, axis=2) > 0.5)
                r, n = landmark_motion(prev.landmarks, cur.landmarks, motion)
                ids.append(cur.frame_id)
                change.append(pair_change(aligned, cur.normals.astype(np.float32).transpose(1, 2, 0), valid, cur.mask))
                rigid.append(1000.0 * r)
                nonrigid.append(1000.0 * n)
        return ids, change, rigid, nonrigid

    def photo_maps(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The first track's outputs on the photo: (frame ids T, normals T×h×w×3, valid T×h×w)."""
        if self.photo_of is None or not self.tracks:
            raise ValueError("photo maps need photo_of and at least one face")
        samples = max(self.tracks.values(), key=len)
        maps = [to_photo(s.normals, s.mask, s.matrix, self.photo_of(s.frame_id)) for s in samples]
        return (np.array([s.frame_id for s in samples]), np.stack([m[0] for m in maps]), np.stack([m[1] for m in maps]))

    def summary(self, per_frame: bool = True) -> dict:
        ids, change, rigid, nonrigid = self.aligned_changes()
        out: dict = {
            "unit": "degrees; landmark motion in permille of the face size per frame",
            "aligned_frame_to_frame_deg": summarise(np.array(change)),
            "landmark_motion_rigid": summarise(np.array(rigid)),
            "landmark_motion_nonrigid": summarise(np.array(nonrigid)),
        }
        if self.photo_of is not None and self.tracks:
            photo_ids, normals, valid = self.photo_maps()
            deviation, _ = deviation_from_median(normals, valid)
            out["photo"] = {"deviation_from_median_deg": summarise(deviation),
                            "frame_to_frame_deg": summarise(frame_to_frame(normals, valid, photo_ids)),
                            "frames": len(photo_ids)}
            if per_frame:
                out["photo"]["per_frame"] = {"id": photo_ids.tolist(), "deviation_deg": np.round(deviation, 3).tolist()}
        if per_frame:
            out["per_frame"] = {"id": ids, "aligned_change_deg": np.round(change, 3).tolist(),
                                "rigid_permille": np.round(rigid, 2).tolist(),
                                "nonrigid_permille": np.round(nonrigid, 2).tolist()}
        return out


def sample_photo_of(width: int, height: int, fps: float, cycle: int | None = None) -> Callable[[int], np.ndarray]:
    """Frame id → photo → frame matrix of the embedded sample (``cycle``: ids replayed modulo that many frames)."""
    from facenormals.realtime.sources.sample import frame_from_photo_matrix, sample_pose

    def photo_of(frame_id: int) -> np.ndarray:
        index = frame_id % cycle if cycle else frame_id
        return frame_from_photo_matrix(sample_pose(index, fps), width, height)

    return photo_of
