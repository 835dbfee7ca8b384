"""User meshes (OBJ, PLY, GLB/GLTF, OFF, STL via trimesh; VRML .wrl IndexedFaceSet by a small reader).

This is how Florence, BJUT-3D, ICT-3DRFE or one's own scans enter the data engine. Expected frame: the face
looks toward +z with +y up (rotate scans there first); units are guessed from the size (``units="auto"``).
The facial outline comes from a sidecar landmark file when there is one, else from MediaPipe face mesh run on a
frontal render of the mesh itself, the same landmarks the realtime path uses.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facenormals.fileio import DataError

MESH_SUFFIXES = (".obj", ".ply", ".glb", ".gltf", ".off", ".stl", ".wrl")
UNIT_MM = {"mm": 1.0, "cm": 10.0, "m": 1000.0}


@dataclass
class LoadedMesh:
    path: Path
    vertices: np.ndarray  # V×3 float32
    faces: np.ndarray  # F×3 int32
    colors: np.ndarray | None = None  # V×3 sRGB in [0, 1]
    texture: np.ndarray | None = None  # H×W×3 sRGB uint8
    uv: np.ndarray | None = None  # per-vertex V×2 (trimesh splits seams) or T×2 with faces_uv
    faces_uv: np.ndarray | None = None
    landmarks: np.ndarray | None = None  # 68×3 when a sidecar gives them


def list_meshes(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        raise DataError(f"{folder}: mesh folder not found")
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in MESH_SUFFIXES and not p.name.startswith("."))
    if not found:
        raise DataError(f"{folder}: no mesh files ({', '.join(MESH_SUFFIXES)})")
    return found


def load_mesh(path: str | Path) -> LoadedMesh:
    """Read a triangle mesh with its colours or texture; raise DataError naming the file when it is unusable."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: mesh file not found")
    mesh = _load_vrml(path) if path.suffix.lower() == ".wrl" else _load_trimesh(path)
    if len(mesh.vertices) < 3 or len(mesh.faces) < 1:
        raise DataError(f"{path}: mesh has no triangles")
    if not np.isfinite(mesh.vertices).all():
        raise DataError(f"{path}: mesh has NaN or infinite vertices")
    if mesh.faces.min() < 0 or mesh.faces.max() >= len(mesh.vertices):
        raise DataError(f"{path}: triangle indices out of range")
    mesh.landmarks = _sidecar_landmarks(path)
    return mesh


def _load_trimesh(path: Path) -> LoadedMesh:
    import trimesh

    try:
        loaded = trimesh.load(path, force="mesh", process=False)
    except Exception as err:  # trimesh raises many types for malformed files
        raise DataError(f"{path}: trimesh could not read it ({type(err).__name__}: {err})") from err
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
        raise DataError(f"{path}: no triangle mesh inside")
    out = LoadedMesh(path, np.asarray(loaded.vertices, np.float32), np.asarray(loaded.faces, np.int32))
    visual = loaded.visual
    if getattr(visual, "kind", None) == "texture" and getattr(visual, "uv", None) is not None:
        image = getattr(visual.material, "image", None) or getattr(visual.material, "baseColorTexture", None)
        if image is not None:
            out.texture = np.asarray(image.convert("RGB"), np.uint8)
            out.uv = np.asarray(visual.uv, np.float32)
            out.faces_uv = out.faces
    elif getattr(visual, "kind", None) == "vertex":
        colors = np.asarray(visual.vertex_colors)[:, :3].astype(np.float32) / 255.0
        if colors.std() > 1e-3:  # trimesh fills a constant default colour when there is none
            out.colors = colors
    return out


def _numbers(block: str) -> np.ndarray:
    return np.array(re.findall(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", block), np.float64)


def _load_vrml(path: Path) -> LoadedMesh:
    """VRML 2.0 IndexedFaceSet: ``point [...]``, ``coordIndex [...]`` and per-vertex ``color [...]``."""
    text = path.read_text(errors="replace")
    point = re.search(r"point\s*\[([^\]]*)\]", text)
    index = re.search(r"coordIndex\s*\[([^\]]*)\]", text)
    if not point or not index:
        raise DataError(f"{path}: no IndexedFaceSet (point/coordIndex) found in this VRML file")
    verts = _numbers(point.group(1))
    if verts.size % 3:
        raise DataError(f"{path}: VRML point list is not a multiple of 3")
    verts = verts.reshape(-1, 3)
    faces = []
    polygon: list[int] = []
    for value in _numbers(index.group(1)).astype(np.int64):
        if value < 0:
            faces.extend([polygon[0], polygon[k], polygon[k + 1]] for k in range(1, len(polygon) - 1))
            polygon = []
        else:
            polygon.append(int(value))
    faces.extend([polygon[0], polygon[k], polygon[k + 1]] for k in range(1, len(polygon) - 1))
    out = LoadedMesh(path, verts.astype(np.float32), np.array(faces, np.int32).reshape(-1, 3))
    color = re.search(r"color\s+Color\s*\{\s*color\s*\[([^\]]*)\]", text)
    if color:
        colors = _numbers(color.group(1))
        if colors.size == verts.size:
            out.colors = colors.reshape(-1, 3).astype(np.float32)
    return out


def _sidecar_landmarks(path: Path) -> np.ndarray | None:
    """68 3-D landmarks from NAME.ljson (menpo) or NAME.landmarks.npy / .txt next to the mesh, if present."""
    for candidate in (path.with_suffix(".ljson"), path.with_suffix(".landmarks.npy"),
                      path.with_suffix(".landmarks.txt")):
        if not candidate.is_file():
            continue
        try:
            if candidate.suffix == ".ljson":
                pts = np.array(json.loads(candidate.read_text())["groups"]["LJSON"]["landmarks"]["points"], np.float32)
            elif candidate.suffix == ".npy":
                pts = np.load(candidate).astype(np.float32)
            else:
                pts = np.loadtxt(candidate, dtype=np.float32)
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as err:
            raise DataError(f"{candidate}: unreadable landmark file ({err})") from err
        if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) < 5:
            raise DataError(f"{candidate}: landmarks must be N×3 (N ≥ 5), got {pts.shape}")
        return pts
    return None


def guess_mm_per_unit(vertices: np.ndarray, units: str = "auto") -> float:
    """Millimetres per mesh unit: given, or guessed from the head's size (~15–35 cm across)."""
    if units != "auto":
        if units not in UNIT_MM:
            raise ValueError(f"units must be auto, mm, cm or m, got {units!r}")
        return UNIT_MM[units]
    extent = float(np.ptp(vertices, axis=0).max())
    if extent > 60:
        return 1.0
    if extent > 0.6:
        return 10.0
    return 1000.0
