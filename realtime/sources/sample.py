"""The embedded sample: a short, deterministic clip made on the fly from a real photo that an installed package ships.

``sample``: scikit-image's ``astronaut`` (Eileen Collins, NASA, public domain) framed at 640×480 around the face, with
smooth head motion (in-plane rotation ±9°, translation ±30 px), scale changes (0.85–1.15×: the head coming closer) and
lighting changes (gain and a sideways light gradient), plus mild sensor noise. Nothing is downloaded.

``sample-rgbd``: the same colour frames with an aligned synthetic depth map: the MediaPipe face mesh of the photo
(478 landmarks, refined) rasterised into a face surface ~0.47 m in front of a pinhole camera (60° horizontal field of
view), over a wall at ~1.1 m, moving with the image, corrupted by :func:`~facenormals.realtime.sources.depth_noise.
add_sensor_noise` and stored as uint16 millimetres (``depth_scale_m = 0.001``).

Frame ``i`` depends only on ``i`` and ``seed``: two runs give identical frames.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass

import cv2
import numpy as np

from facenormals.camera import Intrinsics
from facenormals.faces import FaceMesh
from facenormals.realtime.sources.base import Capture, Source, SourceError, SourceInfo, pinhole_from_fov
from facenormals.realtime.sources.depth_noise import PROFILES, add_sensor_noise, to_depth_units

PHOTO_FACE_CENTRE = (225.0, 140.0)  # in the 512² astronaut photo: between the eyes, a little low (keeps the chin in)
PHOTO_TO_FRAME_SCALE = 1.8  # the face is ~92 px wide in the photo: ~165 px in a 640×480 frame
FACE_WIDTH_M = 0.14  # landmark extent cheek to cheek, an adult face
WALL_DEPTH_M = 1.1
HFOV_DEG = 60.0


@dataclass(frozen=True)
class Pose:
    """Image-plane motion of frame i: rotation (deg, about the face), translation (px), scale, lighting."""

    angle_deg: float
    shift: tuple[float, float]
    scale: float
    gain: float
    light_slope: float  # brightness change per half frame width (lateral light)


def sample_pose(index: int, fps: float = 30.0) -> Pose:
    """Smooth, non-repeating-looking motion from incommensurate sinusoids (periods 2.3–6.1 s).

    >>> sample_pose(0).scale
    1.0
    """
    t = index / fps
    return Pose(
        angle_deg=9.0 * math.sin(2 * math.pi * t / 3.1),
        shift=(30.0 * math.sin(2 * math.pi * t / 4.3), 18.0 * math.sin(2 * math.pi * t / 2.3 + 1.0) - 18.0 * math.sin(1.0)),
        scale=1.0 + 0.15 * math.sin(2 * math.pi * t / 5.2),
        gain=1.0 - 0.22 * math.sin(2 * math.pi * t / 6.1) ** 2,
        light_slope=0.25 * math.sin(2 * math.pi * t / 3.7),
    )


def frame_from_photo_matrix(pose: Pose, width: int, height: int) -> np.ndarray:
    """2×3 affine taking photo pixels to frame pixels for ``pose`` (rotation/scale about the face centre)."""
    s = PHOTO_TO_FRAME_SCALE * pose.scale
    matrix = cv2.getRotationMatrix2D(PHOTO_FACE_CENTRE, pose.angle_deg, s)
    # getRotationMatrix2D keeps the centre fixed; move it to the frame centre plus the shift.
    matrix[0, 2] += width / 2.0 + pose.shift[0] - PHOTO_FACE_CENTRE[0]
    matrix[1, 2] += height / 2.0 + pose.shift[1] - PHOTO_FACE_CENTRE[1]
    return matrix


@functools.lru_cache(maxsize=1)
def sample_photo() -> np.ndarray:
    """The astronaut photo (RGB uint8 512×512) from scikit-image's installed data."""
    from skimage import data

    return data.astronaut()


