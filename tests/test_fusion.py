"""Position + normal fusion (Nehab et al. 2005) on analytic surfaces with known normals."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from surfaces import sphere_depth

from facenormals.camera import Intrinsics
from facenormals.conventions import angular_error_deg
from facenormals.depth import DepthError, normals_from_depth, pixel_rays
from facenormals.fusion import (
    FusionConfig,
    cholmod_available,
    crop_depth,
    crop_intrinsics,
    fuse,
    prepare,
    rotate_between,
    rotate_by_vector,
    solve_cg,
    solve_direct,
    warp_crop,
)

SIZE = 96
INTR = Intrinsics(SIZE, SIZE, 240.0, 240.0, (SIZE - 1) / 2, (SIZE - 1) / 2)


def sphere(intr: Intrinsics = INTR, centre_z: float = 0.6, radius: float = 0.1):
    """Exact perspective depth and normals of a sphere, and a mask kept 3 px off its grazing rim."""
    depth, normals, hit = sphere_depth(intr, centre_z, radius)
    u, v = np.meshgrid(np.arange(intr.width) - intr.cx, np.arange(intr.height) - intr.cy)
    inner = np.hypot(u, v) < np.hypot(u, v)[hit].max() - 3
    return depth, normals, hit & inner


def plane(intr: Intrinsics = INTR):
    normal = np.array([0.25, 0.2, 0.95])
    normal /= np.linalg.norm(normal)
    depth = (-0.6 * normal[2] / (pixel_rays(intr).astype(np.float64) @ normal)).astype(np.float32)
    return depth, np.broadcast_to(normal, (intr.height, intr.width, 3)).astype(np.float32).copy(), np.ones(depth.shape, bool)


# Exact normals deserve more trust than the defaults give (they suit the shipped network's ~15° normals): every
# scale from the normals (no multi-scale split), a small λ.
EXACT_NORMALS = FusionConfig(solver="cg", position_weight=0.003, crossover_px=0.0)


def noisy(depth: np.ndarray, sigma_m: float, seed: int) -> np.ndarray:
    return depth + np.random.default_rng(seed).normal(0, sigma_m, depth.shape).astype(np.float32)


def rmse_mm(depth: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    return float(np.sqrt(np.nanmean((depth - truth)[mask] ** 2)) * 1000)


@pytest.mark.parametrize("surface", [plane, sphere])
def test_fusion_recovers_known_normals_and_beats_raw_depth(surface):
    depth, normals, mask = surface()
    measured = noisy(depth, 0.002, seed=1)
    raw_normals, _ = normals_from_depth(measured, INTR)
    result = fuse(measured, normals, mask, INTR, EXACT_NORMALS)
    raw_err = angular_error_deg(raw_normals[mask], normals[mask]).mean()
    fused_err = angular_error_deg(result.normals[mask], normals[mask]).mean()
    assert fused_err < 1.0 < raw_err / 10
    assert rmse_mm(result.depth_m, depth, mask) < 0.5 * rmse_mm(measured, depth, mask)
    assert np.isnan(result.depth_m[~mask]).all()


def test_bias_correction_removes_a_tilted_network():
    depth, normals, mask = sphere()
    measured = noisy(depth, 0.001, seed=2)
    angle = np.radians(8.0)  # every predicted normal rotated 8° about the vertical axis
    rot = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]], np.float32)
    tilted = normals @ rot.T
    # low λ and no multi-scale split: the (otherwise exact) normals shape the whole sphere, only their tilt is removed
    trust_normals = FusionConfig(position_weight=0.001, solver="cg", crossover_px=0.0)
    plain = fuse(measured, tilted, mask, INTR, dataclasses.replace(trust_normals, correct_bias=False))
    corrected = fuse(measured, tilted, mask, INTR, trust_normals)
    err = angular_error_deg(corrected.normals[mask], normals[mask]).mean()
    assert err < 1.0 < 3.0 < angular_error_deg(plain.normals[mask], normals[mask]).mean()
    assert rmse_mm(corrected.depth_m, depth, mask) <= rmse_mm(measured, depth, mask)


def test_default_weight_helps_with_network_quality_normals():
    """Normals off by ~15° (a smooth rotation field plus pixel noise, like the shipped model's): the default λ
    still gives depth no worse than the sensor's and normals far better than the raw depth's."""
    depth, normals, mask = sphere()
    measured = noisy(depth, 0.002, seed=7)
    rng = np.random.default_rng(8)
    field = np.stack([np.sin(np.linspace(0, 3, SIZE))[None, :] * np.ones((SIZE, 1)),
                      np.cos(np.linspace(0, 2, SIZE))[:, None] * np.ones((1, SIZE)), np.zeros((SIZE, SIZE))], -1)
    omega = np.radians(12.0) * field + np.radians(6.0) * rng.normal(size=(SIZE, SIZE, 3))
    network = rotate_by_vector(normals, omega.astype(np.float32))
    network_err = angular_error_deg(network[mask], normals[mask]).mean()
    raw_normals, _ = normals_from_depth(measured, INTR)
    result = fuse(measured, network, mask, INTR, FusionConfig(solver="cg"))
    assert 10.0 < network_err < 20.0
    assert rmse_mm(result.depth_m, depth, mask) <= rmse_mm(measured, depth, mask)
    fused_err = angular_error_deg(result.normals[mask], normals[mask]).mean()
    assert fused_err < network_err < angular_error_deg(raw_normals[mask], normals[mask]).mean()


def test_holes_are_filled_from_the_normals():
    depth, normals, mask = sphere()
    measured = noisy(depth, 0.001, seed=3)
    measured[30:50, 30:50] = np.nan
    result = fuse(measured, normals, mask, INTR, EXACT_NORMALS)
    hole = np.zeros_like(mask)
    hole[30:50, 30:50] = True
    assert np.isfinite(result.depth_m[hole & mask]).all()
    assert rmse_mm(result.depth_m, depth, hole & mask) < 1.0


def test_solvers_agree():
    depth, normals, mask = sphere()
    crop = prepare(noisy(depth, 0.002, seed=4), normals, mask, INTR)
    (cg,), _ = solve_cg([crop.problem], [crop.init], tolerance=1e-7, max_iterations=2000)
    lu = solve_direct(crop.problem, "splu")
    assert np.abs(cg - lu)[mask].max() < 2e-5  # metres
    if cholmod_available():
        assert np.abs(solve_direct(crop.problem, "cholmod") - lu)[mask].max() < 1e-6


def test_warm_start_converges_in_fewer_iterations():
    depth, normals, mask = sphere()
    config = FusionConfig(solver="cg", tolerance=1e-6, levels=1)  # same CG, started from the raw depth or last frame
    first = fuse(noisy(depth, 0.002, seed=5), normals, mask, INTR, config)
    second_depth = noisy(depth, 0.002, seed=6)  # the next frame: same face, new sensor noise
    # as the realtime view does between refreshes: the first frame's rotation field reused, so both solve one system
    cold = fuse(second_depth, normals, mask, INTR, config, rotation=first.bias_rotation)
    warm = fuse(second_depth, normals, mask, INTR, config, init=first.depth_m, rotation=first.bias_rotation)
    assert warm.iterations < cold.iterations
    assert np.abs(warm.depth_m - cold.depth_m)[mask].max() < 1e-4
    # the rotation measured on the first frame, reused: it carries the first frame's depth noise instead of this
    # one's, so it differs, but corrects as well
    fresh = fuse(second_depth, normals, mask, INTR, config)
    assert first.bias_rotation is not None and first.bias_rotation.shape == (SIZE, SIZE, 3)
    reused_err, fresh_err = (angular_error_deg(r.corrected_normals[mask], normals[mask]).mean() for r in (warm, fresh))
    assert reused_err < 1.2 * fresh_err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batched_cg_on_gpu_matches_cpu():
    depth, normals, mask = sphere()
    crops = [prepare(noisy(depth, 0.002, seed=s), normals, mask, INTR) for s in (7, 8)]
    gpu, _ = solve_cg([c.problem for c in crops], [c.init for c in crops], device="cuda", tolerance=1e-6)
    cpu, _ = solve_cg([c.problem for c in crops], [c.init for c in crops], device="cpu", tolerance=1e-6)
    for a, b in zip(gpu, cpu, strict=True):
        assert np.abs(a - b)[mask].max() < 1e-5


def test_unusable_depth_raises_clear_errors():
    depth, normals, mask = sphere()
    with pytest.raises(DepthError, match="too little valid depth"):
        fuse(np.zeros_like(depth), normals, mask, INTR)
    with pytest.raises(DepthError, match="too little valid depth"):
        fuse(np.full_like(depth, np.nan), normals, mask, INTR)
    with pytest.raises(DepthError, match="crop shapes differ"):
        fuse(depth[:64, :64], normals, mask, INTR)
    with pytest.raises(DepthError, match="intrinsics"):
        fuse(depth, normals, mask, Intrinsics(64, 64, 100.0, 100.0, 32.0, 32.0))
    with pytest.raises(DepthError, match="empty face region"):
        fuse(depth, np.zeros_like(normals), mask, INTR)


def test_crop_geometry_is_a_pinhole_camera():
    frame = Intrinsics(320, 240, 300.0, 300.0, 160.0, 120.0)
    matrix = np.array([[1.6, 0.0, -150.0], [0.0, 1.6, -60.0]])
    crop = crop_intrinsics(frame, matrix, 128)
    point = np.array([0.03, -0.02, 0.5])  # OpenCV frame: metres, y down, z forward
    u, v = frame.fx * point[0] / point[2] + frame.cx, frame.fy * point[1] / point[2] + frame.cy
    uc, vc = matrix @ [u, v, 1.0]
    assert uc == pytest.approx(crop.fx * point[0] / point[2] + crop.cx)
    assert vc == pytest.approx(crop.fy * point[1] / point[2] + crop.cy)
    depth = np.full((240, 320), 0.5, np.float32)
    depth[:, :100] = np.nan  # frame column 100 is crop column 10
    cropped = crop_depth(depth, matrix, 128)
    assert np.isnan(cropped[:, :9]).all() and np.allclose(cropped[:, 11:], 0.5)
    back = warp_crop(cropped, matrix, matrix)
    assert np.allclose(back[:, 11:], 0.5)


def test_rotation_between_vectors():
    a = np.array([[0.0, 0.0, 1.0]])
    b = np.array([[0.0, np.sin(0.3), np.cos(0.3)]])
    assert np.allclose(rotate_between(a, a, b), b, atol=1e-6)
    assert np.allclose(rotate_between(np.array([[1.0, 0, 0]]), a, b), [[1.0, 0, 0]], atol=1e-6)


# ---------------------------------------------------------------------------------------------- outputs


def sphere_frame(noise_m: float = 0.002):
    """A 160×120 RGB-D frame of a sphere (uint16 mm depth with sensor noise) and its true normals."""
    from facenormals.frame import Frame

    intr = Intrinsics(160, 120, 200.0, 200.0, 79.5, 59.5)
    depth, normals, mask = sphere(intr, centre_z=0.5, radius=0.08)
    noisy_mm = np.nan_to_num(noisy(depth, noise_m, seed=9) * 1000).round().astype(np.uint16)
    rgb = np.full((120, 160, 3), 128, np.uint8)
    return Frame(0, 0, rgb, noisy_mm, 0.001, intr), normals, mask


def test_rgbd_views_refined_panel_is_closer_to_the_truth():
    from facenormals.fusion_stage import FusionStage, frame_depth
    from facenormals.geometry import box_from_mask, crop_matrix
    from facenormals.realtime.views_rgbd import render_rgbd_views
    from facenormals.shading import lambert

    frame, normals, mask = sphere_frame()
    matrix = crop_matrix(box_from_mask(mask), 96)
    import cv2

    crop_normals = cv2.warpAffine(normals, matrix, (96, 96), flags=cv2.INTER_LINEAR)
    crop_normals /= np.maximum(np.linalg.norm(crop_normals, axis=2, keepdims=True), 1e-6)
    crop_mask = cv2.warpAffine(mask.astype(np.uint8), matrix, (96, 96), flags=cv2.INTER_NEAREST).astype(bool)
    crop_mask = cv2.erode(crop_mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    stage = FusionStage()
    faces = [(7, matrix, crop_normals, crop_mask)]  # track 7

    def draw() -> np.ndarray:
        depth, problem = frame_depth(frame)
        assert problem is None
        return render_rgbd_views(frame, stage.fuse(depth, frame.intrinsics, faces), [matrix], [crop_normals],
                                 [crop_mask])

    image = draw()
    assert image.shape == (120, 480, 3) and image.dtype == np.uint8
    assert set(stage.tracks) == {7}  # warm start kept for the next frame, keyed by the track id
    light = np.array([-0.35, 0.35, 0.87])
    truth = np.clip(lambert(normals, light) * 255, 0, 255)
    inner = cv2.erode(mask.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    inner[:70, :] = False  # below the text labels
    raw, mapped, refined = (image[:, i * 160:(i + 1) * 160, 0].astype(float) for i in range(3))
    err = {name: np.abs(panel - truth)[inner].mean() for name, panel in (("raw", raw), ("mapped", mapped), ("refined", refined))}
    assert err["refined"] < err["raw"] / 3 and err["mapped"] < err["raw"] / 3
    again = draw()  # warm-started from track 7
    assert np.abs(again[:, 320:, 0].astype(float) - image[:, 320:, 0])[inner].mean() < 2.0


def test_rgbd_views_fallbacks_without_depth():
    from facenormals.frame import Frame
    from facenormals.fusion_stage import FrameFusion, FusionStage, frame_depth
    from facenormals.realtime.views_rgbd import render_rgbd_views

    frame, _, _ = sphere_frame()
    no_depth = Frame(1, 0, frame.rgb)
    depth, problem = frame_depth(no_depth)
    assert depth is None and problem.startswith("no depth")
    assert render_rgbd_views(no_depth, FrameFusion(None, None, problem=problem), [], [], []).shape == (120, 480, 3)
    assert render_rgbd_views(no_depth, None, [], [], []).shape == (120, 480, 3)  # no stage ran
    zeros = Frame(2, 0, frame.rgb, np.zeros_like(frame.depth), 0.001, frame.intrinsics)
    matrix = np.array([[0.6, 0.0, -0.0], [0.0, 0.6, 0.0]])
    normals = np.zeros((96, 96, 3), np.float32)
    normals[..., 2] = 1
    depth, problem = frame_depth(zeros)
    faces = [(0, matrix, normals, np.ones((96, 96), bool))]
    fused = FusionStage().fuse(depth, zeros.intrinsics, faces)  # all-zero depth: a note, no crash
    assert fused.faces == [None] and 0 in fused.failed
    image = render_rgbd_views(zeros, fused, [matrix], [normals], [np.ones((96, 96), bool)])
    assert image.shape == (120, 480, 3)


def test_fusion_view_is_registered():
    from facenormals.realtime.render import get_view
    from facenormals.realtime.views_rgbd import render_fusion

    assert get_view("fusion") is render_fusion


def test_ply_export_raw_and_refined(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    from facenormals.ply import export_depth, export_raw_and_refined

    depth, normals, mask = sphere()
    count = export_depth(tmp_path / "raw.ply", noisy(depth, 0.001, seed=10), INTR, mask=mask)
    mesh = trimesh.load(tmp_path / "raw.ply", process=False)
    assert len(mesh.vertices) == count == mask.sum()
    assert len(mesh.faces) > 1.8 * count  # ~2 triangles per pixel
    assert (mesh.vertices[:, 2] < 0).all()  # in front of the camera: -z
    refined = fuse(noisy(depth, 0.001, seed=10), normals, mask, INTR).depth_m
    export_depth(tmp_path / "refined.ply", refined, INTR, mesh=False)
    points = trimesh.load(tmp_path / "refined.ply", process=False)
    assert len(points.vertices) == np.isfinite(refined).sum()
    raw_path, refined_path = export_raw_and_refined(tmp_path, noisy(depth, 0.001, seed=10), refined, INTR, mask)
    raw_mesh, refined_mesh = (trimesh.load(p, process=False) for p in (raw_path, refined_path))
    # the refined surface is smoother: its mesh normals agree better with the true sphere's
    truth = (refined_mesh.vertices - [0, 0, -0.6]) / 0.1
    smooth = np.einsum("ij,ij->i", refined_mesh.vertex_normals, truth).mean()
    truth_raw = (raw_mesh.vertices - [0, 0, -0.6]) / 0.1
    assert smooth > np.einsum("ij,ij->i", raw_mesh.vertex_normals, truth_raw).mean()


def test_depth_mesh_gives_every_vertex_a_unit_normal():
    """A pixel whose depth neighbours are all missing cannot be differenced: it takes its triangles' normal, or faces
    the camera when it is in none, never a zero normal (a mesh viewer would draw it black)."""
    from facenormals.ply import depth_mesh

    depth, _, mask = sphere()
    depth = depth.copy()
    holes = np.zeros_like(mask)
    holes[::3, ::3] = True  # most pixels lose a neighbour; isolated valid pixels remain between the holes
    holed = np.where(holes & mask, depth, np.nan)
    given = np.zeros((*depth.shape, 3), np.float32)  # a fusion result with no normal anywhere
    vertices, normals, faces = depth_mesh(holed, INTR, mask=mask, normals=given)
    assert len(vertices) == int((holes & mask).sum()) and len(faces) == 0
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)
    toward_camera = -vertices / np.linalg.norm(vertices, axis=1, keepdims=True)
    np.testing.assert_allclose(normals, toward_camera, atol=1e-5)
    # where a vertex has triangles but no differenced normal, it gets theirs: facing the camera on the sphere's cap
    cap = np.where(mask, depth, np.nan)
    _, normals_cap, faces_cap = depth_mesh(cap, INTR, mask=mask, normals=given)
    assert len(faces_cap) > 0
    np.testing.assert_allclose(np.linalg.norm(normals_cap, axis=1), 1.0, atol=1e-5)
    assert (normals_cap[:, 2] > 0).all()


# ---------------------------------------------------------------------------------------------- against depth-only filters


def bumped_sphere(seed: int = 11):
    """A sphere with millimetre bumps (detail a Gaussian on the depth blurs away); normals of the clean depth."""
    depth, _, mask = sphere()
    rng = np.random.default_rng(seed)
    bumps = np.zeros_like(depth)
    v, u = np.mgrid[:SIZE, :SIZE]
    for cu, cv in rng.uniform(25, 70, (12, 2)):
        bumps += 0.0015 * np.exp(-((u - cu) ** 2 + (v - cv) ** 2) / (2 * 2.5**2))
    clean = (depth - bumps).astype(np.float32)
    normals, ok = normals_from_depth(clean, INTR)
    return clean, normals, mask & ok


def sensor_like(clean: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """σ_z of a D435 at 0.6 m, 2 % flying pixels (2–5 cm off), 3 % holes; returns (raw, flying)."""
    from facenormals.depth import NOISE_MODELS

    sigma = float(NOISE_MODELS["realsense"].sigma_m(0.6))
    raw = clean + rng.normal(0, sigma, clean.shape).astype(np.float32)
    flying = rng.random(clean.shape) < 0.02
    raw[flying] += rng.uniform(0.02, 0.05, flying.sum()).astype(np.float32)
    raw[rng.random(clean.shape) < 0.03] = np.nan
    return raw, flying


def network_like(truth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A smooth 6° rotation field (medium-frequency shape error) and 3° pixel noise."""
    v, u = np.mgrid[:SIZE, :SIZE] / SIZE
    field = np.stack([np.sin(3 * u), np.cos(2 * v), 0 * u], -1) * np.radians(6.0)
    return rotate_by_vector(truth, (field + np.radians(3.0) * rng.normal(size=field.shape)).astype(np.float32))


def depth_only_filters(raw: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(normals, valid) of the filters of benchmarks/fusion.py; central differences but for the plane fit."""
    from facenormals.depth import drop_outliers, gaussian_filter_depth, median_filter_depth, plane_fit_depth

    kept = drop_outliers(raw, 0.01)
    out = {f"Gaussian σ {s:g}": normals_from_depth(gaussian_filter_depth(kept, s), INTR) for s in (1.0, 1.5, 2.5, 4.0)}
    out["median 5×5"] = normals_from_depth(median_filter_depth(raw, 5), INTR)
    _, normals, ok = plane_fit_depth(kept, INTR, 5)
    out["plane fit 5×5"] = (normals, ok)
    return out


# Fused error / the filter's, per surface: on the bumped sphere the network's detail wins against every filter; a bare
# sphere or plane has no detail to win back, so the blur that fits it best (Gaussian σ 2.5 / 4 px) stays ahead by the
# network's per-pixel noise that survives below the split (not beaten yet, issue 18) — every other filter is.
BEST_BLUR_SLACK = {"bumped_sphere": 1.0, "sphere": 1.2, "plane": 1.05}


@pytest.mark.parametrize("surface", [plane, sphere, bumped_sphere])
def test_fused_normals_beat_depth_only_filters(surface):
    """Sensor-like depth and network-like normals: the fused depth's normals (central differences) beat the
    depth-only filters on the pixels each covers, cover the whole mask, and the depth beats the raw depth's."""
    clean, truth, mask = surface()
    rng = np.random.default_rng(12)
    raw, flying = sensor_like(clean, rng)
    network = network_like(truth, rng)
    fused = fuse(raw, network, mask, INTR, FusionConfig(solver="cg"))
    assert np.isfinite(fused.depth_m[mask]).all()  # coverage: the whole mask, holes and flying pixels included
    errors = {}
    for name, (normals, ok) in depth_only_filters(raw).items():
        seen = mask & ok
        assert seen.sum() < mask.sum()
        errors[name] = tuple(angular_error_deg(n[seen], truth[seen]).mean() for n in (fused.normals, normals))
    best = min(errors, key=lambda name: errors[name][1])
    for name, (fused_err, filter_err) in errors.items():
        assert fused_err < filter_err * (BEST_BLUR_SLACK[surface.__name__] if name == best else 1.0), (name, errors)
    assert angular_error_deg(fused.normals[mask], truth[mask]).mean() < angular_error_deg(network[mask], truth[mask]).mean()
    good = mask & np.isfinite(raw) & ~flying
    assert rmse_mm(fused.depth_m, clean, good) < rmse_mm(raw, clean, good)


def test_pure_noise_normals_leave_the_depth_in_charge():
    """Normals that are pure noise: the detail weight notices (they are far rougher than any face's detail), so the
    result follows the depth — far better than the raw depth, near the best Gaussian — instead of the noise."""
    clean, truth, mask = bumped_sphere()
    rng = np.random.default_rng(3)
    raw, flying = sensor_like(clean, rng)
    noise = rng.normal(size=truth.shape).astype(np.float32)
    noise[..., 2] = np.abs(noise[..., 2]) + 0.3  # facing the camera, else random
    noise /= np.linalg.norm(noise, axis=2, keepdims=True)
    fused = fuse(raw, noise, mask, INTR, FusionConfig(solver="cg"))
    blind = fuse(raw, noise, mask, INTR, FusionConfig(solver="cg", detail_deg=0.0))
    raw_normals, raw_ok = normals_from_depth(raw, INTR)
    seen = mask & raw_ok
    fused_err, blind_err, raw_err = (angular_error_deg(n[seen], truth[seen]).mean()
                                     for n in (fused.normals, blind.normals, raw_normals))
    assert fused_err < 0.25 * blind_err and fused_err < 0.25 * raw_err
    filters = depth_only_filters(raw)
    best = min(angular_error_deg(n[mask & ok], truth[mask & ok]).mean() for n, ok in filters.values())
    assert fused_err < 1.5 * best
    good = mask & np.isfinite(raw) & ~flying
    assert rmse_mm(fused.depth_m, clean, good) < rmse_mm(raw, clean, good)


def test_multiscale_split_removes_medium_frequency_shape_errors():
    """A network whose shape is wrong at a ~30 px wavelength (~9°): the low-frequency bias correction alone
    (σ 32 px) cannot see it and it leaks into the surface; the split at 2 sensor pixels takes that scale from the
    depth and keeps the network's fine detail."""
    clean, truth, mask = bumped_sphere()
    rng = np.random.default_rng(5)
    raw, _ = sensor_like(clean, rng)
    v, u = np.mgrid[:SIZE, :SIZE].astype(np.float32)
    wrong_shape = clean + 0.002 * np.sin(u / 5.0) * np.cos(v / 5.0)  # ±2 mm bumps the face does not have (~9°)
    network, _ = normals_from_depth(wrong_shape.astype(np.float32), INTR)
    split = fuse(raw, network, mask, INTR, FusionConfig(solver="cg"))
    bias_only = fuse(raw, network, mask, INTR, FusionConfig(solver="cg", crossover_px=0.0))
    split_err, bias_err = (angular_error_deg(r.normals[mask], truth[mask]).mean() for r in (split, bias_only))
    assert split_err < 0.7 * bias_err


def test_crossover_follows_the_sensor_noise():
    """With a noise model the split moves to coarser scales where the sensor is noisier: farther, or RealSense."""
    from facenormals.depth import NOISE_MODELS
    from facenormals.fusion import crossover_sigma

    near = np.full((8, 8), 0.5, np.float32)
    realsense = FusionConfig(noise=NOISE_MODELS["realsense"], crossover_deg=5.0)
    kinect = dataclasses.replace(realsense, noise=NOISE_MODELS["kinect"])
    assert crossover_sigma(near * 3, INTR, realsense) > crossover_sigma(near, INTR, realsense)
    assert crossover_sigma(near, INTR, kinect) < crossover_sigma(near, INTR, realsense)
    assert crossover_sigma(near, INTR, FusionConfig(depth_pixel_px=2.0)) == 2 * FusionConfig().crossover_px


def test_noise_model_weights_trust_a_precise_sensor_more():
    from facenormals.depth import NOISE_MODELS
    from facenormals.fusion import position_weights

    depth = np.full((8, 8), 0.6, np.float32)
    realsense = position_weights(depth, INTR, FusionConfig(noise=NOISE_MODELS["realsense"]))
    kinect = position_weights(depth, INTR, FusionConfig(noise=NOISE_MODELS["kinect"]))
    far = position_weights(depth * 2, INTR, FusionConfig(noise=NOISE_MODELS["realsense"]))
    assert (kinect > realsense).all() and (far < realsense).all()
    assert position_weights(depth, INTR, FusionConfig()) == FusionConfig().position_weight


def test_sequence_mode_converges_on_a_still_face():
    """Sequence mode on a still bumped sphere (new sensor noise every frame, the same network normals): each frame
    averages the previous measurement history in, so the refined depth settles (frame-to-frame change shrinks) and
    its normals end better than any single frame's; without history (weight 0) nothing improves."""
    clean, truth, mask = bumped_sphere()
    rng = np.random.default_rng(21)
    network = network_like(truth, rng)
    frames = [sensor_like(clean, rng)[0] for _ in range(8)]

    def run(config: FusionConfig) -> tuple[list[float], list[float]]:
        errors, changes, result = [], [], None
        for raw in frames:
            previous = None if result is None else result.measurement
            new = fuse(raw, network, mask, INTR, config, init=None if result is None else result.depth_m,
                       previous=previous)
            if result is not None:
                changes.append(float(np.abs(new.depth_m - result.depth_m)[mask].mean()))
            errors.append(float(angular_error_deg(new.normals[mask], truth[mask]).mean()))
            result = new
        return errors, changes

    errors, changes = run(FusionConfig(solver="cg"))
    single, _ = run(FusionConfig(solver="cg", history_weight=0.0))
    assert errors[-1] < 0.9 * np.mean(single) and errors[-1] < min(single)
    # settling: later frames move the surface less (an average of ~3 frames: ≈ √(1.2/2) of the first step)
    assert np.mean(changes[-3:]) < 0.85 * changes[0]
    assert np.std(single[1:]) > 0 and abs(np.mean(single[-3:]) - single[0]) < 0.1 * single[0]


def test_fusion_stage_carries_each_tracks_measurement_history():
    """The realtime route (the stage, keyed by track id) runs sequence mode: a still face seen in 6 frames of new
    sensor noise ends better than one frame alone, and a track it has not seen starts without history."""
    from facenormals.fusion_stage import FusionStage

    clean, truth, mask = bumped_sphere()
    rng = np.random.default_rng(5)
    network = network_like(truth, rng)
    frames = [sensor_like(clean, rng)[0] for _ in range(6)]
    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])

    def last_error(config: FusionConfig) -> float:
        stage = FusionStage(config, device="cpu")
        for raw in frames:
            fused = stage.fuse(raw, INTR, [(3, identity, network, mask)]).faces[0]
        assert set(stage.tracks) == {3} and stage.tracks[3].measurement is not None
        return float(angular_error_deg(fused.normals[mask], truth[mask]).mean())

    with_history = last_error(FusionConfig(solver="cg"))
    without = last_error(FusionConfig(solver="cg", history_weight=0.0))
    assert with_history < 0.95 * without


def test_the_batched_torch_solver_agrees_with_the_cpu_solver():
    """The CUDA route's batched CG (facenormals.fusion_torch), run on the CPU here, reaches the numba solver's
    solution on the same crops."""
    from facenormals.fusion import stencil_diagonal
    from facenormals.fusion_torch import solve_cg_batched

    depth, normals, mask = sphere()
    crops = [prepare(noisy(depth, 0.002, seed=s), normals, mask, INTR) for s in (7, 8)]
    problems = [c.problem for c in crops]
    batched, _ = solve_cg_batched(problems, [c.init for c in crops], [stencil_diagonal(p) for p in problems], "cpu",
                                  2000, 1e-6)
    cpu, _ = solve_cg(problems, [c.init for c in crops], device="cpu", tolerance=1e-6)
    for a, b in zip(batched, cpu, strict=True):
        assert np.abs(a - b)[mask].max() < 1e-5
