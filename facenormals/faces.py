"""Faces in images: the one MediaPipe face-mesh wrapper, the :class:`Face` type and the detectors built on it.

**The landmark → pixel convention (stated once, here).** Landmarks are float32 N×2 (x, y) in pixels of the
image, with the origin at the *centre* of the top-left pixel (the convention of :mod:`facenormals.geometry`:
pixel centres at integers, a pixel covers [c − 0.5, c + 0.5]). MediaPipe's normalised coordinates are in the
same pixel-centre frame, divided by the image size (its CPU graph cuts the face with OpenCV's warp, whose pixel
centres are integers, and divides the landmark by the tensor size), so::

    pixel = normalised × size                             (:func:`mesh_to_pixels`)

Measured, not assumed (issue 13, ``tests/test_landmark_convention.py``): on renders of the ICT head (128², 160²)
the landmarks average onto their vertices' true pixels to (−0.14, −0.01) px (x, y) — read as image edges
(``− 0.5``, the project's reading before) they sat ~0.5 px up-left; and an image and its exact k× pixel
replication put the landmarks at ``k·p + (k − 1)/2``, the pixel-centre mapping (miss −0.06, −0.10 px per
replicated pixel, +0.44, +0.40 with ``− 0.5``).

Every crop in the project (training photos, the data engine, INT8 calibration, parity, eval, the API, the
live loop) takes its landmarks from :class:`FaceMesh` and its square from :func:`facenormals.geometry.face_crop`,
so they all sit on the same pixels. 478 points: the 468 mesh points and the 10 iris points (``refine_landmarks``).

Detectors, one interface (``detect(rgb, t_ns) -> list[Face]``; ``t_ns`` the frame's ``t_stream_ns``):

* :class:`FaceMeshDetector` — :class:`FaceMesh` in tracking mode (video) or still mode (independent images),
  One-Euro smoothing optional (:mod:`facenormals.smoothing`), following each face's image motion by default
  (``flow``, :mod:`facenormals.face_motion`).
* :class:`TaskFaceDetector` — the MediaPipe Tasks ``FaceLandmarker`` in VIDEO mode from a
  user-supplied ``.task`` file (nothing is downloaded), fed the frames' real timestamps.
* :class:`StillFaceDetector` — for still images and group photos: MediaPipe's face *detection*
  (full- and short-range models, over the whole image and over overlapping tiles, so small and
  distant faces are found), then the face mesh on each detected face alone. The face mesh's own
  short-range detector only finds large faces (1 of the 5 in a typical group photo). A face the mesh misses
  (profiles) is still returned from its detection alone: ``Face.source == "detector"``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from facenormals.face_motion import MotionParams, to_gray
from facenormals.geometry import SquareBox, square_box
from facenormals.mesh_input import average_with_mirror, flatten_light
from facenormals.smoothing import LandmarkSmoother, OneEuroParams

NUM_LANDMARKS = 478  # face mesh with refined irises
FLATTEN_FACE_SHARE = 0.4  # still images: the light is flattened for faces whose detection box is under this share
# of the frame's larger side (the sample clip's 0.26: the lighting pairs; the 256² renders' ~0.6–0.8 are not: there
# the frame-sized blur reshades the face itself — README "Temporal stability")
DEFAULT_SMOOTHING = OneEuroParams()
DEFAULT_FLOW = MotionParams()  # smoothing follows each face's image motion (issue 16); None: plain One-Euro


class FrameError(ValueError):
    """A frame that cannot be processed (wrong type, shape or size): skipped and counted, not fatal."""


@dataclass(frozen=True)
class Face:
    """One detected face: smoothed and raw landmarks (pixels), its track id and crop square.

    ``depth``: MediaPipe's relative z per landmark in frame pixels (normalised z × frame width, smaller =
    nearer; raw, not smoothed) — what the mesh prior of a prior model needs (``facenormals.mesh_prior``).

    ``source``: ``"mesh"``, landmarks from the face mesh; or ``"detector"``, a face the mesh missed (a profile)
    seen by the face detection alone (:class:`StillFaceDetector`, :mod:`facenormals.keypoint_pose`): its
    ``box`` is the detection's crop square, its ``landmarks`` (= ``raw_landmarks``) are *estimated* — the ICT
    mean face posed on the detection's 6 ``keypoints`` — good for a crop mask and motion, not for a fit; its
    ``depth`` is None, so a prior model gets the all-zero prior and nothing fits an ICT face to it.
    """

    landmarks: np.ndarray
    raw_landmarks: np.ndarray
    track_id: int
    box: SquareBox
    depth: np.ndarray | None = None
    source: str = "mesh"
    keypoints: np.ndarray | None = None  # float32 6×2 frame pixels, a detector face's (FaceBox.keypoints)


class Detector(Protocol):
    max_faces: int

    def detect(self, rgb: np.ndarray, t_ns: int) -> list[Face]: ...

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


@dataclass(frozen=True)
class MeshLandmarks:
    """One face found by :class:`FaceMesh`: MediaPipe's numbers and the same points in our pixel convention."""

    normalised: np.ndarray  # float32 478×3: pixel-centre x / width, y / height, z / width
    points: np.ndarray      # float32 478×2 pixels (x, y), pixel centres at integers
    depth: np.ndarray       # float32 478 MediaPipe's relative z in pixels (z × width; smaller = nearer)


