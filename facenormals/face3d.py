"""A detailed 3-D face from RGB alone: the fitted ICT face's depth, refined by the predicted normals (issue 20).

1. **Coarse depth** (:func:`coarse_depth`): the ICT-FaceKit face fitted to the landmarks (:class:`IctFit`) is
   rasterised with a z-buffer over the face crop. The fit is a **weak-perspective** (scaled orthographic) model:
   ``x_crop = s · R · x_model + t`` with ``s`` crop pixels per cm, so the metric scale comes from the ICT model's
   centimetres (1 m = 100 · s crop pixels) and the distance to the camera is unknown. The depth map is expressed
   for a virtual pinhole at a nominal distance ``Z0`` (:data:`NOMINAL_DISTANCE_M`, 10 m) with ``f = 100 · s · Z0``
   and the principal point at the crop centre: its rays are parallel to within ~0.7° over a 25 cm crop, so the
   pinhole fusion solver sees the orthographic geometry (float32 still resolves ~1 µm at 10 m).
2. **Refinement** (:func:`refine`): the same solver as for sensor depth (:mod:`facenormals.fusion`), with the
   fitted depth as a smooth, noise-free low-frequency measurement (:data:`FACE_FUSION`: no outlier drop, no
   pre-smoothing) and the predicted normals for the detail — RGB-only and RGB-D share one code path. The fitted
   face's self-occlusion steps are not tied (``jump_m``), and the refined surface's normals are differenced along
   the tied edges only and sharpened to match the solve's discretisation (``sharpen_normals``): they keep the
   normals' detail, and the meshes carry them as vertex normals. The normals are trusted less (weighted least
   squares, :func:`normal_trust`) where the fitted face's own smooth-shaded normals are no surface's — its rims and
   creases, where rendered and learnt normals are not a surface's either.
3. **Meshes** (:func:`depth_to_mesh`, :func:`coarse_mesh`): metres, in the crop's weak-perspective frame: x right,
   y up, z toward the viewer, origin at the crop centre on the depth of the fitted head's model origin.

**Calibrated** (``intrinsics``: the crop's pinhole, :func:`facenormals.fusion.crop_intrinsics` of a calibration
file's or a sensor's colour intrinsics): the fit's scale then gives the distance of the fitted landmarks' mean
depth, ``Z0 = f / (100 · s)`` (crop pixels per metre there = focal length / distance), and the depth map is
written for the real camera: ``Z = Z0 − relief`` (relief from that mean depth) along the optical axis,
back-projected by the real rays. At the landmarks' mean depth the lateral scale is exactly the fit's; the
relief keeps the fit's weak perspective (a face seen off-axis is not re-projected: its relief stays along the
optical axis). Meshes are then in the camera frame (metres, origin at the camera centre, z = −depth), so faces
of one frame sit where they are relative to each other. The distance is as good as the fit's scale, i.e. as the
person's head is ICT-sized (rendered ICT faces: ±6 % median, ``benchmarks/face3d.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from facenormals import fusion
from facenormals.camera import Intrinsics
from facenormals.ict_fit import NUM_FIT_POINTS, IctFace, IctFit, load_ict_face
from facenormals.mesh_prior import rasterize_mesh
from facenormals.ply import depth_mesh, write_ply

NOMINAL_DISTANCE_M = 10.0  # the virtual camera's distance: rays parallel to < 1° over a face crop
CM_PER_M = 100.0

# The fusion knobs for a fitted face: its depth is smooth and noise-free but coarse (ICT's shape, not the
# person's), and at every scale the face crop holds its shape is no better than the network's, so the normals carry
# everything below ~2π/√λ ≈ 440 crop pixels and the fitted depth only anchors the surface's distance and overall tilt
# (benchmarks/face3d.py: λ 0.002 lost 0.14° more against the ground truth, λ 0.02 ~0.45°); no bias correction (it
# rotates the normals toward the fitted face's low frequencies: on exact normals it costs 0.7°), no outliers, no
# pre-smoothing. The CG tolerance is relative to ‖λ·Z‖ with Z ≈ 10 m.
# jump_m: neighbours whose fitted depths differ by more than 6 mm are not tied — the fitted face's own
# self-occlusion steps (eyelid rims, nostrils, lips). A slope, not a distance: it is stated for a crop of
# JUMP_PX_PER_M (the evidence's median face: 256² crops, 0.83 mm a pixel, where 6 mm is an 82° slope) and refine()
# scales it with the crop's pixel. The fitted depth is noise-free, so it can be judged finer than a sensor's 1–2 cm;
# tied, the surface had to bend across those steps
# (benchmarks/face3d.py, 40 faces, with the refined normals differenced only along tied edges: 13.73 → 13.60°
# against the maps, flat over 3–8 mm; 2 cm before). sharpen_normals: the refined surface's normals keep the
# normals' detail (a 6-px ripple: 1.3 → 0.4°, tests/test_face3d.py); the shipped network's are level (13.60°).
FACE_FUSION = fusion.FusionConfig(position_weight=2e-4, correct_bias=False, outlier_m=0.0, presmooth_px=0.0,
                                  jump_m=0.006, crossover_px=0.0, tolerance=3e-6, max_iterations=400,
                                  sharpen_normals=True)

JUMP_PX_PER_M = 1200.0  # the crop scale FACE_FUSION.jump_m is stated for (crop pixels per metre)

# Where the fitted face's own smooth-shaded normals are more than RIM_DEG off its depth's normals (eyelid rims,
# nostrils, lip lines, the jaw's fold: interpolated vertex normals across self-occlusions and creases), the rendered
# normal maps — and the network that learnt them — hold normals no surface has. The solve trusts the normals there
# RIM_WEIGHT as much (weighted least squares, refine's ``rim_weight``), so it does not spread their misfit over the
# neighbours. benchmarks/face3d.py, 40 faces: 13.440 → 13.430° (better on 27 of 40; held out, 60 faces: 13.908 →
# 13.898°); down-weighting the ground truth's own rims instead (an oracle) gains no more (13.429°).
RIM_DEG = 5.0
RIM_WEIGHT = 0.3

# A tracked face: CG iterations per frame, started from the last frame's detail; the solve carries on over frames.
# 12 SSOR-preconditioned iterations (the CPU solver, facenormals.fusion_cg) cost and gain about what 50 Jacobi ones did.
WARM_MAX_ITERATIONS = 12


@dataclass(frozen=True)
class CoarseDepth:
    """The fitted face's depth over the crop (metres along the virtual camera's axis, NaN outside ``coverage``)."""

    depth_m: np.ndarray          # float32 S×S
    coverage: np.ndarray         # bool S×S: pixels the fitted face covers
    intrinsics: Intrinsics       # the virtual weak-perspective pinhole (see the module docstring)
    px_per_m: float              # crop pixels per metre (100 × the fit's scale)
    origin_z_px: float           # the crop-space z (pixels) put at ``distance_m``
    distance_m: float = NOMINAL_DISTANCE_M  # the nominal distance, or the head's from calibrated intrinsics
    calibrated: bool = False     # ``intrinsics`` are the real camera's (meshes in the camera frame)
    # float32 S×S×3: the fitted face's smooth-shaded normals from the same z-buffer (orthographic, our frame; zero
    # outside ``coverage``): what a renderer draws for it, compared with its depth's normals by :func:`normal_trust`
    shading_normals: np.ndarray | None = None


def weak_perspective_intrinsics(size: int, px_per_m: float, distance_m: float = NOMINAL_DISTANCE_M) -> Intrinsics:
    """The pinhole at ``distance_m`` that images a fronto-parallel plane there at ``px_per_m``; centre of the crop."""
    focal = px_per_m * distance_m
    centre = (size - 1) / 2.0
    return Intrinsics(width=size, height=size, fx=focal, fy=focal, cx=centre, cy=centre)


def rasterize_mesh_depth(points_crop_xyz: np.ndarray, triangles: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Orthographic z-buffer of a mesh on a size×size crop: (z in crop pixels, NaN outside; coverage).

    The depth of :func:`facenormals.mesh_prior.rasterize_mesh` (one z-buffer for normals and depth): crop
    points (N, 3) in pixels, x right, y up, z toward the camera; triangles CCW from outside; the nearest front
    triangle containing a pixel centre wins, its z interpolated barycentrically.
    """
    _, coverage, zbuf = rasterize_mesh(points_crop_xyz, triangles, size)
    return np.where(coverage, zbuf, np.nan), coverage


