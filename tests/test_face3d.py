"""A 3-D face from RGB alone (issue 20): the fitted face's depth, its refinement by normals, meshes and PLY export."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from surfaces import sphere_depth

from facenormals import face3d, ict_fit
from facenormals.camera import Intrinsics
from facenormals.conventions import angular_error_deg
from facenormals.fusion import FusionConfig

SIZE = 128
PX_PER_CM = 5.0
RADIUS_CM = 9.0


def grid_mesh(rows: int, cols: int) -> np.ndarray:
    """Triangles of a rows×cols vertex grid (row-major), CCW seen from +z when rows go up in y."""
    idx = np.arange(rows * cols).reshape(rows, cols)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    return np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([b, d, c], -1).reshape(-1, 3)])


def sphere_cap(n: int) -> tuple[np.ndarray, np.ndarray]:
    """A hemisphere (radius 9 cm at 5 crop px/cm, centred in the crop) as an n×n grid mesh of its projection."""
    s = np.linspace(-1.0, 1.0, n)
    x, y = np.meshgrid(s, s)
    r = np.hypot(x, y)
    shrink = np.where(r > 1, 1 / np.maximum(r, 1e-9), 1.0)  # the square grid pulled onto the disc
    x, y = x * shrink * 0.999, y * shrink * 0.999
    z = np.sqrt(np.maximum(1 - x**2 - y**2, 0))
    points = np.stack([x, y, z], -1).reshape(-1, 3) * RADIUS_CM * PX_PER_CM
    points[:, 0] += (SIZE - 1) / 2
    points[:, 1] -= (SIZE - 1) / 2
    return points, grid_mesh(n, n)


def exact_sphere() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Orthographic height (cm) and normals of the hemisphere at every crop pixel, and the pixels 2 px inside its rim."""
    rows, cols = np.mgrid[:SIZE, :SIZE]
    x = (cols - (SIZE - 1) / 2) / PX_PER_CM
    y = -(rows - (SIZE - 1) / 2) / PX_PER_CM
    inside = np.hypot(x, y) < RADIUS_CM - 2 / PX_PER_CM
    z = np.sqrt(np.maximum(RADIUS_CM**2 - x**2 - y**2, 0))
    normals = (np.stack([x, y, z], -1) / RADIUS_CM).astype(np.float32)
    return z, normals, inside


def test_plane_depth_is_exact_up_to_weak_perspective():
    """A tilted plane: linear in the crop, so the rasterised depth is exact; metric from px/cm."""
    n = 5
    s = np.linspace(10, SIZE - 10, n)
    x, y = np.meshgrid(s, -s[::-1])
    z = 0.3 * (x - 64) - 0.2 * (y + 64) + 7.0  # crop pixels
    points = np.stack([x, y, z], -1).reshape(-1, 3)
    coarse = face3d.coarse_depth_from_points(points, grid_mesh(n, n), SIZE, PX_PER_CM * 100, origin_z_px=7.0)
    rows, cols = np.mgrid[:SIZE, :SIZE]
    expected = face3d.NOMINAL_DISTANCE_M - (0.3 * (cols - 64) - 0.2 * (-rows + 64)) / (PX_PER_CM * 100)
    assert coarse.coverage[12:-12, 12:-12].all() and not coarse.coverage[:9].any()
    assert np.abs(coarse.depth_m - expected)[coarse.coverage].max() < 2e-6  # float32 at 10 m
    assert np.isnan(coarse.depth_m[~coarse.coverage]).all()
    intr = coarse.intrinsics
    assert intr.fx == pytest.approx(PX_PER_CM * 100 * face3d.NOMINAL_DISTANCE_M) and intr.cx == (SIZE - 1) / 2


def test_sphere_depth_is_exact_up_to_the_facets():
    points, triangles = sphere_cap(81)
    coarse = face3d.coarse_depth_from_points(points, triangles, SIZE, PX_PER_CM * 100, origin_z_px=0.0)
    z_cm, _, inside = exact_sphere()
    height_cm = (face3d.NOMINAL_DISTANCE_M - coarse.depth_m) * 100
    assert coarse.coverage[inside].all()
    assert np.abs(height_cm - z_cm)[inside].max() < 0.1  # chord error of ~1.1 cm facets: < 1 mm


