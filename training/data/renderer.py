"""A vectorised numpy z-buffer rasteriser: triangles → per-pixel triangle id and barycentrics.

Convention: screen coordinates are (x, y) = (column, row) in pixels, pixel centres at integers, y down;
``depth`` is the positive distance along the camera's viewing axis. Attributes are interpolated
perspective-correctly (1/depth weighting), so pinhole renders of planes give exact normals.

Why numpy (see the README "Training data" section): the machines have no GPU and no display, so OpenGL
needs OSMesa/EGL builds that are not installed; ray casting (trimesh/embree) pays per pixel and loses
the per-triangle coherence. Faces at 256² cover ~10⁴–10⁵ pixels with triangles of 1–4 pixels, so one
sort of all candidate fragments resolves visibility in a few milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_KEY_BITS = 63  # pixel | quantised depth | triangle id packed into one sortable int64


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
    tri_bits = max(1, len(faces).bit_length())
    depth_bits = _KEY_BITS - tri_bits - max(1, int(height * width).bit_length())
    if depth_bits < 12:
        raise ValueError(f"{len(faces)} triangles at {width}×{height} leave too few depth bits ({depth_bits})")
    xy = np.asarray(screen_xy, dtype=np.float64)
    z = np.asarray(depth, dtype=np.float64)
    p0, p1, p2 = xy[faces[:, 0]], xy[faces[:, 1]], xy[faces[:, 2]]
    # Signed area with y down: counter-clockwise in camera space (y up) is negative here.
    area = (p1[:, 0] - p0[:, 0]) * (p2[:, 1] - p0[:, 1]) - (p1[:, 1] - p0[:, 1]) * (p2[:, 0] - p0[:, 0])
    keep = np.abs(area) > 1e-9
    if cull_backfaces:
        keep &= area < 0
    keep &= (z[faces] > 1e-6).all(axis=1) & np.isfinite(xy[faces]).all(axis=(1, 2))
    lo = np.minimum(np.minimum(p0, p1), p2)
    hi = np.maximum(np.maximum(p0, p1), p2)
    x0 = np.clip(np.ceil(lo[:, 0]), 0, width).astype(np.int64)
    x1 = np.clip(np.floor(hi[:, 0]), -1, width - 1).astype(np.int64)
    y0 = np.clip(np.ceil(lo[:, 1]), 0, height).astype(np.int64)
    y1 = np.clip(np.floor(hi[:, 1]), -1, height - 1).astype(np.int64)
    keep &= (x1 >= x0) & (y1 >= y0)
    ids = np.nonzero(keep)[0]
    extent = np.maximum(x1 - x0, y1 - y0)[ids] + 1

    zmin, zmax = (z.min(), z.max()) if len(z) else (0.0, 1.0)
    bits = (depth_bits, tri_bits)
    zscale = ((1 << depth_bits) - 1) / max(zmax - zmin, 1e-9)
    keys = []
    # Group triangles by bounding-box size so each group tests a fixed s×s grid of candidate pixels.
    bucket = np.ceil(np.log2(np.maximum(extent, 1))).astype(np.int64)
    for level in np.unique(bucket):
        sel = ids[bucket == level]
        side = 1 << int(level)
        for chunk in np.array_split(sel, max(1, len(sel) * side * side // 2_000_000 + 1)):
            keys.append(_fragment_keys(chunk, side, xy, z, faces, area, x0, x1, y0, y1, width, zmin, zscale, bits,
                                      perspective))
    tri = np.full(height * width, -1, dtype=np.int32)
    if keys:
        allkeys = np.concatenate(keys)
        if allkeys.size:
            allkeys.sort()
            pix = allkeys >> (depth_bits + tri_bits)
            first = np.ones(len(pix), dtype=bool)
            first[1:] = pix[1:] != pix[:-1]
            winners = allkeys[first]
            tri[winners >> (depth_bits + tri_bits)] = (winners & ((1 << tri_bits) - 1)).astype(np.int32)
    tri = tri.reshape(height, width)
    bary, dep = _barycentrics(tri, xy, z, faces, perspective)
    return Fragments(tri, bary, dep)


def _fragment_keys(chunk: np.ndarray, side: int, xy: np.ndarray, z: np.ndarray, faces: np.ndarray,
                   area: np.ndarray, x0: np.ndarray, x1: np.ndarray, y0: np.ndarray, y1: np.ndarray,
                   width: int, zmin: float, zscale: float, bits: tuple[int, int], perspective: bool) -> np.ndarray:
    """Sortable int64 keys (pixel, quantised depth, triangle) of the candidate pixels inside each triangle.

    Edge functions are evaluated in float32 relative to each bounding box's corner: the numbers stay
    within a few box sides, so float32 is as exact as float64 in frame coordinates, at half the memory traffic.
    """
    f = faces[chunk]
    origin = np.stack([x0[chunk], y0[chunk]], axis=1).astype(np.float64)
    a = (xy[f[:, 0]] - origin).astype(np.float32)
    b = (xy[f[:, 1]] - origin).astype(np.float32)
    c = (xy[f[:, 2]] - origin).astype(np.float32)
    inv_area = (1.0 / area[chunk]).astype(np.float32)[:, None, None]
    gx = np.arange(side, dtype=np.float32)[None, None, :]
    gy = np.arange(side, dtype=np.float32)[None, :, None]
    ax, ay = a[:, 0, None, None], a[:, 1, None, None]
    bx, by = b[:, 0, None, None], b[:, 1, None, None]
    cx, cy = c[:, 0, None, None], c[:, 1, None, None]
    # Edge functions, normalised by the signed area → barycentric weights of a, b, c.
    w_a = ((bx - gx) * (cy - gy) - (by - gy) * (cx - gx)) * inv_area
    w_b = ((cx - gx) * (ay - gy) - (cy - gy) * (ax - gx)) * inv_area
    w_c = 1.0 - w_a - w_b
    eps = np.float32(-1e-5)  # closed edges: shared edges are drawn twice, never missed
    inside = (w_a >= eps) & (w_b >= eps) & (w_c >= eps)
    inside &= gx <= (x1 - x0)[chunk, None, None]
    inside &= gy <= (y1 - y0)[chunk, None, None]
    n, row, col = np.nonzero(inside)
    wa = w_a[n, row, col].astype(np.float64)
    wb = w_b[n, row, col].astype(np.float64)
    wc = 1.0 - wa - wb
    zn = z[f[n]]
    dep = (1.0 / (wa / zn[:, 0] + wb / zn[:, 1] + wc / zn[:, 2]) if perspective
           else wa * zn[:, 0] + wb * zn[:, 1] + wc * zn[:, 2])
    depth_bits, tri_bits = bits
    dq = np.clip((dep - zmin) * zscale, 0, (1 << depth_bits) - 1).astype(np.int64)
    pix = (y0[chunk][n] + row) * width + x0[chunk][n] + col
    return (pix << (depth_bits + tri_bits)) | (dq << tri_bits) | chunk[n]


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