def calibrated_distance_m(intrinsics: Intrinsics, px_per_m: float) -> float:
    """The distance (m, along the optical axis) at which the crop's pinhole images ``px_per_m`` pixels per metre."""
    if not px_per_m > 0:
        raise ValueError(f"px_per_m must be positive, got {px_per_m}")
    return 0.5 * (intrinsics.fx + intrinsics.fy) / px_per_m


def coarse_depth_from_points(points_crop_xyz: np.ndarray, triangles: np.ndarray, size: int, px_per_m: float,
                             origin_z_px: float | None = None, distance_m: float = NOMINAL_DISTANCE_M,
                             intrinsics: Intrinsics | None = None) -> CoarseDepth:
    """Any crop-space mesh (weak perspective, ``px_per_m`` crop pixels per metre) → :class:`CoarseDepth`.

    The crop-space ``origin_z_px`` (default: the mean vertex z) is placed at ``distance_m``; depth grows away
    from the camera: ``Z = distance − (z − origin_z) / px_per_m``. With the crop's real ``intrinsics`` the
    distance is the head's (:func:`calibrated_distance_m`) and ``distance_m`` is not used.
    """
    if not px_per_m > 0:
        raise ValueError(f"px_per_m must be positive, got {px_per_m}")
    if intrinsics is not None:
        if (intrinsics.width, intrinsics.height) != (size, size):
            raise ValueError(f"intrinsics are for a {intrinsics.width}×{intrinsics.height} image, not the "
                             f"{size}×{size} crop: pass fusion.crop_intrinsics(frame_intrinsics, crop_matrix, size)")
        distance_m = calibrated_distance_m(intrinsics, px_per_m)
    shading, coverage, zbuf = rasterize_mesh(points_crop_xyz, triangles, size)
    z_px = np.where(coverage, zbuf, np.nan)
    origin = float(np.mean(np.asarray(points_crop_xyz)[:, 2])) if origin_z_px is None else float(origin_z_px)
    depth = (distance_m - (z_px - origin) / px_per_m).astype(np.float32)
    intr = intrinsics if intrinsics is not None else weak_perspective_intrinsics(size, px_per_m, distance_m)
    return CoarseDepth(depth, coverage, intr, float(px_per_m), origin, float(distance_m), intrinsics is not None,
                       shading)


