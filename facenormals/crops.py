"""Faces of one frame → one network batch, and the network's normals → back into the frame.

Crops come from :func:`facenormals.geometry.face_crop` (the paper's 1.2× square, hull mask) and go
into one N×3×S×S float32 batch, RGB in [0, 1]. Batches are written into a small ring of preallocated
buffers: the pipeline has at most a few batches in flight, so no per-frame allocation is needed.

Pasting back uses :func:`facenormals.geometry.paste_back` on the bounding region of the crop's mask only (a
translated crop matrix), not on the whole frame: the work scales with the face, not the frame.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from facenormals.faces import Face
from facenormals.geometry import Crop, box_crop, face_crop, invert_affine, paste_back, transform_points
from facenormals.ict_fit import IctFit
from facenormals.prior import prior_input

_INV_255 = np.float32(1.0 / 255.0)


@dataclass(frozen=True)
class FaceBatch:
    """The network input for one frame: ``inputs`` N×C×S×S (N = number of faces, may be 0; C = 3, or 7 with a
    coarse-face prior) and each face's crop and ICT fit (None unless the prior fits ICT: ``ict-fit``, ``ict-blend``)."""

    inputs: np.ndarray
    crops: tuple[Crop, ...]
    fits: tuple[IctFit | None, ...] = ()
    reuse: tuple[int | None, ...] = ()  # per face: the keyframe id whose output it reuses (its input row is not
    #                                     filled), None: inferred; empty: every face inferred (facenormals.reuse)


@dataclass(frozen=True)
class PastedNormals:
    """One face's normals pasted into the frame region ``[y0:y1, x0:x1]``.

    ``normals`` float32 h×w×3 (unit inside ``valid``, NaN outside), ``valid`` bool h×w.
    """

    x0: int
    y0: int
    normals: np.ndarray
    valid: np.ndarray

    @property
    def region(self) -> tuple[slice, slice]:
        height, width = self.valid.shape
        return slice(self.y0, self.y0 + height), slice(self.x0, self.x0 + width)


class CropBatcher:
    """Crops all faces of a frame into one batch; buffers are reused round-robin.

    With ``prior`` (a prior model's source, 7 input channels; :mod:`facenormals.prior`) each crop also gets
    the coarse face's normals extended to the crop and its coverage; a face without depth (a detector face,
    ``Face.source == "detector"``, cropped on its detection's square) gets zeros. With
    ``warm_start`` (video: track ids follow a face), ICT fits warm-start from the same track's previous fit
    (``fits``, by track id); independent images start every fit afresh.
    """

    def __init__(self, size: int, max_faces: int, ring: int = 6, prior: str | None = None,
                 warm_start: bool = True) -> None:
        if size < 16 or max_faces < 1 or ring < 2:
            raise ValueError(f"invalid batcher size={size}, max_faces={max_faces}, ring={ring}")
        self.size = size
        self.prior = prior
        self.warm_start = warm_start
        self.fits: dict[int, IctFit] = {}
        chans = 7 if prior else 3
        self._buffers = [np.empty((max_faces, chans, size, size), dtype=np.float32) for _ in range(ring)]
        self._next = 0

    def __call__(self, rgb: np.ndarray, faces: list[Face],
                 reuse: Callable[[Face, Crop], int | None] | None = None) -> FaceBatch:
        """``reuse(face, crop)``: the keyframe id a face reuses instead of being inferred, or None (infer it); a
        reused face's input row (crop pixels, prior) is left unfilled."""
        buffer = self._buffers[self._next]
        self._next = (self._next + 1) % len(self._buffers)
        faces = faces[: len(buffer)]
        crops, fits, keys = [], [], []
        for i, face in enumerate(faces):
            crop = face_crop(rgb, face.landmarks, size=self.size) if face.source == "mesh" else \
                box_crop(rgb, face.box, face.landmarks, self.size)  # a detector face: its detection's square
            key = reuse(face, crop) if reuse is not None else None
            crops.append(crop)
            keys.append(key)
            fits.append(self.fill(buffer[i], face, crop) if key is None else None)
        return FaceBatch(buffer[: len(crops)], tuple(crops), tuple(fits), tuple(keys) if reuse is not None else ())

    def fill(self, row: np.ndarray, face: Face, crop: Crop) -> IctFit | None:
        """One face's network input (C×S×S ``row``: crop pixels, and the prior of a prior model); its ICT fit."""
        np.multiply(crop.image.transpose(2, 0, 1), _INV_255, out=row[:3], casting="unsafe")
        if self.prior is None:
            return None
        previous = self.fits.get(face.track_id) if self.warm_start else None
        _, fit = prior_input(face.landmarks, face.depth, crop.matrix, self.size, self.prior, out=row[3:],
                             previous=previous)
        if self.warm_start:
            self._remember(face.track_id, fit)
        return fit

    def _remember(self, track_id: int, fit: IctFit | None) -> None:
        if fit is None:
            self.fits.pop(track_id, None)
            return
        self.fits[track_id] = fit
        while len(self.fits) > 4 * len(self._buffers[0]):  # tracks come and go: keep the newest
            self.fits.pop(next(iter(self.fits)), None)


