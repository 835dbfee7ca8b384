"""ICT-FaceKit Light (``ict_facekit.npz``, see its README): random identities and expressions.

Axes are already OpenGL camera axes for a frontal view (+x subject's left = image right, +y up, +z toward
the viewer); units are centimetres.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numba
import numpy as np

from facenormals.fileio import DataError

# Regions (ICT README): 0 face, 1 head_neck, 2 mouth_socket, 3/4 eye sockets, 5 gums_tongue, 6 teeth,
# 7/8 eyeballs (sclera then iris vertex ranges). 9–16 are transparent overlay cards: never rendered.
FACE, HEAD_NECK, MOUTH_SOCKET, EYE_SOCKET_L, EYE_SOCKET_R, GUMS, TEETH, EYEBALL_L, EYEBALL_R = range(9)
RENDERED_REGIONS = 8  # keep triangles with face_region <= 8
IRIS_RANGES = ((22221, 23020), (23791, 24590))
EYEBALL_RANGES = ((21451, 23020), (23021, 24590))

# Vertices that trace the facial outline (forehead → temples → jaw → chin) like MediaPipe's FACEMESH_FACE_OVAL.
# Their projected convex hull is the facial mask and their 1.2× square the crop, exactly as the realtime path
# builds both from MediaPipe landmarks. Found by running MediaPipe face mesh on frontal renders of the
# neutral head (512², focal 1500 px at 90 cm) and taking the front-facing face vertex nearest to each of the
# 36 FACE_OVAL landmarks in the image. tests/test_data_mask.py re-checks the agreement (IoU) with MediaPipe.
FACE_OVAL: tuple[int, ...] = (1851, 297, 324, 1717, 1860, 1248, 1864, 1427, 253, 366, 829, 1497, 804, 437, 966, 1879,
                              8908, 1443, 7874, 3447, 4157, 2478, 4060, 6779, 4186, 2570, 7275, 7122, 9136, 3711,
                              3044, 4031, 8578, 4102, 2571, 7213)

REQUIRED = ("neutral", "identity", "expression", "expression_names", "expression_in_official_53", "faces",
            "face_region", "region", "landmarks68")


def default_ict_path() -> Path:
    """``$FACENORMALS_SHARED/data/ict-facekit/ict_facekit.npz``, else ``../shared`` next to the repository."""
    root = Path(os.environ.get("FACENORMALS_SHARED", Path(__file__).resolve().parents[3] / "shared"))
    return root / "data" / "ict-facekit" / "ict_facekit.npz"


@dataclass
class FaceShape:
    vertices: np.ndarray  # V×3 float32, cm
    identity: np.ndarray  # 100 weights
    expression: np.ndarray  # 57 weights
    gaze: tuple[float, float]  # eyeball yaw, pitch in degrees


class IctModel:
    """The morphable model: ``neutral + identity·w_id + expression·w_ex``, plus labels the renderer needs."""

    def __init__(self, path: str | Path | None = None) -> None:
        path = Path(path) if path is not None else default_ict_path()
        if not path.is_file():
            raise DataError(f"{path}: ICT-FaceKit model not found (expected ict_facekit.npz; see README)")
        try:
            z = np.load(path, allow_pickle=False)
            missing = [k for k in REQUIRED if k not in z.files]
        except (OSError, ValueError) as err:
            raise DataError(f"{path}: not a readable .npz ({err})") from err
        if missing:
            raise DataError(f"{path}: missing arrays {missing}")
        self.path = path
        self.neutral = z["neutral"].astype(np.float32)
        n = self.neutral.size
        self.identity_basis = z["identity"].astype(np.float32).reshape(-1, n)
        self.expression_basis = z["expression"].astype(np.float32).reshape(-1, n)
        self.expression_names = [str(s) for s in z["expression_names"]]
        self.official = z["expression_in_official_53"].astype(bool)
        keep = z["face_region"] <= RENDERED_REGIONS
        self.faces = z["faces"][keep].astype(np.int32)
        self.face_region = z["face_region"][keep].astype(np.int32)
        self.region = z["region"].astype(np.int32)
        self.landmarks68 = z["landmarks68"].astype(np.int64)
        self.uv = z["uv"].astype(np.float32) if "uv" in z.files else None
        self.faces_uv = z["faces_uv"][keep].astype(np.int32) if "faces_uv" in z.files else None

    @property
    def num_vertices(self) -> int:
        return len(self.neutral)

    @cached_property
    def eyeball_centres(self) -> np.ndarray:
        """Rotation centres of the two eyeballs: the centre of a sphere through the sclera (2×3)."""
        centres = []
        for lo, hi in EYEBALL_RANGES:
            pts = self.neutral[lo:hi + 1].astype(np.float64)
            # least-squares sphere fit: |p|² = 2 c·p + (r² − |c|²)
            a = np.hstack([2 * pts, np.ones((len(pts), 1))])
            sol, *_ = np.linalg.lstsq(a, (pts ** 2).sum(1), rcond=None)
            centres.append(sol[:3])
        return np.array(centres, np.float32)

    def sample(self, rng: np.random.Generator, expression_scale: float = 1.0, p_active: float = 0.15,
               identity_scale: float = 1.0, max_gaze_deg: float = 18.0) -> FaceShape:
        """Random identity ~ N(0, 1)·scale, sparse U[0, 1] expression, random gaze."""
        w_id = (rng.standard_normal(len(self.identity_basis)) * identity_scale).astype(np.float32)
        w_ex = rng.uniform(0.0, 1.0, len(self.expression_basis)).astype(np.float32) * expression_scale
        w_ex *= (rng.random(len(w_ex)) < p_active) & self.official
        names = self.expression_names
        jaw, close = names.index("jawOpen"), names.index("mouthClose")
        w_ex[close] = min(w_ex[close], w_ex[jaw])  # corrective shape: lips cross through each other otherwise
        gaze = (float(rng.uniform(-max_gaze_deg, max_gaze_deg)), float(rng.uniform(-max_gaze_deg, max_gaze_deg) * 0.6))
        return FaceShape(self.build(w_id, w_ex, gaze), w_id, w_ex, gaze)

    @cached_property
    def _face_triangles(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The face region's triangles: (triangles, their vertex ids, triangles in those ids, neutral normals)."""
        faces = self.faces[self.face_region == FACE]
        ids, local = np.unique(faces, return_inverse=True)
        return faces, ids, local.reshape(faces.shape).astype(np.int32), _triangle_normals(self.neutral, faces)

    @cached_property
    def _face_identity_basis(self) -> tuple[np.ndarray, np.ndarray]:
        _faces, ids, _local, _ref = self._face_triangles
        columns = (ids[:, None] * 3 + np.arange(3)).ravel()
        return self.neutral[ids], np.ascontiguousarray(self.identity_basis[:, columns])

    def folded_share(self, vertices: np.ndarray) -> float:
        """Share of the face's triangles turned over against the neutral head's: a cheap self-intersection
        proxy (skin that folds through itself flips its triangles; on ICT's own N(0, 1) faces it is ≤ 0.17 %,
        all on the eyelids)."""
        faces, _ids, _local, reference = self._face_triangles
        return _folded_share(vertices, faces, reference)

    def identity_folded_share(self, w_id: np.ndarray) -> float:
        """:meth:`folded_share` of the identity ``w_id`` with a neutral expression, built on the face's vertices
        only (a third of the head: the plausibility check costs ~1 ms)."""
        _faces, _ids, local, reference = self._face_triangles
        neutral, basis = self._face_identity_basis
        vertices = neutral + (w_id.astype(np.float32) @ basis).reshape(-1, 3)
        return _folded_share(vertices, local, reference)

    def build(self, w_id: np.ndarray, w_ex: np.ndarray, gaze: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
        offsets = w_id @ self.identity_basis + w_ex @ self.expression_basis
        vertices = self.neutral + offsets.reshape(-1, 3)
        if gaze != (0.0, 0.0):
            rot = _yaw_pitch(*gaze)
            for (lo, hi), centre0 in zip(EYEBALL_RANGES, self.eyeball_centres, strict=True):
                # the eyeball moves with the identity: take its centre on this mesh (same sphere-fit offset)
                shift = vertices[lo:hi + 1].mean(0) - self.neutral[lo:hi + 1].mean(0)
                centre = centre0 + shift
                vertices[lo:hi + 1] = (vertices[lo:hi + 1] - centre) @ rot.T + centre
        return vertices.astype(np.float32)


def _triangle_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    v = vertices.astype(np.float32)
    return np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])