def normal_trust(coarse: CoarseDepth, box: tuple[slice, slice] | None = None,
                 rim_weight: float = RIM_WEIGHT) -> np.ndarray | None:
    """Per-pixel trust in the normals as a surface's (over ``box`` of the crop): 1, or ``rim_weight`` where the fitted
    face's smooth-shaded normals are more than :data:`RIM_DEG` off its depth's own (see :data:`RIM_WEIGHT`).

    Both orthographic, in crop pixels: the depth's relief ``h = (distance − Z)·px_per_m`` by central differences,
    normal ∝ (−∂h/∂u, ∂h/∂v, 1) (also for a calibrated crop: the shading normals are the fit's weak perspective, not
    the real rays'). Pixels without both neighbours along an axis (the coverage's edge) keep trust 1. None without
    shading normals or with ``rim_weight`` ≥ 1 (the plain least squares).
    """
    if coarse.shading_normals is None or rim_weight >= 1.0:
        return None
    box = box if box is not None else (slice(None), slice(None))
    height = (np.float32(coarse.distance_m) - coarse.depth_m[box]) * np.float32(coarse.px_per_m)
    h_u = np.full_like(height, np.nan)
    h_v = np.full_like(height, np.nan)
    h_u[:, 1:-1] = 0.5 * (height[:, 2:] - height[:, :-2])
    h_v[1:-1] = 0.5 * (height[2:] - height[:-2])
    shading = coarse.shading_normals[box]
    along = -h_u * shading[..., 0] + h_v * shading[..., 1] + shading[..., 2]  # unnormalised surface normal · shading
    with np.errstate(invalid="ignore"):
        rim = along < np.float32(np.cos(np.radians(RIM_DEG))) * np.sqrt(h_u * h_u + h_v * h_v + 1.0)
    return np.where(rim, np.float32(rim_weight), np.float32(1.0))


