"""Refine the ICT fit's landmark correspondence: each landmark becomes the surface point MediaPipe lands on on average.

The correspondence of ``ict_correspondence`` comes from one face (the neutral head, five views) and is snapped to a
vertex. This replaces each of the 468 mesh landmarks by a fixed surface point (barycentric weights on one skin
triangle, so it moves with identity and expression as the mesh does) chosen by least squares over many faces:
training renders of random ICT identities and expressions (``ict_paired_v6``: identities beyond ICT's N(0, 1), a
displacement outside its span, procedural skin, photo backgrounds, crop jitter), whose MediaPipe landmarks are
stored with the set and whose geometry is regenerated exactly from the set's seed (``sample_rng(seed, index)``),
projected with each sample's stored pose and camera. For landmark k the point minimises the mean squared image
distance between its projection and MediaPipe's landmark over the renders where the landmark's current vertex is
visible (|yaw| ≤ ``MAX_YAW_DEG``; the 5 % of renders where MediaPipe strays furthest left out). With the
projected vertices' second moments precomputed per landmark, each candidate triangle (within ``RADIUS_CM`` of the
current vertex) is a 3-weight quadratic on the simplex, solved exactly. The 10 iris points keep their vertex.

``python -m facenormals.training.data.ict_landmark_points --data /work/datasets/ict_paired_v6 --seed 61
--overlay docs/ict_correspondence.png`` rewrites the asset's landmark arrays (atomically; the model is untouched) after
``python -m facenormals.training.data.ict_correspondence`` has derived the vertices it starts from. The set's
``--identity-scale`` and ``--detail-mm`` must be those it was rendered with (``scripts/make_datasets.sh``);
a mismatch is caught (the regenerated identity norm differs from the stored one). Sets rendered with ``--james``
(texture transfer) are refused: the real scan is the held-out check.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facenormals import ict_fit, mesh_prior, prior
from facenormals.atomic import atomic_path
from facenormals.fileio import DataError
from facenormals.training.data import ict
from facenormals.training.data.camera import PinholeCamera, WeakPerspectiveCamera
from facenormals.training.data.ict_correspondence import KEPT_REGIONS, draw_overlay, head_colors
from facenormals.training.data.jobs import read_params
from facenormals.training.data.sources import IctSource, frontal_render

MAX_YAW_DEG = 30.0
MAX_PITCH_DEG = 25.0
RADIUS_CM = 1.5  # candidate triangles around the current vertex
VISIBLE_DEPTH_MM = 4.0  # a vertex is visible where the stored depth map is this close to its depth
OUTLIER_SHARE = 0.05  # renders whose median landmark distance is in the top 5 % are left out


@dataclass
class RenderedLandmarks:
    """Per render: the asset's vertices projected (R×V×2 pixels, x right, y down), their visibility, MediaPipe's."""

    names: list[str]
    xy: np.ndarray  # R×V×2 float32
    visible: np.ndarray  # R×V bool
    landmarks: np.ndarray  # R×478×2 float32


@dataclass
class SurfacePoints:
    corners: np.ndarray  # (478, 3) asset vertex ids
    barycentric: np.ndarray  # (478, 3)
    rms_before_px: np.ndarray  # (478,) RMS image distance at the starting vertex, NaN for the iris points
    rms_after_px: np.ndarray  # (478,) at the chosen point
    renders: int


def rendered_landmarks(root: Path, seed: int, indices: range, identity_scale: tuple[float, float],
                       detail_mm: float, albedo: str | None = None) -> RenderedLandmarks:
    """Regenerate the ICT samples ``indices`` of a set rendered with ``seed`` and project the asset's vertices.

    ``albedo``: only the renders whose skin was this (params ``albedo``: ``photo`` for real skin, session 24)."""
    source = IctSource(None, identity_scale=identity_scale, detail_mm=detail_mm)
    keep = np.isin(source.model.region, KEPT_REGIONS)
    names, xys, visible, landmarks = [], [], [], []
    for index in indices:
        name = f"ict_{index:06d}"
        params_path = root / "params" / f"{name}.json"
        params = read_params(root, name)
        if params is None:
            continue
        if params.get("albedo") == "james-transfer":
            raise DataError(f"{params_path}: rendered with the James scan's texture (the held-out check); use a set "
                            "rendered without --james")
        if albedo is not None and params.get("albedo") != albedo:
            continue
        if params.get("profile") or abs(params["yaw_deg"]) > MAX_YAW_DEG or abs(params["pitch_deg"]) > MAX_PITCH_DEG:
            continue
        stored = mesh_prior.read_stored_landmarks(root, name)
        if stored is None:
            continue
        # albedo: hair lifts the hairline
        mesh = source.regenerate(seed, index, params, params_path, with_albedo=True)
        xy, depth_cm = _project(mesh.vertices[keep], mesh.oval.mean(axis=0), params)
        depth_map = cv2.imread(str(root / "depth" / f"{name}.png"), cv2.IMREAD_UNCHANGED).astype(np.float64)
        size = depth_map.shape[0]
        cols = np.clip(np.round(xy[:, 0]).astype(int), 0, size - 1)
        rows = np.clip(np.round(xy[:, 1]).astype(int), 0, size - 1)
        seen = depth_map[rows, cols]
        points = mesh_prior.landmarks_in_crop(stored, (size, size), prior.IDENTITY)
        names.append(name)
        xys.append(xy.astype(np.float32))
        visible.append((seen > 0) & (np.abs(seen - depth_cm * 10.0) < VISIBLE_DEPTH_MM))
        landmarks.append(np.stack([points[:, 0], -points[:, 1]], axis=1).astype(np.float32))  # crop y is up
    if not names:
        raise DataError(f"{root}: no ICT samples with stored landmarks and |yaw| ≤ {MAX_YAW_DEG}° in {indices}")
    return RenderedLandmarks(names, np.stack(xys), np.stack(visible), np.stack(landmarks))


def _project(vertices: np.ndarray, pivot: np.ndarray, params: dict) -> tuple[np.ndarray, np.ndarray]:
    """Pixels and depth (cm) of model vertices under a sample's stored pose and camera (as ``synth.render``)."""
    rotation = np.asarray(params["rotation_matrix"], dtype=np.float64)
    posed = (vertices.astype(np.float64) - pivot) @ rotation.T + np.array([0.0, 0.0, -params["distance_mm"] / 10.0])
    cam = params["camera"]
    camera = (PinholeCamera(cam["focal"], cam["cx"], cam["cy"]) if cam["type"] == "pinhole"
              else WeakPerspectiveCamera(cam["scale"], cam["cx"], cam["cy"]))
    return camera.project(posed)


