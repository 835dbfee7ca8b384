"""Media the realtime tests build on the fly: real face photos (scikit-image's public-domain astronaut), videos
written with OpenCV, and a small random-weight checkpoint. Nothing is downloaded."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np


def face_photo() -> np.ndarray:
    """A real face photo, RGB uint8 320×320: the astronaut's head and shoulders."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[0:320, 80:400])


def two_faces() -> np.ndarray:
    """Two faces side by side (the photo and its mirror image), RGB 320×640."""
    photo = face_photo()
    return np.ascontiguousarray(np.concatenate([photo, photo[:, ::-1]], axis=1))


def moving_face_frames(count: int, size: int = 256) -> list[np.ndarray]:
    """``count`` frames of the face drifting a few pixels per frame (for tracking and smoothing)."""
    from skimage import data

    image = data.astronaut()
    frames = []
    for i in range(count):
        dx, dy = round(6 * math.sin(i / 3.0)), round(4 * math.cos(i / 4.0))
        crop = image[10 + dy:330 + dy, 80 + dx:400 + dx]
        frames.append(cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA))
    return frames


def write_video(path: Path, frames_rgb: list[np.ndarray], fps: float = 15.0) -> Path:
    height, width = frames_rgb[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for frame in frames_rgb:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def count_video_frames(path: Path) -> int:
    """Frames actually decodable (not the header's count)."""
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), f"cannot open {path}"
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


def small_checkpoint(path: Path, input_size: int = 64) -> Path:
    """A random-weight ``fast`` model at a small input size: real network, cheap to run."""
    import torch

    from facenormals.checkpoint import save_checkpoint
    from facenormals.model import create_model

    torch.manual_seed(0)
    save_checkpoint(create_model("fast", input_size=input_size), path, provenance={"test": "random init"},
                    inference_only=True)
    return path