def render_sample_rgb(index: int, width: int = 640, height: int = 480, fps: float = 30.0, seed: int = 0) -> np.ndarray:
    """Colour frame ``index`` of the sample clip (RGB uint8)."""
    return render_pose_rgb(sample_pose(index, fps), width, height, noise_index=index, seed=seed)


def render_pose_rgb(pose: Pose, width: int = 640, height: int = 480, noise_index: int = 0, seed: int = 0) -> np.ndarray:
    """The photo under any :class:`Pose` (RGB uint8): the clip's renderer, for sequences with a chosen motion or light
    (the stability benchmark's pose steps and lighting pairs)."""
    matrix = frame_from_photo_matrix(pose, width, height)
    warped = cv2.warpAffine(sample_photo(), matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    x = (np.arange(width, dtype=np.float32) - width / 2.0) / (width / 2.0)
    light = (pose.gain * (1.0 + pose.light_slope * x)).astype(np.float32)[None, :, None]
    lit = np.multiply(warped, light, dtype=np.float32)
    bank = _noise_bank(height, width, seed)
    # sensor noise (σ = 2 levels), drawn once: a fresh draw per frame costs more than the rest
    lit += bank[noise_index % len(bank)]
    np.clip(lit, 0.0, 255.0, out=lit)
    return lit.astype(np.uint8)


@functools.lru_cache(maxsize=2)
def _noise_bank(height: int, width: int, seed: int, frames: int = 7) -> np.ndarray:
    rng = np.random.default_rng([seed, height, width])
    return (rng.standard_normal((frames, height, width, 3), dtype=np.float32) * 2.0 + 0.5).astype(np.float32)


class SampleSource(Source):
    """``sample``: ``frames`` colour frames of the embedded clip (file-like unless ``real_time``, which paces it at
    ``fps`` and makes it behave like a live camera)."""

    def __init__(
        self,
        *,
        frames: int = 150,
        width: int = 640,
        height: int = 480,
        fps: float = 30.0,
        real_time: bool = False,
        loop: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if frames < 1 or width < 16 or height < 16 or fps <= 0:
            raise SourceError(f"sample: need frames ≥ 1, size ≥ 16 px and fps > 0 (got {frames}, {width}x{height}, {fps})")
        self.n_frames, self.width, self.height, self.nominal_fps = frames, width, height, fps
        self.real_time, self.loop, self.seed = real_time, loop, seed
        self.live = real_time
        self._index = 0
        self._t_start: int | None = None
        self._intrinsics = pinhole_from_fov(width, height, HFOV_DEG)

    @property
    def info(self) -> SourceInfo:
        return SourceInfo(
            name=self._name(),
            width=self.width,
            height=self.height,
            fps=self.nominal_fps,
            has_depth=False,
            live=self.live,
            intrinsics=self._intrinsics,
            frame_count=None if self.loop else self.n_frames,
        )

    def _name(self) -> str:
        return "sample"

    def _next_index(self) -> int | None:
        if self._index >= self.n_frames and not self.loop:
            return None
        index = self._index % self.n_frames
        self._index += 1
        if self.real_time:
            self._pace()
        return index

    def _pace(self) -> None:
        now = time.monotonic_ns()
        if self._t_start is None:
            self._t_start = now
        due = self._t_start + int((self._index - 1) * 1e9 / self.nominal_fps)
        if due > now:
            time.sleep((due - now) / 1e9)

    def _read(self) -> Capture | None:
        index = self._next_index()
        if index is None:
            return None
        return Capture(rgb=render_sample_rgb(index, self.width, self.height, self.nominal_fps, self.seed))


# -- sample-rgbd --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhotoDepth:
    """Clean face depth in photo pixels: metres at the reference pose (scale 1), 0 outside the face."""

    depth_m: np.ndarray  # float32 512×512
    face_depth_m: float  # nose tip distance at scale 1


@functools.lru_cache(maxsize=4)
def photo_face_depth(width: int = 640, height: int = 480) -> PhotoDepth:
    """Rasterise the MediaPipe face mesh of the photo into a depth map (photo pixel grid), consistent with a
    pinhole camera of :data:`HFOV_DEG` at frame size ``width``×``height``."""
    landmarks = photo_landmarks()
    focal = pinhole_from_fov(width, height, HFOV_DEG).fx
    size = sample_photo().shape[1]
    face_px = np.ptp(landmarks[:, 0]) * size * PHOTO_TO_FRAME_SCALE  # face width in frame pixels
    face_depth = focal * FACE_WIDTH_M / face_px
    metres_per_frame_px = face_depth / focal
    # MediaPipe z: same scale as x (photo width units), smaller = nearer; put the nose tip (landmark 1) at face_depth.
    z_m = (landmarks[:, 2] - landmarks[1, 2]) * size * PHOTO_TO_FRAME_SCALE * metres_per_frame_px + face_depth
    vertices = np.column_stack([landmarks[:, 0] * size, landmarks[:, 1] * size, z_m]).astype(np.float32)
    depth = rasterize_depth(vertices, mesh_triangles(), sample_photo().shape[:2])
    return PhotoDepth(depth_m=_fill_eyes_and_mouth(depth, vertices), face_depth_m=float(face_depth))


def _fill_eyes_and_mouth(depth: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """The tessellation leaves the eyes and the open mouth empty: close them by interpolating the landmark depths
    inside the landmarks' convex hull (a closed face surface, as a depth sensor sees it)."""
    from scipy.interpolate import LinearNDInterpolator

    hull = cv2.convexHull(np.round(vertices[:, :2]).astype(np.int32))
    inside = np.zeros(depth.shape, np.uint8)
    cv2.fillConvexPoly(inside, hull, 1)
    ys, xs = np.nonzero(inside.astype(bool) & (depth == 0))
    if len(xs):
        filled = LinearNDInterpolator(vertices[:, :2], vertices[:, 2])(xs, ys)
        depth = depth.copy()
        depth[ys, xs] = np.nan_to_num(filled, nan=0.0)
    return depth


@functools.lru_cache(maxsize=1)
def photo_landmarks() -> np.ndarray:
    """The photo's face mesh (MediaPipe runs once per process, whatever frame sizes are asked for)."""
    return face_mesh_landmarks(sample_photo())


def face_mesh_landmarks(rgb: np.ndarray) -> np.ndarray:
    """478 refined face-mesh landmarks (x, y normalised to the image, z in image-width units) of the one face."""
    with FaceMesh(max_faces=1, still=True) as mesh:
        found = mesh.find(rgb)
    if not found:
        raise SourceError("sample-rgbd: MediaPipe found no face in the sample photo")
    return found[0].normalised.astype(np.float64)


@functools.lru_cache(maxsize=1)
def mesh_triangles() -> np.ndarray:
    """Triangles (K×3 vertex ids) of the MediaPipe face mesh: the 3-cliques of its tessellation edge graph."""
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    neighbours: dict[int, set[int]] = {}
    for a, b in FACEMESH_TESSELATION:
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    triangles = {
        tuple(sorted((a, b, c)))
        for a, nbrs in neighbours.items()
        for b in nbrs
        for c in nbrs & neighbours[b]
    }
    return np.array(sorted(triangles), dtype=np.int32)


def rasterize_depth(vertices: np.ndarray, triangles: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Z-buffered rasterisation: ``vertices`` (N×3: x px, y px, depth) → float32 H×W depth, nearest surface, 0 = empty.

    Depth is interpolated linearly in screen space (barycentric), exact for the small triangles of a face mesh.

    >>> v = np.array([[0, 0, 1.0], [9, 0, 1.0], [0, 9, 1.0], [0, 0, 0.5], [9, 0, 0.5], [0, 9, 0.5]])
    >>> d = rasterize_depth(v, np.array([[0, 1, 2], [3, 4, 5]]), (10, 10))
    >>> float(d[2, 2]), float(d[8, 8])
    (0.5, 0.0)
    """
    height, width = shape
    zbuf = np.full(shape, np.inf, dtype=np.float32)
    for tri in triangles:
        p = vertices[tri]
        x0, y0 = np.floor(p[:, :2].min(axis=0)).astype(int)
        x1, y1 = np.ceil(p[:, :2].max(axis=0)).astype(int)
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width - 1), min(y1, height - 1)
        if x1 < x0 or y1 < y0:
            continue
        xs, ys = np.meshgrid(np.arange(x0, x1 + 1), np.arange(y0, y1 + 1))
        (ax, ay), (bx, by), (cx, cy) = p[0, :2], p[1, :2], p[2, :2]
        area = (bx - ax) * (cy - ay) - (cx - ax) * (by - ay)
        if abs(area) < 1e-9:
            continue
        w1 = ((xs - ax) * (cy - ay) - (cx - ax) * (ys - ay)) / area
        w2 = ((bx - ax) * (ys - ay) - (xs - ax) * (by - ay)) / area
        w0 = 1.0 - w1 - w2
        inside = (w0 >= -1e-6) & (w1 >= -1e-6) & (w2 >= -1e-6)
        z = w0 * p[0, 2] + w1 * p[1, 2] + w2 * p[2, 2]
        region = zbuf[y0 : y1 + 1, x0 : x1 + 1]
        np.copyto(region, np.minimum(region, z).astype(np.float32), where=inside)
    return np.where(np.isfinite(zbuf), zbuf, 0.0).astype(np.float32)


def render_sample_depth_m(index: int, width: int = 640, height: int = 480, fps: float = 30.0) -> np.ndarray:
    """Clean depth (metres) of frame ``index``, aligned with :func:`render_sample_rgb`: face over a slanted wall."""
    pose = sample_pose(index, fps)
    photo = photo_face_depth(width, height)
    matrix = frame_from_photo_matrix(pose, width, height)
    face = cv2.warpAffine(photo.depth_m, matrix, (width, height), flags=cv2.INTER_NEAREST, borderValue=0.0)
    face /= pose.scale  # a head that looks 1.1× bigger is 1.1× closer
    x = np.arange(width, dtype=np.float32) - width / 2.0
    wall = np.broadcast_to(WALL_DEPTH_M + 0.0003 * x[None, :], (height, width))
    return np.where(face > 0, face, wall).astype(np.float32)


class SampleRGBDSource(SampleSource):
    """``sample-rgbd``: the sample clip with aligned uint16 depth in millimetres and its intrinsics."""

    def __init__(
        self,
        *,
        frames: int = 150,
        width: int = 640,
        height: int = 480,
        fps: float = 30.0,
        real_time: bool = False,
        loop: bool = False,
        seed: int = 0,
        noise: str | None = "realsense",
    ) -> None:
        super().__init__(frames=frames, width=width, height=height, fps=fps, real_time=real_time, loop=loop, seed=seed)
        if noise is not None and noise not in PROFILES:
            raise SourceError(f"sample-rgbd: unknown noise profile {noise!r}; use one of {', '.join(PROFILES)} or None")
        self.noise = noise
        photo_face_depth(width, height)  # run MediaPipe now, so a failure surfaces at open time

    def _name(self) -> str:
        return "sample-rgbd"

    @property
    def info(self) -> SourceInfo:
        base = super().info
        return SourceInfo(**{**base.__dict__, "has_depth": True})

    @property
    def depth_intrinsics(self) -> Intrinsics:
        return self._intrinsics

    def _read(self) -> Capture | None:
        index = self._next_index()
        if index is None:
            return None
        rgb = render_sample_rgb(index, self.width, self.height, self.nominal_fps, self.seed)
        depth_m = render_sample_depth_m(index, self.width, self.height, self.nominal_fps)
        if self.noise is not None:
            rng = np.random.default_rng([self.seed, index, 1])
            depth_m = add_sensor_noise(depth_m, self._intrinsics, rng, self.noise)
        return Capture(rgb=rgb, depth=to_depth_units(depth_m, 0.001), depth_scale_m=0.001)
