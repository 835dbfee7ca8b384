"""MediaPipe face-mesh normals rasterised on a crop: the coarse-geometry prior and the `mediapipe-mesh` baseline.

Convention: crop points are in crop pixel units in our camera frame: x = crop column (right), y = −crop row
(**up**), z toward the camera, with pixel centres at integer coordinates (as in :mod:`facenormals.geometry`).
The projection is orthographic (MediaPipe's landmarks are weak-perspective: x, y on the image, z a relative
depth on the scale of x), so a triangle's normal is the cross product of its edges in this frame.

MediaPipe landmarks (``mp.solutions.face_mesh``): x, y normalised by the image width and height (pixel =
normalised × size, :func:`facenormals.faces.mesh_to_pixels`), z normalised by the width, **smaller z = closer to
the camera**. 468 mesh points, 478 with ``refine_landmarks`` (the ten iris points belong to no triangle and
are ignored).

The triangle list is MediaPipe's canonical face tessellation (852 triangles, consistently wound), stored in
``assets/face_mesh_triangles.npy`` — derived from ``FACEMESH_TESSELATION`` in the mediapipe wheel
(Apache-2.0, © Google LLC; see :func:`derive_tessellation_triangles`). The tessellation leaves the eyes and
the mouth open; :func:`mesh_triangles` closes them by default with strips between the lids / lips, so the
prior also covers the eyes and a closed mouth.

The rasteriser is a per-pixel z-buffer over the triangles' pixel centres, compiled with numba (about
0.5 ms for the face mesh at 256²; ``benchmarks/mesh_prior.py``). Pixels outside coverage hold the zero
vector (the project's "no normal"); when MediaPipe finds no face, :func:`empty_prior` gives all zeros
and no coverage.

>>> mesh_triangles().shape
(852, 3)
>>> mesh_triangles(close_holes=True).shape[0] - 852  # (16-2) + (16-2) + (20-2) strip triangles
46
"""

from __future__ import annotations

import ast
import inspect
from functools import lru_cache
from pathlib import Path

import cv2
import numba
import numpy as np

from facenormals.faces import FaceMesh, mesh_in_view, mesh_to_pixels
from facenormals.geometry import normalise_rows

ASSET = Path(__file__).resolve().parent / "assets" / "face_mesh_triangles.npy"
NUM_MESH_POINTS = 468  # the tessellated points; refine_landmarks adds 10 iris points after them
# One corner of each hole: the strip closing a hole starts there (eye corners, inner mouth corner).
HOLE_CORNERS = (33, 362, 78)
# A crop the face fills that the mesh misses is looked at again zoomed out this much (1: not at all).
CROP_ZOOM_OUT = 2.0


def derive_tessellation_triangles() -> np.ndarray:
    """MediaPipe's triangles from the installed wheel's ``FACEMESH_TESSELATION`` source.

    The frozenset loses the order, but its source literal lists every triangle as three consecutive directed
    edges (a, b), (b, c), (c, a): reading the literal in order recovers the triangles with their winding.
    """
    from mediapipe.python.solutions import face_mesh_connections

    tree = ast.parse(inspect.getsource(face_mesh_connections))
    edges = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "FACEMESH_TESSELATION":
            edges = ast.literal_eval(node.value.args[0])
    if edges is None or len(edges) % 3:
        raise RuntimeError("mediapipe's FACEMESH_TESSELATION literal is missing or not made of edge triples")
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 3, 2)
    closed = (edges[:, 0, 1] == edges[:, 1, 0]) & (edges[:, 1, 1] == edges[:, 2, 0]) & (edges[:, 2, 1] == edges[:, 0, 0])
    if not closed.all():
        raise RuntimeError("FACEMESH_TESSELATION edges do not form triangles in source order")
    # MediaPipe's source order is already counter-clockwise seen from outside in our y-up frame
    return np.ascontiguousarray(edges[:, :, 0]).astype(np.int16)


def boundary_loops(triangles: np.ndarray) -> list[np.ndarray]:
    """Closed loops of boundary vertices, each following the triangles' winding (the surface on its left)."""
    directed = {(int(a), int(b)) for tri in triangles for a, b in ((tri[0], tri[1]), (tri[1], tri[2]), (tri[2], tri[0]))}
    nxt = {a: b for a, b in directed if (b, a) not in directed}
    loops, seen = [], set()
    for start in sorted(nxt):
        if start in seen:
            continue
        loop, v = [], start
        while v not in seen:
            seen.add(v)
            loop.append(v)
            v = nxt[v]
        loops.append(np.array(loop))
    return loops


