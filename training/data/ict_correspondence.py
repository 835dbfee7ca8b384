"""Derive the ICT-FaceKit fit asset (``facenormals/assets/ict_face.npz``) from ``ict_facekit.npz``.

Two things are derived once and shipped (issue 13):

* **The landmark correspondence**: for each of MediaPipe's 478 landmarks, the ICT vertex it lands on. MediaPipe
  runs on soft-lit renders of the neutral head, frontal and turned ±15° (yaw) and ±10° (pitch); each landmark's
  pixel is lifted to the neutral surface under it (barycentric on the visible triangle), the surface points of
  the views are averaged, and the nearest vertex of the allowed region is taken: face skin for the 468 mesh
  points, the iris for the 10 iris points. ICT's iris sits behind the transparent cornea of its eyeball, so the
  renders paint the sclera in front of each iris dark: MediaPipe then sees irises and places the eyes as on a
  real face.
* **A compact morphable model** for the per-frame fit: only what the prior draws (face skin and both
  eyeballs), the neutral shape, the first identity modes and ICT's official expression blendshapes, float16.

``python -m facenormals.training.data.ict_correspondence [--ict PATH] [--out PATH] [--overlay PNG]`` rewrites the
asset (atomically) and, with ``--overlay``, draws the correspondence on the frontal render for a check by eye.
The shipped asset then has each landmark refined to a surface point over many faces: ``ict_landmark_points``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facenormals.atomic import atomic_path
from facenormals.ict_fit import ASSET, NUM_EXPRESSION_MODES, NUM_IDENTITY_MODES
from facenormals.mesh_prior import NUM_MESH_POINTS
from facenormals.training.data import ict
from facenormals.training.data.renderer import Fragments
from facenormals.training.data.sources import frontal_render

# Views (yaw, pitch) in degrees; the frontal one comes first and draws the overlay.
VIEWS: tuple[tuple[float, float], ...] = ((0.0, 0.0), (15.0, 0.0), (-15.0, 0.0), (0.0, 10.0), (0.0, -10.0))
SKIN = np.array([0.55, 0.38, 0.30], np.float32)  # linear RGB
IRIS = np.array([0.03, 0.02, 0.015], np.float32)
KEPT_REGIONS = (ict.FACE, ict.EYEBALL_L, ict.EYEBALL_R)


@dataclass
class Correspondence:
    vertices: np.ndarray  # (478,) ICT vertex indices
    spread_cm: np.ndarray  # (478,) how far apart the views put each landmark on the surface
    views_found: int


def head_colors(model: ict.IctModel) -> np.ndarray:
    """Per-vertex albedo: skin, with the sclera in front of each iris painted dark (ICT's iris is behind it)."""
    colors = np.tile(SKIN, (model.num_vertices, 1))
    colors[model.region == ict.EYEBALL_L] = colors[model.region == ict.EYEBALL_R] = 0.8
    for (lo, hi), (ilo, ihi), centre in zip(ict.EYEBALL_RANGES, ict.IRIS_RANGES, model.eyeball_centres, strict=True):
        iris_dirs = model.neutral[ilo:ihi + 1] - centre
        axis = iris_dirs.mean(0) / np.linalg.norm(iris_dirs.mean(0))
        cos_iris = (iris_dirs @ axis / np.linalg.norm(iris_dirs, axis=1)).min()
        dirs = model.neutral[lo:hi + 1] - centre
        inside = dirs @ axis / np.linalg.norm(dirs, axis=1) >= cos_iris
        colors[lo:hi + 1][inside] = IRIS
    return colors


def _rotation(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    y, p = np.radians(yaw_deg), np.radians(pitch_deg)
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    return ry @ rx


def surface_points(frags: Fragments, faces: np.ndarray, rest: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """The rest-pose surface point under each pixel (N×2, x/y), NaN where nothing was drawn."""
    rest_map = frags.interpolate_vertices(rest, faces)
    cols = np.clip(np.round(pixels[:, 0]).astype(int), 0, frags.tri.shape[1] - 1)
    rows = np.clip(np.round(pixels[:, 1]).astype(int), 0, frags.tri.shape[0] - 1)
    out = rest_map[rows, cols].astype(np.float64)
    out[~frags.covered[rows, cols]] = np.nan
    return out


def derive(model: ict.IctModel, size: int = 768) -> tuple[Correspondence, np.ndarray, np.ndarray]:
    """The correspondence, the frontal render and its landmark pixels (for the overlay)."""
    from facenormals.faces import FaceMesh

    colors = head_colors(model)
    landmarker = FaceMesh(max_faces=1, steady=False)  # the asset was derived from MediaPipe's plain landmarks
    centre = model.neutral[model.region == ict.FACE].mean(0)
    found: list[np.ndarray] = []
    frontal = frontal_pixels = None
    try:
        for yaw, pitch in VIEWS:
            rot = _rotation(yaw, pitch).astype(np.float32)
            posed = (model.neutral - centre) @ rot.T + centre
            image, _xy, frags, _front = frontal_render(posed, model.faces, None, None, None, colors, size)
            faces = landmarker.find(image)
            if not faces:
                continue
            pixels = faces[0].points.astype(np.float64)
            found.append(surface_points(frags, model.faces, model.neutral, pixels))
            if frontal is None and (yaw, pitch) == (0.0, 0.0):
                frontal, frontal_pixels = image, pixels
    finally:
        landmarker.close()
    if frontal is None or len(found) < 3:
        raise RuntimeError(f"MediaPipe found the rendered ICT head in {len(found)} of {len(VIEWS)} views")
    points = np.stack(found)  # views × 478 × 3
    mean = np.nanmean(points, axis=0)
    spread = np.nanmax(np.linalg.norm(points - mean, axis=2), axis=0)
    vertices = np.empty(len(mean), np.int64)
    skin = np.nonzero(model.region == ict.FACE)[0]
    iris = np.concatenate([np.arange(lo, hi + 1) for lo, hi in ict.IRIS_RANGES])
    for i, point in enumerate(mean):
        candidates = skin if i < NUM_MESH_POINTS else iris
        vertices[i] = candidates[np.argmin(np.sum((model.neutral[candidates] - point) ** 2, axis=1))]
    return Correspondence(vertices, spread, len(found)), frontal, frontal_pixels


def compact_model(model: ict.IctModel, landmark_vertices: np.ndarray) -> dict[str, np.ndarray]:
    """The arrays of the shipped asset: kept vertices re-indexed, bases float16."""
    keep = np.isin(model.region, KEPT_REGIONS)
    tri_keep = np.isin(model.face_region, KEPT_REGIONS) & keep[model.faces].all(axis=1)
    index = np.full(model.num_vertices, -1, np.int64)
    index[keep] = np.arange(int(keep.sum()))
    v = model.num_vertices
    identity = model.identity_basis.reshape(-1, v, 3)[:NUM_IDENTITY_MODES][:, keep]
    official = np.nonzero(model.official)[0][:NUM_EXPRESSION_MODES]
    expression = model.expression_basis.reshape(-1, v, 3)[official][:, keep]
    if (index[landmark_vertices] < 0).any():
        raise RuntimeError("a landmark landed on a vertex outside the kept regions")
    return {
        "neutral": model.neutral[keep].astype(np.float32),
        "identity": identity.astype(np.float16),
        "expression": expression.astype(np.float16),
        "expression_names": np.array([model.expression_names[i] for i in official]),
        "triangles": index[model.faces[tri_keep]].astype(np.int32),
        "landmark_vertices": index[landmark_vertices].astype(np.int32),
        "eyeball": np.isin(model.region[keep], (ict.EYEBALL_L, ict.EYEBALL_R)),
        "source": np.array(f"ICT-FaceKit Light (MIT, USC ICT), {model.path.name}; derived by "
                           "facenormals.training.data.ict_correspondence"),
    }


def neutral_pixels(model: ict.IctModel, size: int) -> np.ndarray:
    """Every vertex of the neutral head projected into the frontal render (V×2 pixels)."""
    return frontal_render(model.neutral, model.faces, None, None, None, head_colors(model), size)[1]


def draw_overlay(image: np.ndarray, pixels: np.ndarray, points_xy: np.ndarray, out: Path) -> None:
    """MediaPipe's landmarks (green) and their ICT surface points re-projected (red) on the frontal render."""
    canvas = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    for p, q in zip(pixels, points_xy, strict=True):
        cv2.line(canvas, tuple(np.round(p).astype(int)), tuple(np.round(q).astype(int)), (0, 200, 255), 1)
        cv2.circle(canvas, tuple(np.round(q).astype(int)), 2, (0, 0, 255), -1)
        cv2.circle(canvas, tuple(np.round(p).astype(int)), 1, (0, 255, 0), -1)
    lo = np.maximum(np.floor(pixels.min(axis=0)).astype(int) - 40, 0)  # the face with a margin
    hi = np.ceil(pixels.max(axis=0)).astype(int) + 40
    with atomic_path(out) as tmp:
        cv2.imwrite(str(tmp), canvas[lo[1]:hi[1], lo[0]:hi[0]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ict", type=Path, default=None, help="ict_facekit.npz (default: ../shared/data/...)")
    parser.add_argument("--out", type=Path, default=ASSET)
    parser.add_argument("--overlay", type=Path, default=None, help="PNG: the correspondence drawn on the frontal render")
    args = parser.parse_args(argv)
    model = ict.IctModel(args.ict)
    corr, frontal, pixels = derive(model)
    arrays = compact_model(model, corr.vertices)
    with atomic_path(args.out) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    print(f"{args.out}: {len(arrays['neutral'])} vertices, {len(arrays['triangles'])} triangles, "
          f"{len(arrays['identity'])} identity + {len(arrays['expression'])} expression modes; "
          f"MediaPipe found the head in {corr.views_found}/{len(VIEWS)} views, landmark spread over views "
          f"median {np.nanmedian(corr.spread_cm):.2f} cm, max {np.nanmax(corr.spread_cm):.2f} cm")
    if args.overlay is not None:
        draw_overlay(frontal, pixels, neutral_pixels(model, frontal.shape[0])[corr.vertices], args.overlay)
        print(f"overlay: {args.overlay}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