def test_back_faces_are_culled_and_the_nearest_wins():
    points, triangles = sphere_cap(21)
    back = points.copy()
    back[:, 2] = -back[:, 2] - 5  # a second, farther surface facing the camera
    both = np.concatenate([points, back])
    z_px, coverage = face3d.rasterize_mesh_depth(both, np.concatenate([triangles, triangles + len(points)]), SIZE)
    z_front, _ = face3d.rasterize_mesh_depth(points, triangles, SIZE)
    assert np.array_equal(z_px[coverage], z_front[coverage])
    s = np.linspace(10, SIZE - 10, 4)
    x, y = np.meshgrid(s, -s[::-1])
    plane = np.stack([x, y, 0.1 * x], -1).reshape(-1, 3)
    assert face3d.rasterize_mesh_depth(plane, grid_mesh(4, 4), SIZE)[1].any()
    assert not face3d.rasterize_mesh_depth(plane, grid_mesh(4, 4)[:, ::-1], SIZE)[1].any()  # clockwise: back faces


def test_refinement_with_exact_normals_recovers_the_sphere():
    """Coarse = a 9×9-vertex faceted sphere; the exact normals bring the refined surface close to the smooth one."""
    points, triangles = sphere_cap(9)
    coarse = face3d.coarse_depth_from_points(points, triangles, SIZE, PX_PER_CM * 100, origin_z_px=0.0)
    z_cm, normals, inside = exact_sphere()
    result = face3d.refine(coarse, normals, inside)
    region = result.region & inside
    region[:, :3] = region[:, -3:] = region[:3] = region[-3:] = False
    from facenormals.depth import normals_from_depth

    coarse_normals, _ = normals_from_depth(coarse.depth_m, coarse.intrinsics)
    coarse_error = angular_error_deg(coarse_normals[region], normals[region]).mean()
    refined_error = angular_error_deg(result.normals[region], normals[region]).mean()
    assert coarse_error > 5.0
    assert refined_error < 1.0  # the facets (~11 px) are far below λ's crossover (~440 px): the normals set them
    def height_error_cm(depth_m: np.ndarray) -> float:
        error = (face3d.NOMINAL_DISTANCE_M - depth_m) * 100 - z_cm
        return float(np.abs(error - np.median(error[region]))[region].mean())

    assert height_error_cm(result.depth_m) < 0.3 and height_error_cm(result.depth_m) <= height_error_cm(coarse.depth_m)


def test_refinement_never_loses_the_input_normals_accuracy():
    """Known answer: the sphere's exact normals spoiled by per-pixel noise and a smooth non-integrable twist. The
    refined surface is integrable, so its normals drop what cannot be a surface's: closer to the truth than the input."""
    points, triangles = sphere_cap(9)
    coarse = face3d.coarse_depth_from_points(points, triangles, SIZE, PX_PER_CM * 100, origin_z_px=0.0)
    _, exact, inside = exact_sphere()
    rows, cols = np.mgrid[:SIZE, :SIZE]
    twist = np.stack([0.15 * np.sin(rows / 9.0), 0.15 * np.sin(cols / 7.0), np.zeros_like(rows, float)], -1)
    noise = np.random.default_rng(0).normal(0.0, 0.1, exact.shape)
    spoiled = (exact + twist + noise).astype(np.float32)
    spoiled /= np.linalg.norm(spoiled, axis=-1, keepdims=True)
    result = face3d.refine(coarse, spoiled, inside)
    region = result.region & inside
    region[:, :3] = region[:, -3:] = region[:3] = region[-3:] = False
    input_error = angular_error_deg(spoiled[region], exact[region]).mean()
    refined_error = angular_error_deg(result.normals[region], exact[region]).mean()
    assert input_error > 8.0 and refined_error < input_error / 2


