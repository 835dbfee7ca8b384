"""PLY export of depth surfaces (raw vs refined): points with normals, or a triangle mesh; written atomically.

Coordinates are our camera space in metres (+x right, +y up, +z toward the camera, so the surface lies at
negative z), which mesh viewers show upright.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facenormals.atomic import atomic_path
from facenormals.camera import Intrinsics
from facenormals.depth import backproject, hole_mask, normals_from_depth


def write_ply(path: str | Path, points: np.ndarray, normals: np.ndarray | None = None,
              colours: np.ndarray | None = None, faces: np.ndarray | None = None) -> None:
    """Binary little-endian PLY: N×3 float32 points, optional N×3 normals, N×3 uint8 RGB, F×3 triangles."""
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be N×3, got {points.shape}")
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if normals is not None:
        fields += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
    if colours is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertices = np.empty(len(points), dtype=fields)
    vertices["x"], vertices["y"], vertices["z"] = points.T
    if normals is not None:
        vertices["nx"], vertices["ny"], vertices["nz"] = np.asarray(normals, np.float32).reshape(-1, 3).T
    if colours is not None:
        vertices["red"], vertices["green"], vertices["blue"] = np.asarray(colours, np.uint8).reshape(-1, 3).T
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(points)}"]
    header += [f"property {'float' if kind == '<f4' else 'uchar'} {name}" for name, kind in fields]
    body = [vertices.tobytes()]
    if faces is not None:
        faces = np.asarray(faces, dtype=np.int32).reshape(-1, 3)
        header += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
        packed = np.empty(len(faces), dtype=[("n", "u1"), ("v", "<i4", (3,))])
        packed["n"], packed["v"] = 3, faces
        body.append(packed.tobytes())
    header.append("end_header")
    with atomic_path(path) as tmp:
        tmp.write_bytes(("\n".join(header) + "\n").encode("ascii") + b"".join(body))


def depth_mesh(depth_m: np.ndarray, intrinsics: Intrinsics, max_edge_m: float = 0.01,
               mask: np.ndarray | None = None,
               normals: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid triangulation of a depth map: (vertices V×3, normals V×3, faces F×3).

    Two triangles per 2×2 block whose corners all have depth (inside ``mask``); triangles with an edge longer
    than ``max_edge_m`` (a depth jump, e.g. flying pixels at a silhouette) are dropped. ``normals`` (H×W×3, unit
    or 0): the vertex normals where given (e.g. a fusion result's); elsewhere the depth's central differences.
    """
    valid = ~hole_mask(depth_m)
    if mask is not None:
        valid &= mask
    points = backproject(depth_m, intrinsics)
    own, _ = normals_from_depth(np.where(valid, depth_m, np.nan), intrinsics)
    if normals is None:
        normals = own
    else:
        if normals.shape != (*depth_m.shape, 3):
            raise ValueError(f"normals are {normals.shape}, the depth map {depth_m.shape}: need H×W×3")
        given = np.linalg.norm(normals, axis=-1) > 0.5
        normals = np.where(given[..., None], normals, own)
    index = np.full(depth_m.shape, -1, dtype=np.int64)
    index[valid] = np.arange(int(valid.sum()))
    a, b, c, d = index[:-1, :-1], index[:-1, 1:], index[1:, :-1], index[1:, 1:]
    triangles = np.concatenate([np.stack([a, c, b], -1).reshape(-1, 3), np.stack([b, c, d], -1).reshape(-1, 3)])
    triangles = triangles[(triangles >= 0).all(axis=1)]
    vertices = points[valid]
    if len(triangles):
        corners = vertices[triangles]
        edges = np.linalg.norm(corners - np.roll(corners, 1, axis=1), axis=2)
        triangles = triangles[edges.max(axis=1) <= max_edge_m]
    normals = fill_missing_normals(vertices, normals[valid], triangles)
    return vertices.astype(np.float32), normals.astype(np.float32), triangles.astype(np.int32)


def fill_missing_normals(vertices: np.ndarray, normals: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Unit normals for every vertex: where ``normals`` is undefined (zero, e.g. a pixel whose depth neighbours are
    all missing, so nothing can be differenced) the area-weighted mean of its triangles' normals, and for a vertex in
    no triangle the direction toward the camera (the origin)."""
    missing = ~(np.linalg.norm(normals, axis=1) > 0.5)
    if not missing.any():
        return normals
    filled = np.zeros_like(vertices, dtype=np.float64)
    if len(triangles):
        corners = vertices[triangles].astype(np.float64)
        area_normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
        for k in range(3):
            np.add.at(filled, triangles[:, k], area_normals)
    toward_camera = -vertices.astype(np.float64)
    length = np.linalg.norm(filled, axis=1, keepdims=True)
    filled = np.where(length > 0, filled / np.maximum(length, 1e-30),
                      toward_camera / np.maximum(np.linalg.norm(toward_camera, axis=1, keepdims=True), 1e-30))
    return np.where(missing[:, None], filled, normals)


def export_depth(path: str | Path, depth_m: np.ndarray, intrinsics: Intrinsics, mesh: bool = True,
                 mask: np.ndarray | None = None, colours_rgb: np.ndarray | None = None) -> int:
    """Write one depth map as a PLY mesh (or points); returns the vertex count."""
    vertices, normals, faces = depth_mesh(depth_m, intrinsics, mask=mask)
    valid = ~hole_mask(depth_m) if mask is None else ~hole_mask(depth_m) & mask
    colours = colours_rgb[valid] if colours_rgb is not None else None
    write_ply(path, vertices, normals, colours, faces if mesh else None)
    return len(vertices)


def export_raw_and_refined(folder: str | Path, raw_depth_m: np.ndarray, refined_depth_m: np.ndarray,
                           intrinsics: Intrinsics, mask: np.ndarray | None = None, mesh: bool = True,
                           stem: str = "face") -> tuple[Path, Path]:
    """``STEM_raw.ply`` and ``STEM_refined.ply`` side by side in ``folder`` (same intrinsics, same mask)."""
    folder = Path(folder)
    paths = (folder / f"{stem}_raw.ply", folder / f"{stem}_refined.ply")
    for path, depth in zip(paths, (raw_depth_m, refined_depth_m), strict=True):
        export_depth(path, depth, intrinsics, mesh=mesh, mask=mask)
    return paths