def crop_region(crop: Crop, frame_shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """Integer frame rectangle (x0, y0, x1, y1) that holds every pixel the crop's mask can reach, clipped;
    None if the face is outside the frame.

    The mask (the landmark hull) fills only the middle of the 1.2× crop square, so its bounding box, mapped
    back to the frame and padded by the interpolation's reach, is ~1.5× smaller than the square.
    """
    x, y, w, h = cv2.boundingRect(crop.mask.view(np.uint8))
    if w == 0 or h == 0:
        return None
    scale = crop.matrix[0, 0]  # crop pixels per frame pixel (the crop is scale + translation only)
    pad = 1.0 + 1.0 / scale  # bilinear warps reach one crop pixel beyond the mask
    (fx0, fy0), (fx1, fy1) = transform_points(np.array([[x - 0.5, y - 0.5], [x + w - 0.5, y + h - 0.5]]),
                                              invert_affine(crop.matrix))
    height, width = frame_shape
    x0, y0 = max(0, math.floor(fx0 - pad)), max(0, math.floor(fy0 - pad))
    x1, y1 = min(width, math.ceil(fx1 + pad) + 1), min(height, math.ceil(fy1 + pad) + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def paste_face(normals_chw: np.ndarray, crop: Crop, frame_shape: tuple[int, int]) -> PastedNormals | None:
    """One face's 3×S×S normals → its frame region (None when the face lies outside the frame)."""
    region = crop_region(crop, frame_shape)
    if region is None:
        return None
    x0, y0, x1, y1 = region
    # Region pixel p' is frame pixel p' + (x0, y0): shift the crop matrix's translation accordingly.
    matrix = crop.matrix.copy()
    matrix[:, 2] += matrix[:, :2] @ np.array([x0, y0], dtype=np.float64)
    # channel-last for OpenCV's warp: cv2.merge interleaves the three planes ~4× faster than numpy's strided copy
    crop_normals = cv2.merge(tuple(np.asarray(normals_chw, dtype=np.float32)))
    normals, valid = paste_back(crop_normals, crop.mask, matrix, (y1 - y0, x1 - x0))
    return PastedNormals(x0, y0, normals, valid)


def paste_batch(normals: np.ndarray, crops: tuple[Crop, ...], frame_shape: tuple[int, int]) -> list[PastedNormals]:
    """All faces of a frame: ``normals`` N×3×S×S from the backend, in the order of ``crops``."""
    if len(normals) != len(crops):
        raise ValueError(f"backend returned {len(normals)} normal maps for {len(crops)} faces")
    pasted = (paste_face(n, crop, frame_shape) for n, crop in zip(normals, crops, strict=True))
    return [face for face in pasted if face is not None]


def full_normal_map(faces: list[PastedNormals], frame_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Frame-sized (normals H×W×3 float32, zero outside; valid H×W) for saving; later faces win overlaps."""
    normals = np.zeros((*frame_shape, 3), dtype=np.float32)
    valid = np.zeros(frame_shape, dtype=bool)
    for face in faces:
        rows, cols = face.region
        normals[rows, cols][face.valid] = face.normals[face.valid]
        valid[rows, cols] |= face.valid
    return normals, valid
