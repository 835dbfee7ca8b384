"""Face landmarks for the realtime loop: MediaPipe face mesh in tracking mode, smoothed over time.

Convention: landmarks are float32 N×2 (x, y) in pixels of the frame's ``rgb``, origin at the centre of
the top-left pixel (the convention of :mod:`facenormals.geometry`). MediaPipe's normalised
coordinates span the image edges, so pixel = normalised × size − 0.5.

Two back ends, one interface (``detect(rgb, t_capture_ns) -> list[Face]``):

* :class:`FaceMeshDetector` — ``mp.solutions.face_mesh`` with the models bundled in the wheel,
  478 landmarks (``refine_landmarks``: irises included), up to ``max_faces`` faces.
* :class:`TaskFaceDetector` — the MediaPipe Tasks ``FaceLandmarker`` in VIDEO mode from a
  user-supplied ``.task`` file (nothing is downloaded), fed the frames' real timestamps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from facenormals.geometry import SquareBox, square_box
from facenormals.realtime.smoothing import LandmarkSmoother, OneEuroParams

NUM_LANDMARKS = 478  # face mesh with refined irises
DEFAULT_SMOOTHING = OneEuroParams()


class FrameError(ValueError):
    """A frame that cannot be processed (wrong type, shape or size): skipped and counted, not fatal."""


@dataclass(frozen=True)
class Face:
    """One detected face: smoothed and raw landmarks (pixels), its track id and crop square.

    ``depth``: MediaPipe's relative z per landmark in frame pixels (normalised z × frame width, smaller =
    nearer; raw, not smoothed) — what the mesh prior of a prior model needs (``facenormals.mesh_prior``).
    """

    landmarks: np.ndarray
    raw_landmarks: np.ndarray
    track_id: int
    box: SquareBox
    depth: np.ndarray | None = None


class Detector(Protocol):
    max_faces: int

    def detect(self, rgb: np.ndarray, t_capture_ns: int) -> list[Face]: ...

    def close(self) -> None: ...


def check_frame(rgb: object) -> np.ndarray:
    """The frame as a contiguous RGB uint8 H×W×3 array, or FrameError saying what is wrong."""
    if not isinstance(rgb, np.ndarray):
        raise FrameError(f"frame is {type(rgb).__name__}, expected a numpy RGB image")
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise FrameError(f"frame is {rgb.dtype} {rgb.shape}, expected RGB uint8 H×W×3")
    if rgb.shape[0] < 32 or rgb.shape[1] < 32:
        raise FrameError(f"frame is {rgb.shape[1]}×{rgb.shape[0]} pixels, too small for face detection")
    return np.ascontiguousarray(rgb)


class _SmoothingDetector:
    """Shared part: raw landmark arrays → smoothed, tracked :class:`Face` objects."""

    def __init__(self, max_faces: int, smoothing: OneEuroParams | None) -> None:
        if max_faces < 1:
            raise ValueError(f"max_faces must be at least 1, got {max_faces}")
        self.max_faces = max_faces
        self._smoother = LandmarkSmoother(smoothing) if smoothing is not None else None
        self._next_id = 0

    def _faces(self, raw: list[np.ndarray], t_capture_ns: int,
               depths: list[np.ndarray] | None = None) -> list[Face]:
        depths = depths if depths is not None else [None] * len(raw)
        keep = [i for i, points in enumerate(raw) if np.isfinite(points).all()]
        raw, depths = [raw[i] for i in keep], [depths[i] for i in keep]
        if self._smoother is not None:
            tracked = self._smoother(raw, t_capture_ns * 1e-9)
        else:
            tracked = [(i, points) for i, points in enumerate(raw)]
        faces = []
        for points, depth, (track_id, smoothed) in zip(raw, depths, tracked, strict=True):
            try:
                box = square_box(smoothed)
            except ValueError:  # degenerate mesh (all points equal): no face extent
                continue
            faces.append(Face(smoothed, points, track_id, box, depth))
        return faces


class FaceMeshDetector(_SmoothingDetector):
    """``mp.solutions.face_mesh`` in tracking mode (detection only when tracking is lost)."""

    def __init__(self, max_faces: int = 1, smoothing: OneEuroParams | None = DEFAULT_SMOOTHING,
                 min_detection_confidence: float = 0.5, min_tracking_confidence: float = 0.5) -> None:
        super().__init__(max_faces, smoothing)
        import mediapipe as mp  # imported here: takes ~1 s, not needed for --help

        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False, max_num_faces=max_faces, refine_landmarks=True,
            min_detection_confidence=min_detection_confidence, min_tracking_confidence=min_tracking_confidence)
        self._size: tuple[int, int] | None = None

    def detect(self, rgb: np.ndarray, t_capture_ns: int) -> list[Face]:
        rgb = check_frame(rgb)
        height, width = rgb.shape[:2]
        result = self._mesh.process(rgb)
        raw, depths = [], []
        scale = np.array([width, height], dtype=np.float32)
        for mesh in result.multi_face_landmarks or ():
            normalised = np.array([(p.x, p.y, p.z) for p in mesh.landmark], dtype=np.float32)
            raw.append(normalised[:, :2] * scale - 0.5)
            depths.append(normalised[:, 2] * np.float32(width))
        return self._faces(raw, t_capture_ns, depths)

    def close(self) -> None:
        self._mesh.close()


class TaskFaceDetector(_SmoothingDetector):
    """MediaPipe Tasks ``FaceLandmarker`` (VIDEO mode) from a user-supplied ``.task`` model bundle."""

    def __init__(self, task_file: str | Path, max_faces: int = 1,
                 smoothing: OneEuroParams | None = DEFAULT_SMOOTHING) -> None:
        super().__init__(max_faces, smoothing)
        path = Path(task_file)
        if not path.is_file():
            raise FileNotFoundError(f"face landmarker model not found: {path} (pass a MediaPipe .task file)")
        from mediapipe.tasks.python import BaseOptions, vision

        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(path)),
            running_mode=vision.RunningMode.VIDEO, num_faces=max_faces)
        try:
            self._landmarker = vision.FaceLandmarker.create_from_options(options)
        except (RuntimeError, ValueError) as err:
            raise ValueError(f"{path}: not a usable MediaPipe face landmarker .task file ({err})") from err
        self._last_ms = -1

    def detect(self, rgb: np.ndarray, t_capture_ns: int) -> list[Face]:
        import mediapipe as mp

        rgb = check_frame(rgb)
        height, width = rgb.shape[:2]
        # VIDEO mode needs strictly increasing milliseconds; real capture times, bumped on ties.
        t_ms = max(t_capture_ns // 1_000_000, self._last_ms + 1)
        self._last_ms = t_ms
        result = self._landmarker.detect_for_video(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb), t_ms)
        scale = np.array([width, height], dtype=np.float32)
        meshes = [np.array([(p.x, p.y, p.z) for p in mesh], dtype=np.float32) for mesh in result.face_landmarks]
        raw = [mesh[:, :2] * scale - 0.5 for mesh in meshes]
        return self._faces(raw, t_capture_ns, [mesh[:, 2] * np.float32(width) for mesh in meshes])

    def close(self) -> None:
        self._landmarker.close()


def create_detector(max_faces: int = 1, task_file: str | Path | None = None, smooth: bool = True) -> Detector:
    """The face-mesh detector, or the Tasks FaceLandmarker when a ``.task`` file is given."""
    params = OneEuroParams() if smooth else None
    if task_file is not None:
        return TaskFaceDetector(task_file, max_faces, params)
    return FaceMeshDetector(max_faces, params)
