"""Depth maps: validity, back-projection, normals by cross products, alignment to the colour camera."""

from __future__ import annotations

import numpy as np
import pytest
from surfaces import sphere_depth

from facenormals.camera import Intrinsics
from facenormals.conventions import angular_error_deg
from facenormals.depth import (
    NOISE_MODELS,
    DepthError,
    align_depth_to_colour,
    backproject,
    depth_to_metres,
    drop_outliers,
    fill_holes,
    gaussian_filter_depth,
    hole_mask,
    joint_bilateral_depth,
    local_linear_fit,
    median_filter_depth,
    normals_from_depth,
    normals_from_gradient,
    normals_from_points,
    pixel_rays,
    plane_fit_depth,
)

INTR = Intrinsics(width=80, height=60, fx=90.0, fy=90.0, cx=39.5, cy=29.5)


def plane_depth(normal: np.ndarray, offset: float, intr: Intrinsics) -> np.ndarray:
    """Depth of the plane n·P = offset (our camera space) along each pixel ray."""
    rays = pixel_rays(intr).astype(np.float64)
    return (offset / (rays @ normal)).astype(np.float32)


def test_raw_depth_units_and_invalid_values():
    raw = np.array([[0, 1000], [500, 65535]], dtype=np.uint16)
    metres = depth_to_metres(raw, 0.001)
    assert np.isnan(metres[0, 0]) and metres[0, 1] == pytest.approx(1.0)
    floats = np.array([[np.nan, -1.0], [np.inf, 0.7]], dtype=np.float32)
    assert hole_mask(depth_to_metres(floats)).tolist() == [[True, True], [True, False]]
    with pytest.raises(DepthError, match="depth scale"):
        depth_to_metres(raw)
    with pytest.raises(DepthError, match="single-channel"):
        depth_to_metres(np.zeros((4, 4, 3), np.uint16), 0.001)


def test_backprojection_convention_y_up_z_toward_camera():
    depth = np.full((INTR.height, INTR.width), 2.0, np.float32)
    points = backproject(depth, INTR)
    assert points[0, 0, 1] > 0  # top row is +y (up)
    assert points[0, 0, 0] < 0  # left column is -x
    assert np.allclose(points[..., 2], -2.0)  # in front of a camera looking down -z


def test_tilted_plane_normals_are_exact():
    normal = np.array([0.3, -0.4, 0.8])
    normal /= np.linalg.norm(normal)
    depth = plane_depth(normal, -0.9 * normal[2], INTR)  # passes through (0, 0, -0.9)
    normals, valid = normals_from_depth(depth, INTR)
    assert valid.all()
    err = angular_error_deg(normals, np.broadcast_to(normal, normals.shape).astype(np.float32))
    # depth along a tilted plane is not linear in the pixel: central differences leave O(h²) terms
    assert err.mean() < 0.05 and err.max() < 0.25
    exact, _ = normals_from_points(backproject(depth, INTR))  # points ARE linear on a plane: exact
    assert angular_error_deg(exact, np.broadcast_to(normal, normals.shape).astype(np.float32)).max() < 0.01


def test_untied_steps_are_not_slopes_and_sharpening_keeps_planes():
    """Two parallel tilted planes with a 5 cm step between rows 29 and 30: central differences across the step
    tilt those rows' normals; told the step is not tied, one-sided differences keep them exact. The sharpened
    derivative (the fusion solve's) is exact on a plane too (its weights sum to one)."""
    normal = np.array([0.3, -0.4, 0.8])
    normal /= np.linalg.norm(normal)
    depth = plane_depth(normal, -0.9 * normal[2], INTR)
    depth[30:] = plane_depth(normal, -0.95 * normal[2], INTR)[30:]
    tie_x = np.ones((INTR.height, INTR.width - 1), bool)
    tie_y = np.ones((INTR.height - 1, INTR.width), bool)
    tie_y[29] = False
    truth = np.broadcast_to(normal, (*depth.shape, 3)).astype(np.float32)
    across, _ = normals_from_depth(depth, INTR)
    assert angular_error_deg(across[29:31], truth[29:31]).min() > 20.0
    for sharpen in (False, True):
        normals, valid = normals_from_depth(depth, INTR, (tie_x, tie_y), sharpen=sharpen)
        assert valid.all()
        err = angular_error_deg(normals, truth)
        assert err.mean() < 0.05 and err.max() < 0.5
    tie_y[30] = False  # row 30 now tied to neither row: differenced across the cuts, still a normal
    normals, valid = normals_from_depth(depth, INTR, (tie_x, tie_y))
    assert valid.all() and angular_error_deg(normals[30], truth[30]).min() > 20.0