def _folded_share(vertices: np.ndarray, faces: np.ndarray, reference: np.ndarray) -> float:
    """Share of ``faces`` whose normal (float32, as :func:`_triangle_normals`) points against ``reference``'s."""
    if len(faces) == 0:
        return float("nan")  # the mean of nothing, as numpy gives it
    if faces.max() >= len(vertices):
        raise ValueError(f"faces index {faces.max()} past the {len(vertices)} vertices")  # the compiled loop does not check
    count = _count_folded(np.ascontiguousarray(vertices, dtype=np.float32), np.ascontiguousarray(faces),
                          np.ascontiguousarray(reference, dtype=np.float32))
    return count / len(faces)


@numba.njit(cache=True, nogil=True)
def _count_folded(v: np.ndarray, faces: np.ndarray, reference: np.ndarray) -> int:  # pragma: no cover - compiled
    """Triangles with n·reference < 0, n = np.cross(v1 − v0, v2 − v0) in float32: numpy's operations in numpy's
    order (the same count as the former vectorised check, without its six F×3 temporaries)."""
    count = 0
    for t in range(faces.shape[0]):
        i0, i1, i2 = faces[t, 0], faces[t, 1], faces[t, 2]
        a0, a1, a2 = v[i1, 0] - v[i0, 0], v[i1, 1] - v[i0, 1], v[i1, 2] - v[i0, 2]
        b0, b1, b2 = v[i2, 0] - v[i0, 0], v[i2, 1] - v[i0, 1], v[i2, 2] - v[i0, 2]
        n0, n1, n2 = a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0
        if n0 * reference[t, 0] + n1 * reference[t, 1] + n2 * reference[t, 2] < 0:
            count += 1
    return count


def _yaw_pitch(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    y, p = np.radians(yaw_deg), np.radians(pitch_deg)
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    return (ry @ rx).astype(np.float32)

