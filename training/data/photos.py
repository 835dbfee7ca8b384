"""Real photos and videos → image-only samples: MediaPipe face mesh, the paper's crop, the landmark-hull mask.

The landmarks, crop and mask are exactly the realtime path's (:class:`facenormals.faces.FaceMesh`, its pixel
convention and :func:`facenormals.geometry.face_crop` on the 478 points).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facenormals.faces import FaceMesh
from facenormals.fileio import DataError, read_rgb
from facenormals.geometry import face_crop
from facenormals.training.data.augment import PHOTO_SUFFIXES, VIDEO_SUFFIXES


@dataclass
class Frame:
    name: str  # sample name stem: file stem, plus the frame number for videos
    rgb: np.ndarray
    video: str | None = None  # the stem of the video it comes from (None for a photo)


def iter_frames(source: str | Path, every: int = 5) -> Iterator[Frame | DataError]:
    """Frames of a photo folder / single photo / video (every ``every``-th frame); unreadable files yield DataError."""
    source = Path(source)
    if source.is_dir():
        paths = sorted(p for p in source.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES + VIDEO_SUFFIXES
                       and not p.name.startswith("."))
        if not paths:
            raise DataError(f"{source}: no photos or videos ({', '.join(PHOTO_SUFFIXES + VIDEO_SUFFIXES)})")
        for path in paths:
            yield from iter_frames(path, every)
        return
    if not source.exists():
        raise DataError(f"{source}: not found")
    stem = _safe(source.stem)
    if source.suffix.lower() in VIDEO_SUFFIXES:
        cap = cv2.VideoCapture(str(source))
        if not cap.isOpened():
            yield DataError(f"{source}: OpenCV cannot open this video")
            return
        index = 0
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                if index % every == 0:
                    yield Frame(f"{stem}_f{index:05d}", cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), stem)
                index += 1
        finally:
            cap.release()
        if index == 0:
            yield DataError(f"{source}: video has no decodable frames")
        return
    try:
        yield Frame(stem, read_rgb(source))
    except DataError as err:
        yield err


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def crop_faces(rgb: np.ndarray, face_mesh: FaceMesh, size: int = 256,
               min_face_px: float = 40.0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(crop RGB, mask, landmarks) for each face at least ``min_face_px`` tall, largest first."""
    faces = [found.points for found in face_mesh.find(rgb)]
    faces.sort(key=lambda lm: -float(np.ptp(lm[:, 1])))
    out = []
    for landmarks in faces:
        if float(np.ptp(landmarks[:, 1])) < min_face_px:
            continue
        crop = face_crop(rgb, landmarks, size)
        out.append((crop.image, crop.mask, landmarks))
    return out