def test_sharpened_derivative_undoes_the_solves_mean_normal_steps():
    """A 6-px ripple z = A·sin(ωu) integrated as the fusion solve does (each step the mean of its two pixels'
    slopes: a trapezoid rule): central differences show cos²(ω/2) = 75 % of the slope, the sharpened ones
    cos²(ω/2)·(1.5 − 0.5·cos ω) = 94 %."""
    omega, amplitude = 2 * np.pi / 6, 0.002
    u = np.arange(64, dtype=np.float64)
    slope = amplitude * omega * np.cos(omega * u)
    z = 1.0 + np.concatenate([[0.0], np.cumsum(0.5 * (slope[1:] + slope[:-1]))])
    depth = np.tile(z, (8, 1)).astype(np.float32)

    def kept(sharpen: bool) -> float:
        from facenormals.depth import _depth_derivative

        derivative = _depth_derivative(depth.astype(np.float64), 1, sharpen=sharpen)[4, 8:-8]
        return float(np.abs(derivative).max() / np.abs(slope[8:-8]).max())

    assert kept(False) == pytest.approx(np.cos(omega / 2) ** 2, abs=0.02)
    assert kept(True) == pytest.approx(np.cos(omega / 2) ** 2 * (1.5 - 0.5 * np.cos(omega)), abs=0.02)


def test_sphere_normals_and_holes():
    intr = Intrinsics(96, 96, 150.0, 150.0, 47.5, 47.5)
    depth, truth, hit = sphere_depth(intr)
    depth[40:44, 40:44] = np.nan  # a hole: its neighbours fall back to one-sided differences
    normals, valid = normals_from_depth(depth, intr)
    assert not valid[40:44, 40:44].any()
    inner = hit & valid
    inner[:, :] &= np.hypot(*np.meshgrid(np.arange(96) - 47.5, np.arange(96) - 47.5)) < 18
    assert angular_error_deg(normals[inner], truth[inner]).mean() < 0.5
    filled = fill_holes(depth, hit)
    assert np.isfinite(filled[40:44, 40:44]).all()
    assert np.nanmax(np.abs(filled[40:44, 40:44] - sphere_depth(intr)[0][40:44, 40:44])) < 0.002


def test_all_holes_cannot_be_filled():
    with pytest.raises(DepthError, match="no valid depth"):
        fill_holes(np.full((8, 8), np.nan, np.float32))


def test_align_identity_and_baseline_shift():
    depth = np.full((INTR.height, INTR.width), 1.0, np.float32)
    same = align_depth_to_colour(depth, INTR, INTR, np.eye(3), np.zeros(3))
    assert np.allclose(same, depth)
    # the colour camera sits 10 cm to the left: X_colour = X_depth + (0.1, 0, 0); points move 9 px right
    shifted = align_depth_to_colour(depth, INTR, INTR, np.eye(3), np.array([0.1, 0.0, 0.0]))
    assert np.isnan(shifted[:, :9]).all() and np.allclose(shifted[:, 9:], 1.0)


def test_align_upsampling_closes_cracks_not_silhouettes():
    colour = Intrinsics(160, 120, 180.0, 180.0, 79.75, 59.75)
    depth = np.full((INTR.height, INTR.width), np.nan, np.float32)
    depth[10:50, 20:60] = 0.8
    aligned = align_depth_to_colour(depth, INTR, colour, np.eye(3), np.zeros(3))
    inside = aligned[25:95, 45:115]
    assert np.isfinite(inside).all() and np.allclose(inside, 0.8)
    assert np.isnan(aligned[:15]).all()


def test_align_rejects_wrong_resolution():
    with pytest.raises(DepthError, match="80×60"):
        align_depth_to_colour(np.ones((48, 64), np.float32), INTR, INTR, np.eye(3), np.zeros(3))


def test_depth_in_colour_with_and_without_a_depth_calibration():
    from facenormals.calibration.calibfile import Calibration
    from facenormals.depth import depth_in_colour

    raw = np.full((INTR.height, INTR.width), 800, np.uint16)
    full = Calibration(INTR, INTR, np.eye(3), np.array([0.1, 0.0, 0.0]), 0.001)
    aligned = depth_in_colour(raw, full)
    assert np.isnan(aligned[:, :9]).all() and np.allclose(aligned[:, 12:], 0.8)
    colour_only = Calibration(INTR, depth_scale_m=None)
    assert np.allclose(depth_in_colour(raw, colour_only, depth_scale_m=0.001), 0.8)  # already aligned: scaled only
    with pytest.raises(DepthError, match="no depth scale"):
        depth_in_colour(raw, colour_only)
    with pytest.raises(DepthError, match="no depth camera"):
        depth_in_colour(np.zeros((10, 10), np.uint16), colour_only, 0.001)


# ---------------------------------------------------------------------------------------------- depth-only filters