def coarse_depth(fit: IctFit, size: int, face: IctFace | None = None, distance_m: float = NOMINAL_DISTANCE_M,
                 intrinsics: Intrinsics | None = None) -> CoarseDepth:
    """The fitted ICT face's depth over the size×size crop; metric from the fit's scale (crop pixels per cm).

    ``intrinsics``: the crop's real pinhole (calibrated: the head's distance from the focal length, see the
    module docstring); without it the virtual weak-perspective pinhole at ``distance_m``.
    """
    face = face if face is not None else load_ict_face()
    points = fit.crop_points(face)
    return coarse_depth_from_points(points, face.triangles, size, fit.scale * CM_PER_M,
                                    reference_z_px(fit, face, points, intrinsics is not None), distance_m, intrinsics)


def reference_z_px(fit: IctFit, face: IctFace, points: np.ndarray, calibrated: bool) -> float:
    """The crop-space z put at the (nominal or calibrated) distance. Calibrated: the fitted landmarks' mean depth,
    the depth at which a weak-perspective fit's scale is the camera's magnification (f / Z); else the fitted
    head's model origin (a fixed point of the head, for the nominal frame)."""
    if calibrated:
        return float(np.mean(face.landmark_points(points)[:NUM_FIT_POINTS, 2]))
    return float(fit.translation[2])


