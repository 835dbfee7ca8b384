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

from facenormals.geometry import normalise_rows


@dataclass
class Fragments:
    """Visible surface per pixel. ``tri`` is −1 where nothing was drawn.

    The covered pixels are also kept as a compact list in row-major order (``pixels``: flat indices, with their
    triangle and barycentrics), the order ``image[covered]`` gives: shading works on that list and only the
    outputs become H×W images.
    """

    tri: np.ndarray  # H×W int32
    depth: np.ndarray  # H×W float32, distance along the viewing axis, 0 where empty
    pixels: np.ndarray  # N int64 flat indices of the covered pixels, row-major
    pixel_bary: np.ndarray  # N×3 float32, perspective-correct barycentrics of those pixels

    def __post_init__(self) -> None:
        self.covered = self.tri >= 0
        self._tri = self.tri.reshape(-1)[self.pixels]

    @property
    def bary(self) -> np.ndarray:
        """H×W×3 float32 barycentrics, 0 where empty."""
        return self.scatter(self.pixel_bary)

    def scatter(self, values: np.ndarray) -> np.ndarray:
        """Per-pixel values of the covered pixels (N×C) → H×W×C float32, 0 where empty."""
        height, width = self.tri.shape
        out = np.zeros((height * width, values.shape[-1]), dtype=np.float32)
        out[self.pixels] = values
        return out.reshape(height, width, -1)

    def interpolate(self, corner_values: np.ndarray) -> np.ndarray:
        """Interpolate per-corner values (F×3×C) at covered pixels → H×W×C (0 where empty)."""
        vals = corner_values[self._tri].astype(np.float32, copy=False)
        b = self.pixel_bary
        return self.scatter(b[:, 0:1] * vals[:, 0] + b[:, 1:2] * vals[:, 1] + b[:, 2:3] * vals[:, 2])

    def vertex_values(self, values: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """Interpolate per-vertex values (V×C) with the triangles ``faces`` used to rasterise → N×C float32 at
        the covered pixels (``pixels`` order)."""
        values = np.ascontiguousarray(values, dtype=np.float32)
        faces = np.ascontiguousarray(faces, dtype=np.int64)
        if values.ndim != 2 or (faces.size and faces.max() >= len(values)):
            raise ValueError(f"values must be V×C with a row per vertex of faces, got shape {values.shape}")
        out = np.empty((len(self.pixels), values.shape[1]), dtype=np.float32)
        _interpolate_kernel(self._tri, self.pixel_bary, faces, values, out)
        return out

    def interpolate_vertices(self, values: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """Interpolate per-vertex values (V×C) with the triangles ``faces`` used to rasterise → H×W×C."""
        return self.scatter(self.vertex_values(values, faces))


@numba.njit(cache=True, nogil=True)
def _interpolate_kernel(tri: np.ndarray, bary: np.ndarray, faces: np.ndarray, values: np.ndarray,
                        out: np.ndarray) -> None:  # pragma: no cover - compiled
    """out[n] = b0·v[i0] + b1·v[i1] + b2·v[i2] in float32, summed left to right (numpy's order, same bits)."""
    for n in range(tri.shape[0]):
        t = tri[n]
        i0, i1, i2 = faces[t, 0], faces[t, 1], faces[t, 2]
        b0, b1, b2 = bary[n, 0], bary[n, 1], bary[n, 2]
        for c in range(values.shape[1]):
            out[n, c] = b0 * values[i0, c] + b1 * values[i1, c] + b2 * values[i2, c]


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
    pixels = np.flatnonzero(tri >= 0)
    bary = np.empty((len(pixels), 3), dtype=np.float32)
    depth_px = np.empty(len(pixels), dtype=np.float32)
    _barycentrics_kernel(pixels, tri.reshape(-1), width, xy, z, faces, perspective, bary, depth_px)
    dep = np.zeros(height * width, dtype=np.float32)
    dep[pixels] = depth_px
    return Fragments(tri, dep.reshape(height, width), pixels, bary)


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


@numba.njit(cache=True, nogil=True)
def _barycentrics_kernel(pixels: np.ndarray, tri: np.ndarray, width: int, xy: np.ndarray, z: np.ndarray,
                         faces: np.ndarray, perspective: bool, bary: np.ndarray,
                         depth: np.ndarray) -> None:  # pragma: no cover - compiled
    """Barycentrics (perspective-correct when ``perspective``) and depth of the winning triangle per pixel.

    Float64 edge functions at the pixel centre, clipped to [0, 1]; the operations and their order are those of
    the former numpy version (tests/test_data_renderer.py keeps that version and checks equal bits).
    """
    for n in range(pixels.shape[0]):
        p = pixels[n]
        py, px = float(p // width), float(p % width)
        t = tri[p]
        i0, i1, i2 = faces[t, 0], faces[t, 1], faces[t, 2]
        ax, ay, bx, by, cx, cy = xy[i0, 0], xy[i0, 1], xy[i1, 0], xy[i1, 1], xy[i2, 0], xy[i2, 1]
        area = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
        w_a = ((bx - px) * (cy - py) - (by - py) * (cx - px)) / area
        w_b = ((cx - px) * (ay - py) - (cy - py) * (ax - px)) / area
        w_c = 1.0 - w_a - w_b
        s_a = min(max(w_a, 0.0), 1.0)
        s_b = min(max(w_b, 0.0), 1.0)
        s_c = min(max(w_c, 0.0), 1.0)
        if perspective:
            p_a, p_b, p_c = s_a / z[i0], s_b / z[i1], s_c / z[i2]
            inv_depth = p_a + p_b + p_c
            bary[n, 0], bary[n, 1], bary[n, 2] = p_a / inv_depth, p_b / inv_depth, p_c / inv_depth
            depth[n] = 1.0 / inv_depth
        else:
            bary[n, 0], bary[n, 1], bary[n, 2] = s_a, s_b, s_c
            depth[n] = s_a * z[i0] + s_b * z[i1] + s_c * z[i2]


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted outward vertex normals (counter-clockwise winding = outward); unused vertices get 0."""
    v = np.ascontiguousarray(vertices, dtype=np.float64)
    f = np.ascontiguousarray(faces, dtype=np.int64)
    if f.size and (f.ndim != 2 or f.shape[1] != 3 or f.min() < 0 or f.max() >= len(v)):
        raise ValueError(f"faces must be F×3 indices into {len(v)} vertices")  # the compiled loop does not check
    corner_sums = np.zeros((3, len(v), 3))
    _corner_normal_sums(v, f, corner_sums)
    normals = np.zeros_like(v)
    for k in range(3):  # first corners, then second, then third: the summation order of the former bincounts
        normals += corner_sums[k]
    return normalise_rows(normals, 1e-12).astype(np.float32)


@numba.njit(cache=True, nogil=True)
def _corner_normal_sums(v: np.ndarray, f: np.ndarray, sums: np.ndarray) -> None:  # pragma: no cover - compiled
    """sums[k, i] = Σ of the face normals (2 × area) of the triangles whose k-th corner is vertex i, in face order."""
    for t in range(f.shape[0]):
        i0, i1, i2 = f[t, 0], f[t, 1], f[t, 2]
        a0, a1, a2 = v[i1, 0] - v[i0, 0], v[i1, 1] - v[i0, 1], v[i1, 2] - v[i0, 2]
        b0, b1, b2 = v[i2, 0] - v[i0, 0], v[i2, 1] - v[i0, 1], v[i2, 2] - v[i0, 2]
        n0, n1, n2 = a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0  # np.cross's formula
        for k in range(3):
            i = f[t, k]
            sums[k, i, 0] += n0
            sums[k, i, 1] += n1
            sums[k, i, 2] += n2