def test_plane_fit_is_exact_on_a_plane_and_keeps_holes():
    normal = np.array([0.3, -0.2, 0.93])
    normal /= np.linalg.norm(normal)
    depth = plane_depth(normal, -0.6 * normal[2], INTR)
    depth[20:24, 30:34] = np.nan
    fitted, normals, ok = plane_fit_depth(depth, INTR, 5)
    inside = ok & np.isfinite(depth)
    assert not ok[20:24, 30:34].any() and inside.sum() > 0.9 * depth.size
    assert np.abs(fitted - depth)[inside].max() < 1e-4  # z is linear in (u, v) only up to perspective curvature
    assert angular_error_deg(normals[inside], np.broadcast_to(normal, normals[inside].shape)).max() < 0.5  # borders


def test_local_linear_fit_keeps_curved_surfaces_at_borders():
    """The Gaussian-weighted local plane (σ 4 px) of a sphere cut by a mask: at the border its normals stay within a
    few degrees of the truth, where a normalised Gaussian of the same σ flattens the surface toward the interior."""
    depth, truth, hit = sphere_depth(INTR, 1.0, 0.5)  # curvature radius ~90 px: a face's in a 256² crop
    mask = hit & (np.arange(INTR.width)[None, :] < 62)  # a straight cut where the sphere slopes away
    measured = np.where(mask, depth, np.nan).astype(np.float32)
    fit, d_u, d_v, ok = local_linear_fit(np.nan_to_num(measured), mask, 4.0)
    plane_normals = normals_from_gradient(fit, d_u, d_v, INTR)
    blurred, _ = normals_from_depth(gaussian_filter_depth(measured, 4.0), INTR)
    border = mask & ok & (np.arange(INTR.width)[None, :] >= 58) & (np.arange(INTR.height)[:, None] > 15) & (
        np.arange(INTR.height)[:, None] < 45)
    plane_err, blur_err = (angular_error_deg(n[border], truth[border]).mean() for n in (plane_normals, blurred))
    assert border.sum() > 50 and plane_err < 3.0 and plane_err < 0.5 * blur_err  # 2.3° vs 7.7°
    flat = plane_depth(np.array([0.0, 0.0, 1.0]), -0.6, INTR)  # exact on a plane, value and gradient
    fit, d_u, d_v, ok = local_linear_fit(flat, np.ones(flat.shape, bool), 3.0)
    assert ok.all() and np.abs(fit - flat).max() < 1e-5 and np.abs(d_u).max() < 1e-5


def test_outliers_and_median_remove_flying_pixels():
    depth = np.full((30, 30), 0.5, np.float32) + np.random.default_rng(0).normal(0, 0.001, (30, 30)).astype(np.float32)
    depth[10, 10] = 0.56  # a flying pixel 6 cm behind the surface
    depth[5, 5] = np.nan
    dropped = drop_outliers(depth, 0.01)
    assert np.isnan(dropped[10, 10]) and np.isnan(dropped[5, 5]) and np.isfinite(dropped).sum() == 30 * 30 - 2
    median = median_filter_depth(depth, 5)
    assert abs(median[10, 10] - 0.5) < 0.003 and np.isnan(median[5, 5])


def test_gaussian_and_joint_bilateral_smooth_within_surfaces():
    """Both reduce noise; guided by a colour edge on a depth step, the joint bilateral mixes the two sides less."""
    rng = np.random.default_rng(1)
    truth = np.full((40, 40), 0.5, np.float32)
    truth[:, 20:] = 0.53
    depth = truth + rng.normal(0, 0.002, truth.shape).astype(np.float32)
    depth[3, 3] = np.nan
    colour = np.full((40, 40, 3), 60, np.uint8)
    colour[:, 20:] = 200
    gauss = gaussian_filter_depth(depth, 2.0)
    bilateral = joint_bilateral_depth(depth, colour, 2.0, 20.0)
    assert np.isnan(gauss[3, 3]) and np.isnan(bilateral[3, 3])
    flat = np.zeros_like(truth, bool)
    flat[5:35, 5:14] = True
    for filtered in (gauss, bilateral):
        assert np.nanstd((filtered - truth)[flat]) < 0.5 * np.std((depth - truth)[flat])
    edge = np.zeros_like(flat)
    edge[:, 18:22] = True
    assert np.abs(bilateral - truth)[edge].mean() < 0.3 * np.abs(gauss - truth)[edge].mean()


def test_noise_model_grows_with_the_square_of_depth():
    model = NOISE_MODELS["realsense"]
    near, far = model.sigma_m(0.5), model.sigma_m(2.0)
    assert 0.0005 < near < 0.002 and 10 < far / near < 16
    assert NOISE_MODELS["kinect"].sigma_m(1.0) < model.sigma_m(1.0)