def refine(coarse: CoarseDepth, normals: np.ndarray, mask: np.ndarray | None = None,
           config: fusion.FusionConfig = FACE_FUSION, init: np.ndarray | None = None,
           rotation: np.ndarray | None = None, rim_weight: float = RIM_WEIGHT) -> fusion.FusionResult:
    """Refine the coarse depth with the crop's predicted normals (S×S×3, our frame): :func:`facenormals.fusion.fuse`.

    ``mask``: the face region (e.g. ``FaceResult.crop_mask``), intersected with the coverage;
    ``config.tolerance`` is stated for a face at :data:`NOMINAL_DISTANCE_M` and ``config.jump_m`` for a crop of
    :data:`JUMP_PX_PER_M` (both scaled here for others: the same relief accuracy, the same slope). ``init`` and
    ``rotation``: the same tracked face's previous refined depth and bias rotation, moved into this crop
    (:func:`facenormals.fusion.warp_crop`), for a warm start. ``rim_weight``: the trust in the normals where the
    fitted face's shading normals are no surface's (:data:`RIM_WEIGHT`; 1 = plain least squares).
    """
    region = coarse.coverage if mask is None else coarse.coverage & np.asarray(mask, bool)
    if coarse.distance_m != NOMINAL_DISTANCE_M:
        # the CG tolerance is relative to ‖λ·Z‖ and stated for the nominal distance: the same relief accuracy
        # for a head at its real (calibrated) distance
        config = replace(config, tolerance=config.tolerance * NOMINAL_DISTANCE_M / coarse.distance_m)
    # a step of jump_m at JUMP_PX_PER_M is a slope: the same slope on this crop's pixels
    config = replace(config, jump_m=config.jump_m * JUMP_PX_PER_M / coarse.px_per_m)
    rows, cols = np.nonzero(region)
    if rows.size == 0:
        raise fusion.DepthError("empty face region: the fitted face covers none of the mask")
    # solve on the region's bounding box only (the crop's corners are background): ~30 % less work per face
    size = region.shape
    r0, r1 = max(int(rows.min()) - 2, 0), min(int(rows.max()) + 3, size[0])
    c0, c1 = max(int(cols.min()) - 2, 0), min(int(cols.max()) + 3, size[1])
    box = (slice(r0, r1), slice(c0, c1))
    intr = coarse.intrinsics
    sub = Intrinsics(width=c1 - c0, height=r1 - r0, fx=intr.fx, fy=intr.fy, cx=intr.cx - c0, cy=intr.cy - r0)
    part = fusion.fuse(coarse.depth_m[box], np.asarray(normals)[box], region[box], sub, config,
                       init=None if init is None else init[box], rotation=None if rotation is None else rotation[box],
                       normal_weight=normal_trust(coarse, box, rim_weight))

    def paste(x: np.ndarray | None, fill: float) -> np.ndarray | None:
        if x is None:
            return None
        out = np.full((*size, *x.shape[2:]), fill, dtype=x.dtype)
        out[box] = x
        return out

    return replace(part, depth_m=paste(part.depth_m, np.nan), normals=paste(part.normals, 0.0),
                   corrected_normals=paste(part.corrected_normals, 0.0), region=paste(part.region, False),
                   bias_rotation=paste(part.bias_rotation, 0.0))


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh in metres (see the module docstring for the frame): vertices, faces, unit vertex normals."""

    vertices: np.ndarray   # float32 V×3
    faces: np.ndarray      # int32 F×3, counter-clockwise seen from outside (toward the camera)
    normals: np.ndarray    # float32 V×3

    def to_trimesh(self):
        import trimesh

        return trimesh.Trimesh(self.vertices, self.faces, vertex_normals=self.normals, process=False)

    def save_ply(self, path) -> None:
        write_ply(path, self.vertices, self.normals, faces=self.faces)


def depth_to_mesh(depth_m: np.ndarray, coarse: CoarseDepth, mask: np.ndarray | None = None,
                  max_edge_m: float = 0.01, step: int = 1, normals: np.ndarray | None = None) -> Mesh:
    """Grid mesh of a crop depth map: on the virtual camera, moved so the nominal distance is z = 0; calibrated,
    in the camera frame. ``step``: every step-th pixel in each direction (2 → a quarter of the vertices).
    ``normals``: the surface's normals per crop pixel (a refinement's ``FusionResult.normals``, differenced as its
    solve tied the pixels) as the vertex normals; zero ones, and all without it, are the depth's own."""
    intr = coarse.intrinsics
    if step > 1:  # the sub-grid's pixel (r, c) is the crop's (step·r, step·c)
        depth_m = depth_m[::step, ::step]
        mask = None if mask is None else mask[::step, ::step]
        normals = None if normals is None else normals[::step, ::step]
        intr = Intrinsics(width=depth_m.shape[1], height=depth_m.shape[0], fx=intr.fx / step, fy=intr.fy / step,
                          cx=intr.cx / step, cy=intr.cy / step)
    vertices, normals, faces = depth_mesh(depth_m, intr, max_edge_m=max_edge_m * step, mask=mask, normals=normals)
    if not coarse.calibrated:
        vertices = vertices.astype(np.float64)
        vertices[:, 2] += coarse.distance_m
    return Mesh(vertices.astype(np.float32), faces, normals)  # depth_mesh winds CCW seen from the camera


def coarse_mesh(fit: IctFit, size: int, face: IctFace | None = None, intrinsics: Intrinsics | None = None) -> Mesh:
    """The fitted ICT face itself as a mesh in the same metric frame as :func:`depth_to_mesh` (with the same
    ``intrinsics``: each vertex at ``Z0 − relief`` on the real ray through its crop pixel)."""
    from facenormals.mesh_prior import vertex_normals

    face = face if face is not None else load_ict_face()
    points = fit.crop_points(face).astype(np.float64)
    px_per_m = fit.scale * CM_PER_M
    relief_m = (points[:, 2] - reference_z_px(fit, face, points, intrinsics is not None)) / px_per_m
    if intrinsics is None:
        centre = (size - 1) / 2.0
        vertices = np.stack([(points[:, 0] - centre) / px_per_m, (points[:, 1] + centre) / px_per_m, relief_m], 1)
    else:
        depth = calibrated_distance_m(intrinsics, px_per_m) - relief_m
        vertices = np.stack([(points[:, 0] - intrinsics.cx) * depth / intrinsics.fx,
                             (-points[:, 1] - intrinsics.cy) * -depth / intrinsics.fy, -depth], axis=1)
    return Mesh(vertices.astype(np.float32), face.triangles.astype(np.int32),
                vertex_normals(vertices, face.triangles).astype(np.float32))