def strip_fill(loop: np.ndarray, corner: int) -> np.ndarray:
    """Triangles closing a hole bounded by ``loop``: a zig-zag strip between its two sides from ``corner``.

    The hole is on the right of the loop's direction, so the fill walks it backwards to keep the winding.
    """
    poly = loop[::-1]
    poly = np.roll(poly, -int(np.nonzero(poly == corner)[0][0]))
    i, j, out = 1, len(poly) - 1, [(poly[0], poly[1], poly[-1])]
    while j - i > 1:
        if len(out) % 2:
            out.append((poly[i], poly[i + 1], poly[j]))
            i += 1
        else:
            out.append((poly[i], poly[j - 1], poly[j]))
            j -= 1
    return np.array(out, dtype=np.int16)


@lru_cache(maxsize=2)
def _triangles(close_holes: bool) -> np.ndarray:
    base = np.load(ASSET, allow_pickle=False).astype(np.int64)
    if not close_holes:
        return base
    fills = []
    for loop in boundary_loops(base):
        corner = [c for c in HOLE_CORNERS if c in loop]
        if corner:  # the outer contour has none: it stays open
            fills.append(strip_fill(loop, corner[0]))
    return np.concatenate([base, *fills]).astype(np.int64)


def mesh_triangles(close_holes: bool = False) -> np.ndarray:
    """(T, 3) int vertex indices of the face mesh, wound counter-clockwise seen from outside (our frame).

    ``close_holes`` adds the strips over both eyes and the mouth (what the prior rasterises).
    """
    return _triangles(close_holes).copy()