_EDGE = np.array([[-1.0, -1.0], [1.0, 0.0], [0.0, 1.0]])  # barycentric b = (1, 0, 0) + _EDGE @ (u, w)
_EDGES = ((0, 1), (1, 2), (2, 0))


def best_on_triangles(moments: np.ndarray, target: np.ndarray, constant: float) -> tuple[np.ndarray, np.ndarray]:
    """Per triangle t: min over barycentric b (b ≥ 0, Σb = 1) of bᵀMₜb − 2tₜᵀb + c, for M T×3×3 and t T×3.

    Returns (values T, b T×3): the interior optimum where it lies inside, else the best point of the three edges
    (a convex quadratic's minimum over the triangle is one or the other).
    """
    def value(b: np.ndarray) -> np.ndarray:
        return np.einsum("ti,tij,tj->t", b, moments, b) - 2.0 * np.einsum("ti,ti->t", target, b) + constant

    hessian = np.einsum("ia,tij,jb->tab", _EDGE, moments, _EDGE)
    gradient = np.einsum("ia,ti->ta", _EDGE, moments[:, :, 0] - target)
    det = hessian[:, 0, 0] * hessian[:, 1, 1] - hessian[:, 0, 1] * hessian[:, 1, 0]
    safe = np.where(np.abs(det) > 1e-12, det, 1.0)
    u = -(hessian[:, 1, 1] * gradient[:, 0] - hessian[:, 0, 1] * gradient[:, 1]) / safe
    w = -(hessian[:, 0, 0] * gradient[:, 1] - hessian[:, 1, 0] * gradient[:, 0]) / safe
    inside = (np.abs(det) > 1e-12) & (u >= 0.0) & (w >= 0.0) & (u + w <= 1.0)
    best_b = np.stack([1.0 - u - w, u, w], axis=1)
    best_value = np.where(inside, value(best_b), np.inf)
    eye = np.eye(3)
    for a, c in _EDGES:
        direction = eye[a] - eye[c]
        curvature = np.einsum("i,tij,j->t", direction, moments, direction)
        slope = moments[:, :, c] @ direction - target @ direction
        t = np.clip(-slope / np.where(curvature > 1e-12, curvature, 1.0), 0.0, 1.0) * (curvature > 1e-12)
        b = eye[c] + t[:, None] * direction
        edge_value = value(b)
        better = edge_value < best_value
        best_value = np.where(better, edge_value, best_value)
        best_b[better] = b[better]
    return best_value, best_b