@dataclass(frozen=True)
class Face3D:
    """One face's coarse depth, its refinement and both meshes."""

    coarse: CoarseDepth
    refined: fusion.FusionResult
    mesh: Mesh
    coarse_mesh: Mesh | None

    @property
    def detail_m(self) -> np.ndarray:
        """What the refinement added to the coarse depth (metres, NaN outside the region): a tracked face's warm start."""
        return self.refined.depth_m - self.coarse.depth_m


def face_3d(fit: IctFit, crop_normals: np.ndarray, crop_mask: np.ndarray | None = None,
            config: fusion.FusionConfig = FACE_FUSION, init: np.ndarray | None = None,
            rotation: np.ndarray | None = None, face: IctFace | None = None, intrinsics: Intrinsics | None = None,
            mesh_step: int = 1, with_coarse_mesh: bool = True, init_detail: np.ndarray | None = None) -> Face3D:
    """Fit → coarse depth → refined depth → meshes, for one crop (S×S×3 normals from the network).

    ``intrinsics``: the crop's real pinhole (calibrated, see the module docstring); ``mesh_step``: the refined
    mesh's grid step (2 for a live view: a quarter of the vertices); ``with_coarse_mesh``: False leaves
    ``Face3D.coarse_mesh`` None (a view that draws only the refined face). ``init_detail``: the tracked face's last
    :attr:`Face3D.detail_m` moved into this crop — the warm start is this frame's coarse depth plus it, so the
    fit's frame-to-frame changes of scale and depth origin (low frequencies, slow for CG) are not solved again.
    """
    face = face if face is not None else load_ict_face()
    size = crop_normals.shape[0]
    coarse = coarse_depth(fit, size, face, intrinsics=intrinsics)
    if init_detail is not None:
        init = np.where(np.isfinite(init_detail), coarse.depth_m + init_detail, np.nan)
    refined = refine(coarse, crop_normals, crop_mask, config, init, rotation)
    return Face3D(coarse, refined, depth_to_mesh(refined.depth_m, coarse, refined.region, step=mesh_step,
                                                normals=refined.normals),
                  coarse_mesh(fit, size, face, intrinsics) if with_coarse_mesh else None)


def face_result_mesh(result, config: fusion.FusionConfig = FACE_FUSION, intrinsics: object = None) -> Mesh:
    """``FaceResult.mesh()``: the refined face mesh in metres (see the module docstring for the frame).

    ``intrinsics`` (an ``Intrinsics`` or 3×3 matrix of the whole image; default ``result.intrinsics``): the
    calibrated path, a mesh in the camera frame. Needs the face's ICT fit (``result.fit``); ValueError without one.
    """
    from facenormals.camera import intrinsics_from_matrix

    if result.fit is None:
        why = ("this face was seen by the face detection alone (source='detector', a profile the face mesh missed), "
               "with no landmarks to fit one to" if getattr(result, "source", "mesh") == "detector" else
               "which models with an ICT prior (ict-fit, ict-blend) provide; use facenormals.face3d.face_3d(fit, "
               "crop_normals) with a fit of your own")
        raise ValueError(f"FaceResult.mesh() needs the face's ICT fit (result.fit): {why}")
    camera = intrinsics if intrinsics is not None else getattr(result, "intrinsics", None)
    crop = None
    if camera is not None:
        size = result.crop_normals.shape[0]
        crop = fusion.crop_intrinsics(intrinsics_from_matrix(camera, result.normals.shape[:2]), result.crop_matrix,
                                      size)
    return face_3d(result.fit, result.crop_normals, result.crop_mask, config, intrinsics=crop,
                   with_coarse_mesh=False).mesh


__all__ = [
    "FACE_FUSION",
    "JUMP_PX_PER_M",
    "RIM_DEG",
    "RIM_WEIGHT",
    "WARM_MAX_ITERATIONS",
    "CoarseDepth",
    "Face3D",
    "Mesh",
    "calibrated_distance_m",
    "coarse_depth",
    "coarse_depth_from_points",
    "coarse_mesh",
    "depth_to_mesh",
    "face_3d",
    "face_result_mesh",
    "normal_trust",
    "rasterize_mesh_depth",
    "reference_z_px",
    "refine",
    "weak_perspective_intrinsics",
]