def bumped_sphere(wavelength_px: float, amplitude_cm: float = 0.04) -> tuple[np.ndarray, np.ndarray]:
    """The hemisphere with a ripple ``A·sin(kx)·sin(ky)`` (an integrable surface): its exact normals, and the
    pixels 2 px inside the rim."""
    rows, cols = np.mgrid[:SIZE, :SIZE]
    x = (cols - (SIZE - 1) / 2) / PX_PER_CM
    y = -(rows - (SIZE - 1) / 2) / PX_PER_CM
    k = 2 * np.pi * PX_PER_CM / wavelength_px
    cap = np.sqrt(np.maximum(RADIUS_CM**2 - x**2 - y**2, 1e-6))
    zx = -x / cap + amplitude_cm * k * np.cos(k * x) * np.sin(k * y)
    zy = -y / cap + amplitude_cm * k * np.sin(k * x) * np.cos(k * y)
    normals = np.stack([-zx, -zy, np.ones_like(zx)], -1)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    return normals.astype(np.float32), np.hypot(x, y) < RADIUS_CM - 2 / PX_PER_CM


@pytest.mark.parametrize("wavelength_px", [6.0, 12.0])
def test_refined_normals_keep_the_normals_detail(wavelength_px: float):
    """Coarse: the smooth faceted sphere; normals: the exact ones of the sphere with a fine ripple (up to 12° of
    tilt). The refined surface carries the ripple: its normals are within 0.6° of the input's (which are exact),
    where the plain central differences of the same surface lose the ripple's slope (cos²(ω/2)) — the knob
    ``sharpen_normals`` is what keeps it. (Plain least squares: the 9×9-vertex cap's facets are ~20° apart, so its
    shading normals are off its depth's nearly everywhere — no rims to weight.)"""
    from dataclasses import replace

    points, triangles = sphere_cap(9)
    coarse = face3d.coarse_depth_from_points(points, triangles, SIZE, PX_PER_CM * 100, origin_z_px=0.0)
    normals, inside = bumped_sphere(wavelength_px)
    result = face3d.refine(coarse, normals, inside, rim_weight=1.0)
    plain = face3d.refine(coarse, normals, inside, replace(face3d.FACE_FUSION, sharpen_normals=False), rim_weight=1.0)
    region = result.region & inside
    region[:, :4] = region[:, -4:] = region[:4] = region[-4:] = False
    refined_error = angular_error_deg(result.normals[region], normals[region]).mean()
    plain_error = angular_error_deg(plain.normals[region], normals[region]).mean()
    assert refined_error < 0.6 and refined_error < plain_error
    if wavelength_px < 8:
        assert plain_error > 1.0  # a 6-px ripple through [¼ ½ ¼]: a quarter of its slope


def folded_cap() -> tuple[face3d.CoarseDepth, np.ndarray, np.ndarray, np.ndarray]:
    """A finely meshed hemisphere (81×81 vertices: its shading normals are its depth's to ~1°) whose shading normals
    are folded along a 3-px band across it (turned 15° sideways there, about the vertical axis: what a renderer's
    interpolated normals do across a crease). Returns the coarse depth, the exact normals, the pixels well inside,
    the band."""
    from dataclasses import replace

    points, triangles = sphere_cap(81)
    coarse = face3d.coarse_depth_from_points(points, triangles, SIZE, PX_PER_CM * 100, origin_z_px=0.0)
    _, exact, inside = exact_sphere()
    rows, cols = np.mgrid[:SIZE, :SIZE]
    inner = inside & (np.hypot(rows - (SIZE - 1) / 2, cols - (SIZE - 1) / 2) < 0.8 * RADIUS_CM * PX_PER_CM)
    band = (np.abs(rows - 64) <= 1) & inner
    folded = coarse.shading_normals.copy()
    folded[band] = turned(folded[band], 15.0)
    return replace(coarse, shading_normals=folded), exact, inner, band


