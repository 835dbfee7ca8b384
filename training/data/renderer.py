"""A CPU z-buffer rasteriser: triangles → per-pixel triangle id, barycentrics and depth.

Convention: screen coordinates are (x, y) = (column, row) in pixels, pixel centres at integers, y down;
``depth`` is the positive distance along the camera's viewing axis. Attributes are interpolated
perspective-correctly (1/depth weighting), so pinhole renders of planes give exact normals.

Why this design (see the README "Training data" section): the machines have no GPU and no display, so
OpenGL needs OSMesa/EGL builds that are not installed; ray casting (trimesh) needs rtree/Embree and pays
per pixel. Faces at 256² cover ~10⁴–10⁵ pixels with triangles of 1–4 pixels: set-up and culling are
vectorised numpy, the per-pixel visibility loop is compiled with numba (already a project dependency for
facenormals.mesh_prior), and barycentrics of the winning triangles are again computed in numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np


@dataclass
class Fragments:
    """Visible surface per pixel. ``tri`` is −1 where nothing was drawn."""

    tri: np.ndarray  # H×W int32
    bary: np.ndarray  # H×W×3 float32, perspective-correct, 0 where empty
    depth: np.ndarray  # H×W float32, distance along the viewing axis, 0 where empty

    def __post_init__(self) -> None:
        self.covered = self.tri >= 0
        self._flat = np.flatnonzero(self.covered)
        self._tri = self.tri.reshape(-1)[self._flat]
        self._bary = self.bary.reshape(-1, 3)[self._flat]

    def _scatter(self, values: np.ndarray) -> np.ndarray:
        height, width = self.tri.shape
        out = np.zeros((height * width, values.shape[-1]), dtype=np.float32)
        out[self._flat] = values
        return out.reshape(height, width, -1)

    def interpolate(self, corner_values: np.ndarray) -> np.ndarray:
        """Interpolate per-corner values (F×3×C) at covered pixels → H×W×C (0 where empty)."""
        vals = corner_values[self._tri].astype(np.float32, copy=False)
        b = self._bary
        return self._scatter(b[:, 0:1] * vals[:, 0] + b[:, 1:2] * vals[:, 1] + b[:, 2:3] * vals[:, 2])

    def interpolate_vertices(self, values: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """Interpolate per-vertex values (V×C) with the triangles ``faces`` used to rasterise → H×W×C."""
        ids = faces[self._tri]
        values = np.asarray(values, dtype=np.float32)
        b = self._bary
        return self._scatter(b[:, 0:1] * values[ids[:, 0]] + b[:, 1:2] * values[ids[:, 1]]
                             + b[:, 2:3] * values[ids[:, 2]])


def rasterize(screen_xy: np.ndarray, depth: np.ndarray, faces: np.ndarray, size: tuple[int, int],
              cull_backfaces: bool = True, perspective: bool = True) -> Fragments:
    """Rasterise triangles given projected vertices.

    screen_xy: V×2 pixel coordinates (x right, y down); depth: V positive distances; faces: F×3 indices,
    counter-clockwise seen from the camera (+z toward the viewer) when ``cull_backfaces``.
    ``perspective``: interpolate with 1/depth weights (pinhole); False for (weak-)orthographic projections,
    where attributes are affine in screen space.
    """
    height, width = size
    faces = np.asarray(faces, dtype=np.int64)
    xy = np.ascontiguousarray(screen_xy, dtype=np.float64)
    z = np.ascontiguousarray(depth, dtype=np.float64)
    if xy.shape != (len(z), 2):
        raise ValueError(f"screen_xy must be V×2 with one depth per vertex, got {xy.shape} and {z.shape}")
    if faces.size and (faces.ndim != 2 or faces.shape[1] != 3 or faces.min() < 0 or faces.max() >= len(z)):
        raise ValueError(f"faces must be F×3 indices into {len(z)} vertices")  # the compiled loop does not check
    tri = np.full((height, width), -1, dtype=np.int32)
    zbuf = np.full((height, width), np.inf)
    _zbuffer(xy, z, np.ascontiguousarray(faces), bool(cull_backfaces), bool(perspective), tri, zbuf)
    bary, dep = _barycentrics(tri, xy, z, faces, perspective)
    return Fragments(tri, bary, dep)


@numba.njit(cache=True, nogil=True)
def _zbuffer(xy: np.ndarray, z: np.ndarray, faces: np.ndarray, cull_backfaces: bool, perspective: bool,
             tri: np.ndarray, zbuf: np.ndarray) -> None:  # pragma: no cover - compiled
    """For each triangle (in index order), each pixel centre inside it: keep the nearest surface.

    Skipped: degenerate triangles, back faces (counter-clockwise in camera space = negative signed area
    with y down) when culling, vertices behind the camera or not finite. Ties keep the earlier triangle,
    so the result depends on the inputs only. Edges are closed (a small tolerance): pixels on a shared
    edge are never missed.
    """
    height, width = tri.shape
    for t in range(faces.shape[0]):
        i0, i1, i2 = faces[t, 0], faces[t, 1], faces[t, 2]
        ax, ay, bx, by, cx, cy = xy[i0, 0], xy[i0, 1], xy[i1, 0], xy[i1, 1], xy[i2, 0], xy[i2, 1]
        za, zb, zc = z[i0], z[i1], z[i2]
        if not (np.isfinite(ax + ay + bx + by + cx + cy) and za > 1e-6 and zb > 1e-6 and zc > 1e-6):
            continue
        area = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
        if abs(area) <= 1e-9 or (cull_backfaces and area >= 0):
            continue
        inv = 1.0 / area
        x0 = max(int(np.ceil(min(ax, bx, cx))), 0)
        x1 = min(int(np.floor(max(ax, bx, cx))), width - 1)
        y0 = max(int(np.ceil(min(ay, by, cy))), 0)
        y1 = min(int(np.floor(max(ay, by, cy))), height - 1)
        for py in range(y0, y1 + 1):
            for px in range(x0, x1 + 1):
                wa = ((bx - px) * (cy - py) - (by - py) * (cx - px)) * inv
                wb = ((cx - px) * (ay - py) - (cy - py) * (ax - px)) * inv
                wc = 1.0 - wa - wb
                if wa < -1e-7 or wb < -1e-7 or wc < -1e-7:
                    continue
                d = 1.0 / (wa / za + wb / zb + wc / zc) if perspective else wa * za + wb * zb + wc * zc
                if d < zbuf[py, px]:
                    zbuf[py, px] = d
                    tri[py, px] = t


def _barycentrics(tri: np.ndarray, xy: np.ndarray, z: np.ndarray, faces: np.ndarray,
                  perspective: bool) -> tuple[np.ndarray, np.ndarray]:
    """Barycentrics (perspective-correct when ``perspective``) and depth of the winning triangle per pixel."""
    height, width = tri.shape
    bary = np.zeros((height, width, 3), dtype=np.float32)
    depth = np.zeros((height, width), dtype=np.float32)
    rows, cols = np.nonzero(tri >= 0)
    if rows.size == 0:
        return bary, depth
    f = faces[tri[rows, cols]]
    a, b, c = xy[f[:, 0]], xy[f[:, 1]], xy[f[:, 2]]
    px, py = cols.astype(np.float64), rows.astype(np.float64)
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    w_a = ((b[:, 0] - px) * (c[:, 1] - py) - (b[:, 1] - py) * (c[:, 0] - px)) / area
    w_b = ((c[:, 0] - px) * (a[:, 1] - py) - (c[:, 1] - py) * (a[:, 0] - px)) / area
    screen = np.clip(np.stack([w_a, w_b, 1.0 - w_a - w_b], axis=1), 0.0, 1.0)
    if perspective:
        persp = screen / z[f]
        inv_depth = persp.sum(axis=1, keepdims=True)
        bary[rows, cols] = (persp / inv_depth).astype(np.float32)
        depth[rows, cols] = (1.0 / inv_depth[:, 0]).astype(np.float32)
    else:
        bary[rows, cols] = screen.astype(np.float32)
        depth[rows, cols] = np.sum(screen * z[f], axis=1).astype(np.float32)
    return bary, depth


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted outward vertex normals (counter-clockwise winding = outward); unused vertices get 0."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    normals = np.zeros_like(v)
    for k in range(3):
        for axis in range(3):
            normals[:, axis] += np.bincount(f[:, k], weights=fn[:, axis], minlength=len(v))
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return (normals / np.maximum(length, 1e-12)).astype(np.float32)