def mesh_to_pixels(normalised: np.ndarray, width: int, height: int,
                   dtype: type = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe normalised landmarks N×3 → (points N×2, depth N) in pixels of a ``width`` × ``height`` image.

    >>> points, depth = mesh_to_pixels(np.array([[0.0, 0.0, 0.1], [1.0, 0.5, 0.0]]), 100, 50)
    >>> points.tolist(), depth.tolist()  # normalised × size: MediaPipe's coordinates are already pixel centres
    ([[0.0, 0.0], [100.0, 25.0]], [10.0, 0.0])
    """
    normalised = np.asarray(normalised, dtype=dtype)
    points = normalised[:, :2] * np.array([width, height], dtype=dtype)
    return points, normalised[:, 2] * dtype(width)


class FaceMesh:
    """The project's one MediaPipe face mesh (bundled model, 478 landmarks with irises).

    ``still=True``: every image on its own (photos, crops, datasets); ``still=False``: tracking mode for video
    (detection only when tracking is lost). :meth:`find` returns each face as :class:`MeshLandmarks`.
    ``steady`` (default): landmarks that move less with the light (:mod:`facenormals.mesh_input`) — the mesh sees
    the frame with its smooth light divided out, and with ``mirror`` a second mesh (tracking its own faces in
    video) sees the mirrored frame, each landmark averaged with its mirror partner's. ``mirror`` None: on for
    still images, off in tracking mode, where its extra mesh pass (~5.5 CPU ms a frame) would cost the live
    loop its 30 FPS on 2 cores. ``flatten`` None: with ``steady``; False keeps the mirror pass only — for a view
    cut around one face (:class:`StillFaceDetector`), which the frame-sized blur would reshade rather than flatten.
    """

    def __init__(self, max_faces: int = 1, still: bool = True, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5, steady: bool = True, mirror: bool | None = None,
                 flatten: bool | None = None) -> None:
        if max_faces < 1:
            raise ValueError(f"max_faces must be at least 1, got {max_faces}")
        import mediapipe as mp  # ~1 s to import: only when a face mesh is built

        self.max_faces, self.still, self.steady = max_faces, still, steady
        self.flatten = steady if flatten is None else steady and flatten
        self.mirror = steady and (still if mirror is None else mirror)
        meshes = [mp.solutions.face_mesh.FaceMesh(
            static_image_mode=still, max_num_faces=max_faces, refine_landmarks=True,
            min_detection_confidence=min_detection_confidence, min_tracking_confidence=min_tracking_confidence)
            for _ in range(2 if self.mirror else 1)]
        self._mesh, self._mirror_mesh = meshes[0], meshes[1] if self.mirror else None

    def find(self, rgb: np.ndarray) -> list[MeshLandmarks]:
        """The faces MediaPipe finds in an RGB uint8 image, in its order; faces with non-finite points are dropped."""
        rgb = np.ascontiguousarray(rgb)
        height, width = rgb.shape[:2]
        seen = flatten_light(rgb) if self.flatten else rgb
        found = _normalised_faces(self._mesh, seen)
        if self._mirror_mesh is not None:
            found = average_with_mirror(found, _normalised_faces(self._mirror_mesh, cv2.flip(seen, 1)), width, height)
        return [MeshLandmarks(normalised, *mesh_to_pixels(normalised, width, height)) for normalised in found]

    def close(self) -> None:
        self._mesh.close()
        if self._mirror_mesh is not None:
            self._mirror_mesh.close()

    def __enter__(self) -> FaceMesh:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _normalised_faces(mesh, rgb: np.ndarray) -> list[np.ndarray]:
    """A MediaPipe face mesh's faces in ``rgb`` as normalised float32 478×3 arrays; non-finite faces dropped."""
    faces = [landmark_array(face) for face in mesh.process(rgb).multi_face_landmarks or ()]
    return [face for face in faces if np.isfinite(face).all()]


# A serialised NormalizedLandmarkList whose landmarks hold x, y, z only (the face mesh's), 17 bytes per landmark:
# the field's tag (1, length-delimited) and length (15), then x, y and z, each a tag byte and a little-endian float32.
_WIRE_SIZE = 17
_WIRE_TAG_AT = np.array([0, 1, 2, 7, 12])
_WIRE_TAGS = np.array([0x0A, 15, 0x0D, 0x15, 0x1D], dtype=np.uint8)
_WIRE_FLOAT_AT = np.array([3, 4, 5, 6, 8, 9, 10, 11, 13, 14, 15, 16])


def landmark_array(landmarks: object) -> np.ndarray:
    """A MediaPipe ``NormalizedLandmarkList`` as a float32 N×3 (x, y, z) array.

    Read from the message's wire bytes (the float32 values as stored, so bit-identical to reading ``p.x, p.y, p.z``
    one by one): ~0.03 ms instead of ~0.4 ms for 478 points in Python. Any other layout (visibility or presence set,
    a field missing) takes the attribute path.
    """
    wire = landmarks.SerializeToString()
    count = len(landmarks.landmark)
    if count and len(wire) == count * _WIRE_SIZE:
        rows = np.frombuffer(wire, dtype=np.uint8).reshape(count, _WIRE_SIZE)
        if (rows[:, _WIRE_TAG_AT] == _WIRE_TAGS).all():
            floats = rows.take(_WIRE_FLOAT_AT, axis=1).view("<f4")  # a copy: owns its memory
            return floats.astype(np.float32, copy=False)
    return np.array([(p.x, p.y, p.z) for p in landmarks.landmark], dtype=np.float32).reshape(-1, 3)


class _SmoothingDetector:
    """Shared part: raw landmark arrays → smoothed, tracked :class:`Face` objects."""

    def __init__(self, max_faces: int, smoothing: OneEuroParams | None, flow: MotionParams | None = None) -> None:
        if max_faces < 1:
            raise ValueError(f"max_faces must be at least 1, got {max_faces}")
        self.max_faces = max_faces
        self._smoother = LandmarkSmoother(smoothing, flow=flow) if smoothing is not None else None
        self._next_id = 0

    @property
    def flow(self) -> MotionParams | None:
        """The image-motion settings the smoother follows faces with (None: plain One-Euro, or no smoothing)."""
        return None if self._smoother is None else self._smoother.flow

    def _faces(self, raw: list[np.ndarray], t_ns: int,
               depths: list[np.ndarray] | None = None, rgb: np.ndarray | None = None) -> list[Face]:
        depths = depths if depths is not None else [None] * len(raw)
        keep = [i for i, points in enumerate(raw) if np.isfinite(points).all()]
        raw, depths = [raw[i] for i in keep], [depths[i] for i in keep]
        if self._smoother is not None:
            gray = to_gray(rgb) if rgb is not None and self._smoother.flow is not None else None
            tracked = self._smoother(raw, t_ns * 1e-9, gray)
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
    """:class:`FaceMesh` as a detector: tracking mode (video) by default, ``still=True`` for independent images;
    ``steady``: :class:`FaceMesh`'s light-steadied landmarks (default; averaged with the mirror image for still
    images only)."""

    def __init__(self, max_faces: int = 1, smoothing: OneEuroParams | None = DEFAULT_SMOOTHING,
                 min_detection_confidence: float = 0.5, min_tracking_confidence: float = 0.5,
                 still: bool = False, flow: MotionParams | None = DEFAULT_FLOW, steady: bool = True) -> None:
        super().__init__(max_faces, smoothing, flow)
        self._mesh = FaceMesh(max_faces, still, min_detection_confidence, min_tracking_confidence, steady)

    def detect(self, rgb: np.ndarray, t_ns: int = 0) -> list[Face]:
        rgb = check_frame(rgb)
        found = self._mesh.find(rgb)
        return self._faces([f.points for f in found], t_ns, [f.depth for f in found], rgb)

    def close(self) -> None:
        self._mesh.close()


class TaskFaceDetector(_SmoothingDetector):
    """MediaPipe Tasks ``FaceLandmarker`` (VIDEO mode) from a user-supplied ``.task`` model bundle."""

    def __init__(self, task_file: str | Path, max_faces: int = 1,
                 smoothing: OneEuroParams | None = DEFAULT_SMOOTHING, flow: MotionParams | None = DEFAULT_FLOW) -> None:
        super().__init__(max_faces, smoothing, flow)
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

    def detect(self, rgb: np.ndarray, t_ns: int) -> list[Face]:
        import mediapipe as mp

        rgb = check_frame(rgb)
        height, width = rgb.shape[:2]
        # VIDEO mode needs strictly increasing milliseconds: the frames' stream times, bumped on ties.
        t_ms = max(t_ns // 1_000_000, self._last_ms + 1)
        self._last_ms = t_ms
        result = self._landmarker.detect_for_video(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb), t_ms)
        meshes = [mesh_to_pixels(np.array([(p.x, p.y, p.z) for p in mesh], dtype=np.float32), width, height)
                  for mesh in result.face_landmarks]
        return self._faces([points for points, _ in meshes], t_ns, [depth for _, depth in meshes], rgb)

    def close(self) -> None:
        self._landmarker.close()


MESH_INPUT = 256  # side of the per-face image the face mesh sees
FACE_MARGIN = 2.2  # per-face image side ÷ detection box side: the whole head, as the mesh expects
TILE_OVERLAP = 0.25


def mesh_in_view(mesh: FaceMesh, rgb: np.ndarray, cx: float, cy: float, side: float, size: int = MESH_INPUT,
                 border: int = cv2.BORDER_CONSTANT) -> tuple[np.ndarray, np.ndarray] | None:
    """The first face ``mesh`` finds on the square view of ``rgb`` centred at (``cx``, ``cy``), ``side`` frame pixels
    wide, drawn at ``size``² (``border``: what lies beyond the frame): (478×2 frame pixels, depth in frame pixels),
    or None. The per-face views of :class:`StillFaceDetector` and the crop's second look
    (:func:`facenormals.mesh_prior.crop_landmarks`)."""
    scale = size / side
    centre = (size - 1) / 2
    matrix = np.array([[scale, 0, centre - scale * cx], [0, scale, centre - scale * cy]], dtype=np.float64)
    view = cv2.warpAffine(rgb, matrix, (size, size), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
                          borderMode=border)
    found = mesh.find(view)
    if not found:
        return None
    points = ((found[0].points - matrix[:, 2]) / scale).astype(np.float32)  # view pixels → frame pixels
    return points, (found[0].depth / scale).astype(np.float32)


@dataclass(frozen=True)
class FaceBox:
    """A face detection in frame pixels: centre, side of its square, score, and its 6 keypoints (frame pixels x, y:
    the subject's right eye, left eye, nose tip, mouth centre, right and left ear tragion; MediaPipe's order), and
    which of :class:`StillFaceDetector`'s detection models found it in which window of the image."""

    cx: float
    cy: float
    side: float
    score: float
    keypoints: np.ndarray | None = None  # float32 6×2
    found_by: tuple[int, int, int, int] | None = None  # (model, x0, y0, window side; 0: the whole image)


def box_iou(a: FaceBox, b: FaceBox) -> float:
    """Intersection over union of two square boxes."""
    ax0, ay0, bx0, by0 = a.cx - a.side / 2, a.cy - a.side / 2, b.cx - b.side / 2, b.cy - b.side / 2
    w = min(ax0 + a.side, bx0 + b.side) - max(ax0, bx0)
    h = min(ay0 + a.side, by0 + b.side) - max(ay0, by0)
    inter = max(w, 0.0) * max(h, 0.0)
    return inter / (a.side ** 2 + b.side ** 2 - inter)


def suppress(boxes: list[FaceBox], iou: float = 0.3) -> list[FaceBox]:
    """Non-maximum suppression: the best-scoring box of each overlapping group, best first."""
    kept: list[FaceBox] = []
    for box in sorted(boxes, key=lambda b: -b.score):
        if all(box_iou(box, k) < iou for k in kept):
            kept.append(box)
    return kept


def tile_windows(width: int, height: int) -> list[tuple[int, int, int]]:
    """(x0, y0, side) squares covering the image. The detector sees a 192² letterboxed image, so faces under ~1/10
    of a large or elongated image vanish in the downscale: squares of the shorter side (elongated images) and of
    half of it (large ones), overlapping, make them 2–4× larger."""
    shorter = min(width, height)
    sides = ([shorter] if max(width, height) > 1.3 * shorter else []) + ([shorter // 2] if shorter >= 320 else [])
    windows = []
    for side in sides:
        step = max(int(side * (1 - TILE_OVERLAP)), 1)
        xs = sorted({*range(0, width - side, step), width - side})
        ys = sorted({*range(0, height - side, step), height - side})
        windows += [(x, y, side) for y in ys for x in xs]
    return windows


class StillFaceDetector:
    """Every face of a still image, small and distant ones included: face detection first, then the mesh per face.

    Each image on its own (no tracking, no smoothing): the detector for photos, image folders and group shots.
    Faces come largest first; at most ``max_faces``. ``fallback``: a detected face whose mesh fails (profiles)
    is still returned, as a ``source="detector"`` :class:`Face` (:func:`detector_only_face`); False: dropped.
    ``steady_boxes``: a face small in its frame gets its mesh view cut around its box as found on the
    light-flattened frame (:meth:`steadied_box`), which moves less with the light; False: around its own box.
    ``paper_view``: the landmarks are taken again on the view of the face's paper crop (1.2× its landmark square,
    :meth:`_mesh_on_square`), the view ``facenormals eval`` and the stored priors give the mesh; False: the
    landmarks of the whole-head view alone.
    """

    def __init__(self, max_faces: int = 4, min_detection_confidence: float = 0.5,
                 min_mesh_confidence: float = 0.5, fallback: bool = True, steady_boxes: bool = True,
                 paper_view: bool = True) -> None:
        if max_faces < 1:
            raise ValueError(f"max_faces must be at least 1, got {max_faces}")
        import mediapipe as mp

        self.max_faces = max_faces
        self.fallback = fallback
        self.steady_boxes = steady_boxes
        self.paper_view = paper_view
        self._finders = [mp.solutions.face_detection.FaceDetection(model_selection=model,
                                                                   min_detection_confidence=min_detection_confidence)
                         for model in (1, 0)]  # full range (to ~5 m), short range (large faces)
        # the mesh's own flattening is off: on a view cut around the face (the API's path, 256² renders) it cost
        # val_ict_v2 0.39° and 3 of its 200 faces, the mirror alone gained 0.20° (session 9); a face small in its
        # frame is cut from the flattened frame instead (:meth:`detect`), where the blur is far coarser than it
        self._mesh = FaceMesh(1, still=True, min_detection_confidence=min_mesh_confidence, flatten=False)

    def find_boxes(self, rgb: np.ndarray) -> list[FaceBox]:
        """Face boxes of the whole image and of its tiles, overlaps suppressed, best first."""
        height, width = rgb.shape[:2]
        return suppress([box for window in [(0, 0, 0), *tile_windows(width, height)]
                         for finder in range(len(self._finders)) for box in self._boxes_in(rgb, finder, window)])

    def _boxes_in(self, rgb: np.ndarray, finder: int, window: tuple[int, int, int]) -> list[FaceBox]:
        """The boxes one face-detection model finds in one window (x0, y0, side; side 0: the whole image)."""
        x0, y0, side = window
        view = rgb if side == 0 else np.ascontiguousarray(rgb[y0:y0 + side, x0:x0 + side])
        h, w = view.shape[:2]
        boxes = []
        for det in self._finders[finder].process(view).detections or ():
            rel = det.location_data.relative_bounding_box
            box_side = max(rel.width * w, rel.height * h)
            if box_side > 4:
                keypoints = np.array([(x0 + k.x * w, y0 + k.y * h)
                                      for k in det.location_data.relative_keypoints], dtype=np.float32)
                boxes.append(FaceBox(x0 + (rel.xmin + rel.width / 2) * w, y0 + (rel.ymin + rel.height / 2) * h,
                                     box_side, float(det.score[0]), keypoints, (finder, *window)))
        return boxes

    def _mesh_in(self, rgb: np.ndarray, box: FaceBox) -> tuple[np.ndarray, np.ndarray] | None:
        """The face mesh of the face in ``box``: (478×2 frame pixels, depth in frame pixels), or None."""
        return mesh_in_view(self._mesh, rgb, box.cx, box.cy, box.side * FACE_MARGIN)

    def _mesh_on_square(self, rgb: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The face mesh on the view of the paper crop around ``points`` (frame pixels; beyond the frame its edge
        pixels extended, as the crop's second look does): the view eval and the stored priors read landmarks from.
        On the validation crops the ICT-blend coarse face from these landmarks beat the whole-head view's,
        10.26 → 10.22° on ``val_james`` and 14.48 → 14.30° on ``val_ict_v2`` (session 17): the mesh reads a face
        best that fills its view, and the network was trained on such landmarks."""
        square = square_box(points)
        return mesh_in_view(self._mesh, rgb, square.cx, square.cy, square.side, border=cv2.BORDER_REPLICATE)

    def steadied_box(self, flat: np.ndarray, box: FaceBox,
                     seen: dict[tuple[int, int, int, int], list[FaceBox]] | None = None) -> FaceBox:
        """``box`` as :meth:`find_boxes` finds it on the light-flattened frame ``flat`` (:func:`steady_box`): it moves
        less with the light. Only the windows that hold the whole box (and the one it was found in) are searched;
        ``seen`` keeps each model's boxes per window for the next face of the same frame."""
        seen = {} if seen is None else seen
        height, width = flat.shape[:2]
        windows = {(0, 0, 0), *(w for w in tile_windows(width, height) if _holds(w, box))}
        if box.found_by is not None:
            windows.add(box.found_by[1:])
        for key in ((finder, *window) for window in windows for finder in range(len(self._finders))):
            if key not in seen:
                seen[key] = self._boxes_in(flat, key[0], key[1:])
        return steady_box(box, suppress([b for key in seen if key[1:] in windows for b in seen[key]]))

    def _mesh_of(self, flat: np.ndarray, box: FaceBox,
                 seen: dict[tuple[int, int, int, int], list[FaceBox]]) -> tuple[np.ndarray, np.ndarray] | None:
        """The mesh of a face small in its frame, on the flattened frame ``flat``. The view around ``box`` decides
        whether there is a face (a spurious detection's view shifted by a pixel can fool the mesh: the mirrored
        astronaut's suit badge); with ``steady_boxes`` the mesh is then taken again on the view around the steadied
        box, the first kept when that one finds none."""
        mesh = self._mesh_in(flat, box)
        if mesh is None or not np.isfinite(mesh[0]).all() or not self.steady_boxes:
            return mesh
        steady = self.steadied_box(flat, box, seen)
        steadied = self._mesh_in(flat, steady) if steady is not box else None
        return steadied if steadied is not None and np.isfinite(steadied[0]).all() else mesh

    def detect(self, rgb: np.ndarray, t_ns: int = 0) -> list[Face]:
        rgb = check_frame(rgb)
        faces: list[Face] = []
        missed: list[FaceBox] = []
        flat: np.ndarray | None = None  # the frame with its light flattened, made once when a small face needs it
        seen: dict[tuple[int, int, int, int], list[FaceBox]] = {}  # the flattened frame's boxes per model and window
        for box in self.find_boxes(rgb):
            # a face small in its frame is cut from the light-flattened frame, around its box as found there: on
            # the sample's lighting pairs the frame's box moved 3.6 px (side + centre), the flattened frame's 0.4
            # (README "Temporal stability"); the frame's own boxes and views decide which faces there are
            seen_by_mesh = rgb
            if box.side < FLATTEN_FACE_SHARE * max(rgb.shape[:2]):
                seen_by_mesh = flat = flatten_light(rgb) if flat is None else flat
                mesh = self._mesh_of(flat, box, seen)
            else:
                mesh = self._mesh_in(rgb, box)
            if mesh is None or not np.isfinite(mesh[0]).all():
                missed.append(box)
                continue
            if self.paper_view:
                closer = self._mesh_on_square(seen_by_mesh, mesh[0])
                mesh = closer if closer is not None and np.isfinite(closer[0]).all() else mesh
            points, depth = mesh
            try:
                square = square_box(points)
            except ValueError:
                continue
            if any(_square_iou(square, f.box) > 0.5 for f in faces):
                continue  # two detections of one face
            faces.append(Face(points, points, len(faces), square, depth))
        if self.fallback:  # after every mesh face: a box whose mesh failed may be another box's face
            for box in missed:
                face = detector_only_face(box)
                if face is not None and not any(_square_iou(face.box, f.box) > 0.5 for f in faces):
                    faces.append(face)
        faces.sort(key=lambda f: -f.box.side)
        return [replace(f, track_id=i) for i, f in enumerate(faces[:self.max_faces])]

    def close(self) -> None:
        for finder in self._finders:
            finder.close()
        self._mesh.close()


def detector_only_face(box: FaceBox, min_yaw_deg: float | None = None) -> Face | None:
    """A face the mesh missed, from its detection alone (``source="detector"``, :mod:`facenormals.keypoint_pose`);
    None when the detection has no keypoints, no head pose fits them or the pose is frontal (``keypoint_pose``;
    ``min_yaw_deg``: another least |yaw| than :data:`~facenormals.keypoint_pose.MIN_PROFILE_YAW_DEG`)."""
    from facenormals.keypoint_pose import detector_face

    if box.keypoints is None or not np.isfinite(box.keypoints).all():
        return None
    options = {} if min_yaw_deg is None else {"min_yaw_deg": min_yaw_deg}
    posed = detector_face(box.cx, box.cy, box.side, box.keypoints, **options)
    if posed is None or not np.isfinite(posed[1]).all():
        return None
    square, landmarks = posed
    return Face(landmarks, landmarks, 0, square, None, "detector", box.keypoints)


def steady_box(box: FaceBox, steady_boxes: list[FaceBox], min_iou: float = 0.5) -> FaceBox:
    """``box`` framed as its best match among ``steady_boxes`` (the boxes of the light-flattened frame; IoU above
    ``min_iou``): centre and side from the match, score and keypoints kept; ``box`` itself when none matches."""
    ious = [box_iou(box, other) for other in steady_boxes]
    if not ious or max(ious) <= min_iou:
        return box
    match = steady_boxes[int(np.argmax(ious))]
    return replace(box, cx=match.cx, cy=match.cy, side=match.side)


def _holds(window: tuple[int, int, int], box: FaceBox) -> bool:
    """Whether the tile ``window`` (x0, y0, side) holds the whole of ``box``."""
    x0, y0, side = window
    half = box.side / 2
    return x0 <= box.cx - half and box.cx + half <= x0 + side and y0 <= box.cy - half and box.cy + half <= y0 + side


def _square_iou(a: SquareBox, b: SquareBox) -> float:
    return box_iou(FaceBox(a.cx, a.cy, a.side, 0.0), FaceBox(b.cx, b.cy, b.side, 0.0))


def create_detector(max_faces: int = 1, task_file: str | Path | None = None, smooth: bool = True,
                    still: bool = False, flow: bool = True, steady: bool = True) -> Detector:
    """The face-mesh detector, the Tasks FaceLandmarker when a ``.task`` file is given, or for unrelated still
    images (``still``: an image folder, photos) the :class:`StillFaceDetector`, which finds small faces too.
    ``flow`` (with ``smooth``): the smoother follows each face's image motion (:mod:`facenormals.face_motion`).
    ``steady``: the face-mesh detector's light-steadied landmarks (:class:`FaceMesh`; still images always have them)."""
    params = OneEuroParams() if smooth else None
    motion = DEFAULT_FLOW if smooth and flow else None
    if task_file is not None:
        return TaskFaceDetector(task_file, max_faces, params, motion)
    if still:
        return StillFaceDetector(max_faces)
    return FaceMeshDetector(max_faces, params, flow=motion, steady=steady)