def surface_points(face: ict_fit.IctFace, skin: np.ndarray, data: RenderedLandmarks,
                   radius_cm: float = RADIUS_CM) -> SurfacePoints:
    """Each mesh landmark's least-squares surface point over the renders (see the module docstring)."""
    starts = face.landmark_vertices
    typical = np.median(np.linalg.norm(data.xy[:, starts[:ict_fit.NUM_FIT_POINTS]]
                                       - data.landmarks[:, :ict_fit.NUM_FIT_POINTS], axis=2), axis=1)
    kept = typical <= np.quantile(typical, 1.0 - OUTLIER_SHARE)
    xy, visible, landmarks = data.xy[kept], data.visible[kept], data.landmarks[kept]
    triangles = face.triangles[skin[face.triangles].all(axis=1)]
    corners = np.repeat(starts[:, None], 3, axis=1).astype(np.int64)
    barycentric = np.zeros(corners.shape)
    barycentric[:, 0] = 1.0
    before, after = np.full(len(starts), np.nan), np.full(len(starts), np.nan)
    for k in range(ict_fit.NUM_FIT_POINTS):
        start = starts[k]
        near = np.nonzero(skin & (np.linalg.norm(face.neutral - face.neutral[start], axis=1) < radius_cm))[0]
        candidates = triangles[np.isin(triangles, near).all(axis=1)]
        seen = visible[:, start]
        projected = xy[seen][:, near].astype(np.float64)  # R×C×2
        target = landmarks[seen, k].astype(np.float64)
        # mean squared distance of a barycentric mix b of the candidates: bᵀMb − 2tᵀb + c
        moments = np.einsum("rad,rbd->ab", projected, projected) / len(target)
        linear = np.einsum("rad,rd->a", projected, target) / len(target)
        constant = float((target * target).sum() / len(target))
        local = np.full(len(face.neutral), -1)
        local[near] = np.arange(len(near))
        i = local[start]
        best = (float(moments[i, i] - 2.0 * linear[i] + constant), corners[k], barycentric[k])
        before[k] = best[0]
        if len(candidates):
            ids = local[candidates]
            values, weights = best_on_triangles(moments[ids[:, :, None], ids[:, None, :]], linear[ids], constant)
            t = int(np.argmin(values))
            if values[t] < best[0]:
                best = (float(values[t]), candidates[t], weights[t])
        after[k], corners[k], barycentric[k] = best
    return SurfacePoints(corners, barycentric, np.sqrt(np.maximum(before, 0.0)), np.sqrt(np.maximum(after, 0.0)),
                         int(kept.sum()))