def turned(normals: np.ndarray, degrees: float) -> np.ndarray:
    """Normals rotated about the vertical axis (y): a horizontal band of them slopes sideways, which no surface
    does only there (the band's edges have curl)."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    out = normals.copy()
    out[..., 0], out[..., 2] = c * normals[..., 0] + s * normals[..., 2], -s * normals[..., 0] + c * normals[..., 2]
    return out


def test_the_fitted_faces_rims_are_trusted_less():
    """Where the fitted face's shading normals agree with its depth's, the normals are trusted fully; on a fold of
    the shading normals (a crease, a self-occlusion's rim) they get RIM_WEIGHT."""
    coarse, _, inner, band = folded_cap()
    trust = face3d.normal_trust(coarse)
    assert np.all(trust[inner & ~band] == 1.0)
    assert np.all(trust[band] == pytest.approx(face3d.RIM_WEIGHT))
    assert face3d.normal_trust(coarse, rim_weight=1.0) is None


def test_weighted_refinement_keeps_non_integrable_normals_local():
    """Known answer: the sphere's exact normals with per-pixel noise (~2°), and turned 15° sideways on the band where
    the fitted face's shading is folded (normals no surface has, as a network learns them at rims). The refined
    surface is integrable: its normals are closer to the truth than the input's; trusting the band's normals less
    keeps their misfit from spreading: beside the band the weighted surface is closer to the truth than the plain
    least squares (by ~40 %), and over the whole region too."""
    coarse, exact, inner, band = folded_cap()
    spoiled = exact + np.random.default_rng(0).normal(0.0, 0.03, exact.shape)
    spoiled[band] = turned(spoiled[band], 15.0)
    spoiled = (spoiled / np.linalg.norm(spoiled, axis=-1, keepdims=True)).astype(np.float32)
    weighted = face3d.refine(coarse, spoiled, inner)
    plain = face3d.refine(coarse, spoiled, inner, rim_weight=1.0)
    rows = np.mgrid[:SIZE, :SIZE][0]
    beside = inner & ~band & (np.abs(rows - 64) <= 6)
    scored = inner & weighted.region & plain.region
    scored &= np.pad(scored[1:-1, 1:-1] & scored[:-2, 1:-1] & scored[2:, 1:-1] & scored[1:-1, :-2]
                     & scored[1:-1, 2:], 1)  # one pixel in from the region's border, as the benchmark scores

    def error(normals: np.ndarray, where: np.ndarray) -> float:
        return float(angular_error_deg(normals[where & scored], exact[where & scored]).mean())

    assert error(weighted.normals, scored) < error(spoiled, scored)
    assert error(weighted.normals, beside) < 0.8 * error(plain.normals, beside)
    assert error(weighted.normals, scored) < error(plain.normals, scored)


def test_a_self_occlusion_step_is_kept():
    """Coarse: two fronto-parallel planes, the upper half 2 cm nearer (an eyelid over the eye); normals: all facing
    the camera (here 2 mm a crop pixel: the jump of 6 mm at 0.83 mm a pixel is 14 mm). Ties across the fitted face's
    steps are cut, so the refined surface keeps the step and every normal beside it is exact; tied (jump ×4), the
    normals flatten it (λ's crossover is wider than the crop), bending the surface around it."""
    from dataclasses import replace

    n = 5
    s = np.linspace(4, SIZE - 4, n)
    x, _ = np.meshgrid(s, s)
    upper_y, lower_y = np.linspace(-4, -63.5, n), np.linspace(-63.5, -(SIZE - 4), n)
    step_px = 2.0 * PX_PER_CM
    upper = np.stack([x, np.meshgrid(s, upper_y)[1], np.full_like(x, step_px)], -1).reshape(-1, 3)
    lower = np.stack([x, np.meshgrid(s, lower_y)[1], np.zeros_like(x)], -1).reshape(-1, 3)
    triangles = grid_mesh(n, n)[:, ::-1]  # rows go down in y here: flip the winding to face the camera
    coarse = face3d.coarse_depth_from_points(np.concatenate([upper, lower]),
                                             np.concatenate([triangles, triangles + n * n]), SIZE, PX_PER_CM * 100)
    inside = np.zeros((SIZE, SIZE), bool)
    inside[10:-10, 10:-10] = True
    assert coarse.coverage[inside].all()
    facing = np.zeros((SIZE, SIZE, 3), np.float32)
    facing[..., 2] = 1.0
    cut = face3d.refine(coarse, facing, inside)
    tied = face3d.refine(coarse, facing, inside, replace(face3d.FACE_FUSION, jump_m=4 * face3d.FACE_FUSION.jump_m))

    def step_cm(result) -> float:
        return float(np.nanmedian(result.depth_m[66:70, 20:-20]) - np.nanmedian(result.depth_m[58:62, 20:-20])) * 100

    assert step_cm(cut) == pytest.approx(2.0, abs=0.02)
    assert angular_error_deg(cut.normals[inside], facing[inside]).max() < 0.1
    assert step_cm(tied) < 0.5 and angular_error_deg(tied.normals[inside], facing[inside]).max() > 1.0


def test_a_plane_takes_the_normals_tilt_and_the_coarse_distance():
    """Coarse: a plane tilted one way; normals: a plane tilted another. Over a region far below λ's crossover (~440 crop
    px; here 88 px) the normals set the shape: the refined surface is a plane with nearly the normals' tilt (the
    position term pulls it ~λ·⟨x²⟩ ≈ 13 % of the way toward the coarse tilt, and bends it a little), at the coarse
    plane's mean distance."""
    n = 5
    s = np.linspace(10, SIZE - 10, n)
    x, y = np.meshgrid(s, -s[::-1])
    points = np.stack([x, y, 0.3 * (x - 64) - 0.2 * (y + 64)], -1).reshape(-1, 3)  # crop pixels
    coarse = face3d.coarse_depth_from_points(points, grid_mesh(n, n), SIZE, PX_PER_CM * 100, origin_z_px=0.0)
    slope_x, slope_y = -0.1, 0.25  # the normals' plane: height = slope_x·x + slope_y·y (orthographic, crop units)
    normal = np.array([-slope_x, -slope_y, 1.0]) / np.linalg.norm([slope_x, slope_y, 1.0])
    normals = np.broadcast_to(normal.astype(np.float32), (SIZE, SIZE, 3)).copy()
    inside = np.zeros((SIZE, SIZE), bool)
    inside[20:-20, 20:-20] = True
    result = face3d.refine(coarse, normals, inside)
    height_px = (face3d.NOMINAL_DISTANCE_M - result.depth_m) * coarse.px_per_m
    rows, cols = np.nonzero(result.region)
    design = np.stack([cols, -rows, np.ones_like(rows)], 1).astype(np.float64)
    (fit_x, fit_y, _), *_ = np.linalg.lstsq(design, height_px[rows, cols].astype(np.float64), rcond=None)
    coarse_x, coarse_y = 0.3, -0.2
    assert abs(fit_x - slope_x) < 0.2 * abs(coarse_x - slope_x) and abs(fit_y - slope_y) < 0.2 * abs(coarse_y - slope_y)
    coarse_normal = np.array([-coarse_x, -coarse_y, 1.0]) / np.linalg.norm([coarse_x, coarse_y, 1.0])
    apart = np.degrees(np.arccos(coarse_normal @ normal))
    assert angular_error_deg(result.normals[result.region], normals[result.region]).mean() < 0.2 * apart
    offset = np.nanmean(result.depth_m[result.region] - coarse.depth_m[result.region])
    assert abs(offset) < 1e-4  # the position term's least squares: the mean distance is the coarse plane's


def test_warm_start_converges_to_the_same_surface():
    points, triangles = sphere_cap(9)
    coarse = face3d.coarse_depth_from_points(points, triangles, SIZE, PX_PER_CM * 100, origin_z_px=0.0)
    _, normals, inside = exact_sphere()
    cold = face3d.refine(coarse, normals, inside)
    warm = face3d.refine(coarse, normals, inside, init=cold.depth_m, rotation=cold.bias_rotation)
    assert warm.iterations <= 3
    ok = cold.region & warm.region
    assert np.abs(warm.depth_m - cold.depth_m)[ok].max() < 2e-4


@pytest.fixture(scope="module")
def ict_face() -> ict_fit.IctFace:
    return ict_fit.load_ict_face()


@pytest.fixture(scope="module")
def fitted(ict_face: ict_fit.IctFace) -> ict_fit.IctFit:
    """An ICT face posed in a 128² crop, fitted back from its own landmark vertices."""
    rng = np.random.default_rng(3)
    identity = (rng.standard_normal(len(ict_face.identity)) * 0.5).astype(np.float32)
    expression = np.zeros(len(ict_face.expression), np.float32)
    angle = np.radians(15.0)
    rot = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    vertices = 2.5 * ict_face.shape(identity, expression) @ rot.T + np.array([SIZE / 2, -SIZE / 2 - 8, 0.0])
    return ict_fit.fit_landmarks(ict_face.landmark_points(vertices), ict_face)


def test_coarse_depth_of_a_fit_is_metric(fitted: ict_fit.IctFit, ict_face: ict_fit.IctFace):
    coarse = face3d.coarse_depth(fitted, SIZE, ict_face)
    assert coarse.px_per_m == pytest.approx(fitted.scale * 100)
    assert 0.1 < coarse.coverage.mean() < 0.9
    relief_cm = (np.nanmax(coarse.depth_m) - np.nanmin(coarse.depth_m)) * 100
    assert 5.0 < relief_cm < 20.0  # nose tip to the face's rim: a head's centimetres, whatever the crop scale
    points = fitted.crop_points(ict_face)
    z_front = points[:, 2].max()
    assert (face3d.NOMINAL_DISTANCE_M - np.nanmin(coarse.depth_m)) * coarse.px_per_m == pytest.approx(
        z_front - fitted.translation[2], abs=0.5)


def test_face_3d_meshes_and_ply_round_trip(fitted: ict_fit.IctFit, ict_face: ict_fit.IctFace, tmp_path):
    coarse = face3d.coarse_depth(fitted, SIZE, ict_face)
    from facenormals.depth import normals_from_depth

    normals, _ = normals_from_depth(coarse.depth_m, coarse.intrinsics)
    result = face3d.face_3d(fitted, normals, coarse.coverage, face=ict_face)
    for mesh in (result.mesh, result.coarse_mesh):
        assert len(mesh.faces) > 1000
        np.testing.assert_allclose(np.linalg.norm(mesh.normals, axis=1), 1.0, atol=1e-4)
        tri = mesh.vertices[mesh.faces]
        face_normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        agree = (face_normals * mesh.normals[mesh.faces[:, 0]]).sum(1) > 0
        assert agree.mean() > 0.95  # wound counter-clockwise from outside, like the vertex normals
        assert np.abs(mesh.vertices).max() < 0.3  # metres, around the crop centre
    # the refined surface sits on the coarse one in the same frame (within millimetres)
    from scipy.spatial import cKDTree

    distance, _ = cKDTree(result.coarse_mesh.vertices).query(result.mesh.vertices[::97])
    assert np.median(distance) < 0.002
    path = tmp_path / "face.ply"
    result.mesh.save_ply(path)
    loaded = trimesh.load(path, process=False)
    assert len(loaded.vertices) == len(result.mesh.vertices) and len(loaded.faces) == len(result.mesh.faces)
    np.testing.assert_allclose(loaded.vertices, result.mesh.vertices, atol=1e-6)
    as_trimesh = result.mesh.to_trimesh()
    np.testing.assert_allclose(np.linalg.norm(as_trimesh.vertex_normals, axis=1), 1.0, atol=1e-4)
    # the vertex normals are the refinement's (the evidence's): pixel by pixel, in the mesh's vertex order
    valid = result.refined.region & np.isfinite(result.refined.depth_m)
    given = np.linalg.norm(result.refined.normals[valid], axis=-1) > 0.5
    assert given.mean() > 0.99  # the rest (no tied neighbour in a direction): the depth's own normals
    np.testing.assert_allclose(loaded.vertex_normals[given], result.refined.normals[valid][given], atol=1e-3)


def test_config_is_the_sensor_solver_with_face_knobs():
    cfg = face3d.FACE_FUSION
    assert isinstance(cfg, FusionConfig) and cfg.outlier_m == 0.0 and cfg.presmooth_px == 0.0
    assert FusionConfig().outlier_m > 0  # the sensor defaults are untouched


# -- calibrated intrinsics: the head's distance from the focal length, meshes in the camera frame ---------------

FOCAL_PX = 300.0  # a crop pinhole that images 5 px/cm (PX_PER_CM) at 0.6 m


def crop_camera() -> Intrinsics:
    return Intrinsics(SIZE, SIZE, FOCAL_PX, FOCAL_PX, (SIZE - 1) / 2, (SIZE - 1) / 2)


def test_calibrated_sphere_is_at_its_distance_up_to_weak_perspective():
    """The sphere seen at 5 px/cm through a 300 px pinhole is 0.6 m away; its relief is the fit's (weak perspective),
    so against the ray-cast perspective sphere only the weak-perspective error is left (a few mm mid-face)."""
    points, triangles = sphere_cap(81)
    coarse = face3d.coarse_depth_from_points(points, triangles, SIZE, PX_PER_CM * 100, origin_z_px=0.0,
                                             intrinsics=crop_camera())
    assert coarse.calibrated and coarse.distance_m == pytest.approx(0.6)
    assert coarse.intrinsics == crop_camera()
    z_cm, _, inside = exact_sphere()
    assert np.abs((0.6 - coarse.depth_m) * 100 - z_cm)[inside].max() < 0.1  # relief: exact up to the facets
    truth, normals, hit = sphere_depth(crop_camera(), 0.6, RADIUS_CM / 100)
    rows, cols = np.mgrid[:SIZE, :SIZE]
    central = inside & hit & (np.hypot(rows - 63.5, cols - 63.5) < 0.5 * RADIUS_CM * PX_PER_CM)
    assert np.abs(coarse.depth_m - truth)[central].max() < 0.005
    refined = face3d.refine(coarse, normals, inside & hit)
    assert refined.iterations < face3d.FACE_FUSION.max_iterations  # the tolerance scaled for 0.6 m converges
    error = (refined.depth_m - truth)[central]
    offset = np.nanmedian(error)
    # the exact normals give the shape (sub-millimetre); the low λ anchors only the distance, to the weak-perspective
    # coarse depth's mean over the whole sphere (its rim is centimetres off): about 1 % of the 0.6 m
    assert np.nanmedian(np.abs(error - offset)) < 0.0005 and abs(offset) < 0.01
    ok = central & refined.region
    assert angular_error_deg(refined.normals[ok], normals[ok]).mean() < 1.0


def test_a_wrongly_sized_camera_is_refused():
    points, triangles = sphere_cap(9)
    frame_camera = Intrinsics(640, 480, FOCAL_PX, FOCAL_PX, 319.5, 239.5)
    with pytest.raises(ValueError, match="crop_intrinsics"):
        face3d.coarse_depth_from_points(points, triangles, SIZE, 500.0, intrinsics=frame_camera)


def test_calibrated_meshes_are_in_the_camera_frame(fitted: ict_fit.IctFit, ict_face: ict_fit.IctFace):
    """Off-centre principal point: the coarse mesh's vertices project back onto the fit's crop points, the refined
    surface lies on the coarse one, both at the distance f / (crop px per metre)."""
    camera = Intrinsics(SIZE, SIZE, 900.0, 900.0, 20.0, 90.0)
    coarse = face3d.coarse_depth(fitted, SIZE, ict_face, intrinsics=camera)
    distance = 900.0 / (fitted.scale * 100)
    assert coarse.distance_m == pytest.approx(distance)
    from facenormals.depth import normals_from_depth

    normals, _ = normals_from_depth(coarse.depth_m, coarse.intrinsics)
    result = face3d.face_3d(fitted, normals, coarse.coverage, face=ict_face, intrinsics=camera)
    vertices = result.coarse_mesh.vertices.astype(np.float64)
    depth = -vertices[:, 2]
    projected = np.stack([camera.fx * vertices[:, 0] / depth + camera.cx,
                          camera.fy * vertices[:, 1] / depth - camera.cy], axis=1)  # crop y is up: -row
    np.testing.assert_allclose(projected, fitted.crop_points(ict_face)[:, :2], atol=1e-3)
    head = ict_face.landmark_vertices
    assert np.median(depth[head]) == pytest.approx(distance, rel=0.05)
    from scipy.spatial import cKDTree

    gap, _ = cKDTree(result.coarse_mesh.vertices).query(result.mesh.vertices[::97])
    assert np.median(gap) < 0.002 and (result.mesh.vertices[:, 2] < 0).all()