def landmarks_in_crop(landmarks_norm: np.ndarray, frame_shape: tuple[int, ...],
                      crop_matrix: np.ndarray) -> np.ndarray:
    """MediaPipe normalised landmarks of a frame → crop points (N, 3) in crop pixels, our frame (x right, y up, z to camera).

    ``frame_shape`` is the (rows, cols[, 3]) of the image MediaPipe saw; ``crop_matrix`` the 2×3 affine
    frame → crop (e.g. ``Crop.matrix``); its scale also scales the depth.
    """
    points = np.asarray(landmarks_norm, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) < NUM_MESH_POINTS:
        raise ValueError(f"expected MediaPipe landmarks of shape (468 or 478, 3), got {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError("landmarks contain NaN or infinite values")
    matrix = np.asarray(crop_matrix, dtype=np.float64)
    if matrix.shape != (2, 3):
        raise ValueError(f"expected a 2×3 crop matrix, got shape {matrix.shape}")
    height, width = frame_shape[:2]
    frame_xy, depth_px = mesh_to_pixels(points, width, height, np.float64)  # the one landmark → pixel convention
    return crop_points_from_pixels(frame_xy, depth_px, matrix)


def crop_points_from_pixels(landmarks_px: np.ndarray, depth_px: np.ndarray, crop_matrix: np.ndarray) -> np.ndarray:
    """Frame-pixel landmarks (N, 2) and MediaPipe depth in frame pixels (N,; smaller = nearer) → crop points (N, 3).

    The realtime loop's form of :func:`landmarks_in_crop` (its landmarks are already pixels, smoothed).
    """
    matrix = np.asarray(crop_matrix, dtype=np.float64)
    crop_xy = np.asarray(landmarks_px, dtype=np.float64) @ matrix[:, :2].T + matrix[:, 2]
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    return np.stack([crop_xy[:, 0], -crop_xy[:, 1], -np.asarray(depth_px, dtype=np.float64) * scale], axis=1)


def vertex_normals(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (N, 3) of a CCW-from-outside mesh in our frame."""
    sums = np.zeros((len(points), 3))
    _accumulate_face_normals(np.ascontiguousarray(points, dtype=np.float64), _index_array(triangles), sums)
    return normalise_rows(sums, 1e-12)


def _index_array(triangles: np.ndarray) -> np.ndarray:
    """C-contiguous int32 or int64 as given (anything else → int64): the kernels take both (unchecked: per frame)."""
    triangles = np.asarray(triangles)
    return np.ascontiguousarray(triangles, dtype=triangles.dtype if triangles.dtype in (np.int32, np.int64) else np.int64)


def checked_triangles(triangles: np.ndarray, num_points: int, dtype: type | None = None) -> np.ndarray:
    """Triangles as C-contiguous int32/int64 (T, 3) indexing ``num_points`` points, checked (ValueError otherwise).

    ``dtype``: the index type; None keeps int32/int64 as given (anything else → int64). The prior's cached int32
    copies halve the index traffic of the ICT face's 24 724 triangles every frame.
    """
    triangles = _index_array(triangles) if dtype is None else np.ascontiguousarray(triangles, dtype=dtype)
    if triangles.ndim != 2 or triangles.shape[1] != 3 or triangles.size == 0:
        raise ValueError(f"expected triangles of shape (T, 3), got {triangles.shape}")
    if triangles.min() < 0 or triangles.max() >= num_points:
        raise ValueError(f"triangle indices out of range for {num_points} points")
    return triangles


@numba.njit(cache=True, nogil=True)
def _accumulate_face_normals(points: np.ndarray, triangles: np.ndarray, sums: np.ndarray) -> None:  # pragma: no cover
    """Add each triangle's cross product (length = 2 × area: area weighting for free) to its three vertices."""
    for t in range(triangles.shape[0]):
        i0, i1, i2 = triangles[t, 0], triangles[t, 1], triangles[t, 2]
        ax, ay, az = points[i1, 0] - points[i0, 0], points[i1, 1] - points[i0, 1], points[i1, 2] - points[i0, 2]
        bx, by, bz = points[i2, 0] - points[i0, 0], points[i2, 1] - points[i0, 1], points[i2, 2] - points[i0, 2]
        nx, ny, nz = ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx
        for i in (i0, i1, i2):
            sums[i, 0] += nx
            sums[i, 1] += ny
            sums[i, 2] += nz


@numba.njit(cache=True, nogil=True)
def _zbuffer_kernel(points: np.ndarray, normals_v: np.ndarray, triangles: np.ndarray, out: np.ndarray,
                    zbuf: np.ndarray) -> None:  # pragma: no cover - JIT
    """Per front triangle, every pixel centre inside it: keep the nearest, write its smooth normal.

    Pixel column = x, row = −y, depth = z of ``points`` (read in place: no column copies); a triangle whose box holds
    no pixel centre (most of the ICT face's at 128²) is skipped before its division."""
    size = out.shape[0]
    for t in range(triangles.shape[0]):
        i0, i1, i2 = triangles[t, 0], triangles[t, 1], triangles[t, 2]
        c0, c1, c2 = points[i0, 0], points[i1, 0], points[i2, 0]
        r0, r1, r2 = -points[i0, 1], -points[i1, 1], -points[i2, 1]
        det = (c1 - c0) * (r2 - r0) - (c2 - c0) * (r1 - r0)
        if det >= -1e-9:  # front faces are CCW in the y-up frame: clockwise in (col, row)
            continue
        col_lo = max(int(np.ceil(min(c0, c1, c2))), 0)
        col_hi = min(int(np.floor(max(c0, c1, c2))), size - 1)
        row_lo = max(int(np.ceil(min(r0, r1, r2))), 0)
        row_hi = min(int(np.floor(max(r0, r1, r2))), size - 1)
        if col_lo > col_hi or row_lo > row_hi:
            continue
        inv = 1.0 / det
        for r in range(row_lo, row_hi + 1):
            for c in range(col_lo, col_hi + 1):
                w1 = ((c - c0) * (r2 - r0) - (c2 - c0) * (r - r0)) * inv
                w2 = ((c1 - c0) * (r - r0) - (c - c0) * (r1 - r0)) * inv
                w0 = 1.0 - w1 - w2
                if w0 < -1e-9 or w1 < -1e-9 or w2 < -1e-9:
                    continue
                z = w0 * points[i0, 2] + w1 * points[i1, 2] + w2 * points[i2, 2]
                if z <= zbuf[r, c]:
                    continue
                zbuf[r, c] = z
                nx = w0 * normals_v[i0, 0] + w1 * normals_v[i1, 0] + w2 * normals_v[i2, 0]
                ny = w0 * normals_v[i0, 1] + w1 * normals_v[i1, 1] + w2 * normals_v[i2, 1]
                nz = w0 * normals_v[i0, 2] + w1 * normals_v[i1, 2] + w2 * normals_v[i2, 2]
                length = max(np.sqrt(nx * nx + ny * ny + nz * nz), 1e-12)
                out[r, c, 0] = nx / length
                out[r, c, 1] = ny / length
                out[r, c, 2] = nz / length


def rasterize_mesh_normals(points_crop_xyz: np.ndarray, triangles: np.ndarray,
                           size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Smooth-shaded normals and coverage of a mesh on a size×size crop (:func:`rasterize_mesh` without depth)."""
    normals, coverage, _ = rasterize_mesh(points_crop_xyz, triangles, size)
    return normals, coverage


def rasterize_mesh(points_crop_xyz: np.ndarray, triangles: np.ndarray,
                   size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smooth-shaded normals of a mesh seen orthographically on a size×size crop, with a z-buffer.

    ``points_crop_xyz`` (N, 3) in crop pixels, our frame (see the module docstring); ``triangles`` (T, 3)
    wound CCW from outside. Back faces are culled; a pixel belongs to the nearest front triangle that
    contains its centre; area-weighted vertex normals are interpolated barycentrically and renormalised.
    Returns (normals size×size×3 float32, unit inside coverage, zero outside; coverage size×size bool; depth:
    the winning z in crop pixels, float64, -inf outside). The loop is compiled by numba (cached on disk).
    """
    return rasterize_checked(points_crop_xyz, checked_triangles(triangles, len(points_crop_xyz)), size)


def rasterize_checked(points_crop_xyz: np.ndarray, triangles: np.ndarray,
                      size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`rasterize_mesh` for triangles already checked (C-contiguous int32/int64 (T, 3), indices in range of
    the points): what the per-frame prior calls with its cached triangle arrays (the check of the ICT face's 74 172
    indices every frame is skipped). The points are still checked."""
    points = np.ascontiguousarray(points_crop_xyz, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"expected crop points of shape (N, 3), got {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError("crop points contain NaN or infinite values")
    normals_v = vertex_normals(points, triangles)
    out = np.zeros((size, size, 3), dtype=np.float32)
    zbuf = np.full((size, size), -np.inf)
    _zbuffer_kernel(points, normals_v, triangles, out, zbuf)
    return out, zbuf > -np.inf, zbuf


def fill_prior(normals: np.ndarray, coverage: np.ndarray) -> np.ndarray:
    """Extend the mesh normals to every pixel: each uncovered pixel takes its nearest covered pixel's normal.

    What a prior model sees (with the coverage as a separate channel), and what the ``mediapipe-mesh``
    baseline predicts beyond the mesh. No coverage at all: zeros (the no-mesh fallback).
    """
    if not coverage.any():
        return np.zeros_like(normals, dtype=np.float32)
    if coverage.all():
        return normals.astype(np.float32, copy=True)
    out = np.empty(normals.shape, dtype=np.float32)
    _fill_from_labels(np.ascontiguousarray(normals, dtype=np.float32), np.ascontiguousarray(coverage),
                      nearest_labels(coverage), out)
    return out


def nearest_labels(coverage: np.ndarray) -> np.ndarray:
    """int32 H×W: every covered pixel its own label, every other pixel the label of its nearest covered one
    (OpenCV's 3×3 L2 distance transform, DIST_LABEL_PIXEL; the ``fill_prior`` extension)."""
    return cv2.distanceTransformWithLabels(np.logical_not(coverage).view(np.uint8), cv2.DIST_L2, 3,
                                           labelType=cv2.DIST_LABEL_PIXEL)[1]


@numba.njit(cache=True, nogil=True)
def label_table(normals: np.ndarray, coverage: np.ndarray, labels: np.ndarray) -> np.ndarray:  # pragma: no cover - JIT
    """Label → normal of the covered pixel with that label (in raster order, the last wins as with numpy's
    assignment); labels of no covered pixel map to zero. Shared by ``fill_prior`` and the ict-blend mix."""
    height, width = labels.shape
    top = 0
    for i in range(height):
        for j in range(width):
            top = max(top, labels[i, j])
    table = np.zeros((top + 1, 3), dtype=np.float32)
    for i in range(height):
        for j in range(width):
            if coverage[i, j]:
                label = labels[i, j]
                table[label, 0], table[label, 1], table[label, 2] = normals[i, j, 0], normals[i, j, 1], normals[i, j, 2]
    return table


@numba.njit(cache=True, nogil=True)
def _fill_from_labels(normals: np.ndarray, coverage: np.ndarray, labels: np.ndarray,
                      out: np.ndarray) -> None:  # pragma: no cover - JIT
    """out[p] = normals of the covered pixel labelled labels[p]: one :func:`label_table`, then one gather. The same
    values as building the table with boolean indexing and ``np.take`` (bit-identical), without the temporaries
    (~3× faster at 128²)."""
    table = label_table(normals, coverage, labels)
    height, width = labels.shape
    for i in range(height):
        for j in range(width):
            label = labels[i, j]
            out[i, j, 0], out[i, j, 1], out[i, j, 2] = table[label, 0], table[label, 1], table[label, 2]


def empty_prior(size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """The no-mesh fallback: zero normals ("no normal") and no coverage."""
    return np.zeros((size, size, 3), dtype=np.float32), np.zeros((size, size), dtype=bool)


def mesh_normals_from_landmarks(landmarks_norm: np.ndarray, frame_shape: tuple[int, ...],
                                crop_matrix: np.ndarray, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks of a frame + the frame → crop matrix → (normals, coverage) on the size×size crop."""
    points = landmarks_in_crop(landmarks_norm, frame_shape, crop_matrix)
    return rasterize_mesh_normals(points, mesh_triangles(close_holes=True), size)


# Stored priors of a dataset folder (``facenormals data prior``): priors/NAME.npy holds MediaPipe's landmarks
# (float32 478×3, normalised to that sample's image); priors/index.csv lists every image with found 0/1.
PRIORS_DIR = "priors"
PRIOR_INDEX = "index.csv"


def stored_prior_path(root: str | Path, name: str) -> Path:
    return Path(root) / PRIORS_DIR / f"{name}.npy"


def read_stored_landmarks(root: str | Path, name: str) -> np.ndarray | None:
    """The stored landmarks of sample ``name``, or None when MediaPipe found no face (or none were computed)."""
    path = stored_prior_path(root, name)
    if not path.is_file():
        return None
    landmarks = np.load(path, allow_pickle=False)
    if landmarks.ndim != 2 or landmarks.shape[1] != 3 or len(landmarks) < NUM_MESH_POINTS:
        raise ValueError(f"{path}: expected MediaPipe landmarks (468 or 478, 3), got {landmarks.shape}")
    return landmarks.astype(np.float64)


def create_face_mesh() -> FaceMesh:
    """A still-image :class:`facenormals.faces.FaceMesh` for one face per image (use as a context manager).

    For crops that the face fills (eval, dataset priors): the mirror pass without the light flattening, as the API's
    still detector on its face views. On the validation crops (session 9, one network pass) flattening + mirror
    scored 13.89 / 10.64 / 15.52° (`val_ict_v2` / `val_james` / `val_profile`), the mirror alone 13.96 / 10.64 /
    **15.15°** — the flattened crops let the mesh find extreme profiles whose landmarks mislead the network.
    """
    return FaceMesh(max_faces=1, still=True, flatten=False)


def crop_landmarks(crop_rgb_uint8: np.ndarray, face_mesh: FaceMesh) -> np.ndarray | None:
    """MediaPipe's normalised landmarks (478×3) of the face on a square RGB crop, or None when it finds none."""
    crop = np.asarray(crop_rgb_uint8)
    if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3 or crop.shape[0] != crop.shape[1]:
        raise ValueError(f"expected a square RGB uint8 crop S×S×3, got {crop.dtype} {crop.shape}")
    found = face_mesh.find(crop)
    if found:
        return found[0].normalised.astype(np.float64)
    return _zoomed_out_landmarks(crop, face_mesh) if CROP_ZOOM_OUT > 1 else None


def _zoomed_out_landmarks(crop: np.ndarray, face_mesh: FaceMesh) -> np.ndarray | None:
    """The face of a crop the mesh missed, looked for again with the crop centred in a view ``CROP_ZOOM_OUT``
    times its side at the crop's own resolution, its edge pixels extended — about the share of its view a face
    takes in the API's still detector (:data:`facenormals.faces.FACE_MARGIN`), where the mesh's own face detection
    finds what the tight crop hides from it (a face pitched 40° down on ``val_james``) — as normalised landmarks
    of the crop."""
    side = crop.shape[0]
    view_side = round(side * CROP_ZOOM_OUT)
    centre = (side - 1) / 2
    found = mesh_in_view(face_mesh, crop, centre, centre, view_side, view_side, cv2.BORDER_REPLICATE)
    if found is None:
        return None
    points, depth = found  # crop pixels; normalised = pixels ÷ the crop's side (z too: MediaPipe's z is ÷ width)
    return np.column_stack([points, depth]).astype(np.float64) / side


def mesh_normals_for_crop(crop_rgb_uint8: np.ndarray, face_mesh: FaceMesh) -> tuple[np.ndarray, np.ndarray, bool]:
    """Run MediaPipe on a square RGB crop and rasterise its mesh normals at the crop's size.

    ``face_mesh``: a :class:`facenormals.faces.FaceMesh` (see :func:`create_face_mesh`). Returns
    (normals S×S×3 float32, coverage S×S bool, found); with no face found, :func:`empty_prior` and False.
    """
    landmarks = crop_landmarks(crop_rgb_uint8, face_mesh)
    size = crop_rgb_uint8.shape[0]
    if landmarks is None:
        return (*empty_prior(size), False)
    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    return (*mesh_normals_from_landmarks(landmarks, crop_rgb_uint8.shape, identity, size), True)