def with_surface_points(arrays: dict[str, np.ndarray], points: SurfacePoints) -> dict[str, np.ndarray]:
    """The asset's arrays with the landmark surface points: corners, weights, and each one's nearest corner."""
    out = dict(arrays)
    out.setdefault("landmark_neutral_vertices", arrays["landmark_vertices"])  # where the refinement started
    out["landmark_corners"] = points.corners.astype(np.int32)
    out["landmark_barycentric"] = points.barycentric.astype(np.float32)
    strongest = points.barycentric.argmax(axis=1)
    out["landmark_vertices"] = points.corners[np.arange(len(strongest)), strongest].astype(np.int32)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a set of ICT renders with stored landmarks")
    parser.add_argument("--seed", type=int, required=True, help="the seed the set was rendered with")
    parser.add_argument("--identity-scale", type=float, nargs=2, default=(1.0, 1.6))
    parser.add_argument("--detail-mm", type=float, default=5.0)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=4000, help="sample indices to read (the frontal ones are used)")
    parser.add_argument("--albedo", default=None,
                        help="only renders in this skin (params.csv albedo; 'photo': the real skin of --photo-textures)")
    parser.add_argument("--asset", type=Path, default=ict_fit.ASSET)
    parser.add_argument("--ict", type=Path, default=None, help="ict_facekit.npz for --overlay (default: ../shared)")
    parser.add_argument("--overlay", type=Path, default=None, help="PNG: the surface points on the neutral head")
    args = parser.parse_args(argv)
    data = rendered_landmarks(args.data, args.seed, range(args.first, args.first + args.count),
                              tuple(args.identity_scale), args.detail_mm, args.albedo)
    if not data.names:
        raise DataError(f"{args.data}: no frontal render{' in ' + args.albedo + ' skin' if args.albedo else ''} "
                        f"with stored landmarks among samples {args.first}..{args.first + args.count - 1}")
    with np.load(args.asset, allow_pickle=False) as z:
        arrays = {key: z[key] for key in z.files}
    # start from the neutral-head vertices, so a re-run gives the same points
    start = arrays.get("landmark_neutral_vertices", arrays["landmark_vertices"]).astype(np.int64)
    face = ict_fit.IctFace(neutral=arrays["neutral"].astype(np.float32), identity=arrays["identity"][:0],
                           expression=arrays["expression"][:0], expression_names=(),
                           triangles=arrays["triangles"].astype(np.int64), landmark_vertices=start)
    points = surface_points(face, ~arrays["eyeball"], data)
    with atomic_path(args.asset) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **with_surface_points(arrays, points))
    moved = np.linalg.norm(face.landmark_points(face.neutral) - ict_fit.barycentric_points(
        face.neutral, points.corners, points.barycentric), axis=1)[:ict_fit.NUM_FIT_POINTS]
    fitted = slice(0, ict_fit.NUM_FIT_POINTS)
    print(f"{args.asset}: {points.renders} renders of {len(data.names)}; per-landmark RMS image distance median "
          f"{np.median(points.rms_before_px[fitted]):.2f} → {np.median(points.rms_after_px[fitted]):.2f} px; "
          f"points moved median {10 * np.median(moved):.1f} mm, p90 {10 * np.percentile(moved, 90):.1f} mm")
    if args.overlay is not None:
        draw_points_overlay(ict.IctModel(args.ict), points, args.overlay)
        print(f"overlay: {args.overlay}")
    return 0


def draw_points_overlay(model: ict.IctModel, points: SurfacePoints, out: Path, size: int = 768) -> None:
    """MediaPipe's landmarks on the frontal neutral render (green) and the surface points projected (red)."""
    from facenormals.faces import FaceMesh

    image, xy, _frags, _front = frontal_render(model.neutral, model.faces, None, None, None, head_colors(model), size)
    with FaceMesh(max_faces=1, steady=False) as landmarker:
        faces = landmarker.find(image)
    if not faces:
        raise RuntimeError("MediaPipe found no face on the frontal render of the neutral ICT head")
    full_ids = np.nonzero(np.isin(model.region, KEPT_REGIONS))[0]  # asset vertex → ICT vertex
    points_xy = ict_fit.barycentric_points(xy, full_ids[points.corners], points.barycentric)
    draw_overlay(image, faces[0].points.astype(np.float64), points_xy, out)


if __name__ == "__main__":
    raise SystemExit(main())
