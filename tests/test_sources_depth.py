"""The sensor depth-noise model and the synthetic RGB-D sample it corrupts (real MediaPipe on the real photo)."""

from __future__ import annotations

import dataclasses
import doctest
import importlib

import numpy as np
import pytest

from facenormals.camera import Intrinsics
from facenormals.realtime.sources.base import SourceError, open_source
from facenormals.realtime.sources.depth_noise import PROFILES, NoiseProfile, add_sensor_noise, to_depth_units
from facenormals.realtime.sources.sample import face_mesh_landmarks, render_sample_depth_m, render_sample_rgb

K = Intrinsics(160, 120, 150.0, 150.0, 79.5, 59.5)


def quiet(profile: str, **changes: float) -> NoiseProfile:
    """A profile with one effect isolated: no holes, dropouts or flying pixels unless asked for."""
    base = dict(edge_hole_prob=0.0, flying_prob=0.0, dropout_prob=0.0, grazing_hole_prob=0.0, baseline_m=0.0)
    return dataclasses.replace(PROFILES[profile], **{**base, **changes})


@pytest.mark.parametrize("profile", ["realsense", "kinect"])
def test_axial_noise_grows_with_z_squared(profile):
    stds = []
    for z in (0.6, 1.2, 2.4):
        clean = np.full((K.height, K.width), z, np.float32)
        noisy = add_sensor_noise(clean, K, np.random.default_rng(1), quiet(profile))
        stds.append(float(np.std(noisy - clean)))
    assert stds[0] < stds[1] < stds[2]
    assert 2.5 < stds[2] / stds[1] < 5.5  # ≈ 4 for σ ∝ z², blurred by quantisation and the floor
    prof = PROFILES[profile]
    expected = 2.4**2 * prof.disparity_noise_px / prof.focal_baseline_px_m
    assert stds[2] == pytest.approx(expected, rel=0.35)


def test_disparity_quantisation_steps():
    prof = quiet("kinect", disparity_noise_px=0.0, axial_floor_m=0.0)
    ramp = np.tile(np.linspace(1.0, 1.05, K.width, dtype=np.float32), (K.height, 1))
    noisy = add_sensor_noise(ramp, K, np.random.default_rng(0), prof)
    levels = np.unique(noisy[noisy > 0])
    disparities = prof.focal_baseline_px_m / levels / prof.disparity_step_px
    assert np.allclose(disparities, np.round(disparities), atol=1e-3)  # every depth is an integer disparity step
    assert len(levels) < K.width / 2  # steps, not a continuum
    step_at_1m = 1.0**2 * prof.disparity_step_px / prof.focal_baseline_px_m
    assert np.diff(levels).min() == pytest.approx(step_at_1m, rel=0.1)


def box_scene() -> np.ndarray:
    depth = np.full((K.height, K.width), 1.5, np.float32)
    depth[40:80, 60:100] = 0.6
    return depth


def test_occlusion_shadow_width_follows_the_depth_jump():
    prof = quiet("realsense", baseline_m=0.05)
    noisy = add_sensor_noise(box_scene(), K, np.random.default_rng(0), prof)
    width = K.fx * 0.05 * (1 / 0.6 - 1 / 1.5)  # 7.5 px of wall hidden from the second view
    left = noisy[45:75, 60 - int(width) : 60]
    assert (left == 0).mean() > 0.95  # shadow left of the box (second imager to the right, as on a D4xx)
    assert (noisy[45:75, 60 - int(width) - 3 : 60 - int(width) - 1] > 0).all()  # not wider than the geometry says
    assert (noisy[45:75, 101:110] > 0).mean() > 0.95  # no shadow on the right side


def test_edges_lose_pixels_and_fly():
    prof = quiet("realsense", edge_hole_prob=0.5, flying_prob=0.6)
    noisy = add_sensor_noise(box_scene(), K, np.random.default_rng(0), prof)
    edge_band = np.zeros(noisy.shape, bool)
    edge_band[38:82, 58:102] = True
    edge_band[42:78, 62:98] = False
    assert 0.1 < (noisy[edge_band] == 0).mean() < 0.6
    flying = (noisy > 0.7) & (noisy < 1.4)
    assert flying.any() and flying[edge_band].sum() == flying.sum()  # mixed depths only at the discontinuity


def test_grazing_surfaces_drop_out():
    # a plane z = 1 + tan(80°)·x seen from the origin: the angle to the ray runs from ~55° (left) to ~90° (right)
    slope = np.tan(np.radians(80.0))
    x_over_z = (np.arange(K.width, dtype=np.float32) - K.cx) / K.fx
    z = 1.0 / (1.0 - slope * x_over_z)
    valid = (z > 0) & (z < 4)
    angle = np.degrees(np.arccos(np.abs(1 - slope * x_over_z) / np.hypot(1, slope) / np.hypot(1, x_over_z)))
    depth = np.tile(np.where(valid, z, 0).astype(np.float32), (K.height, 1))
    noisy = add_sensor_noise(depth, K, np.random.default_rng(0), quiet("realsense", grazing_hole_prob=0.9))
    lost = (noisy == 0).mean(axis=0)
    assert lost[valid & (angle < 65)].max() < 0.05
    assert lost[valid & (angle > 82)].mean() > 0.4


def test_range_limits_seed_and_shape_check():
    depth = np.full((K.height, K.width), 0.1, np.float32)  # closer than a D435's minimum range
    assert not add_sensor_noise(depth, K, np.random.default_rng(0), "realsense").any()
    scene = box_scene()
    a = add_sensor_noise(scene, K, np.random.default_rng(7), "kinect")
    b = add_sensor_noise(scene, K, np.random.default_rng(7), "kinect")
    assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="does not match intrinsics"):
        add_sensor_noise(scene[:10], K, np.random.default_rng(0))


def test_sample_rgbd_depth_is_aligned_with_the_face():
    with open_source("sample-rgbd", frames=3) as source:
        assert source.has_depth and source.size == (640, 480)
        frames = list(source)
    f = frames[2]
    assert f.depth.dtype == np.uint16 and f.depth.shape == (480, 640) and f.depth_scale_m == 0.001
    assert f.intrinsics == source.intrinsics
    landmarks = face_mesh_landmarks(f.rgb)[:, :2] * [640, 480]  # MediaPipe on the colour frame
    depth_m = f.depth.astype(np.float32) * f.depth_scale_m
    at_landmarks = depth_m[np.round(landmarks[:, 1]).astype(int), np.round(landmarks[:, 0]).astype(int)]
    valid = at_landmarks > 0
    assert valid.mean() > 0.8
    assert np.median(at_landmarks[valid]) == pytest.approx(0.5, abs=0.1)  # the face, not the wall
    assert np.median(depth_m[:40, :][depth_m[:40, :] > 0]) == pytest.approx(1.1, abs=0.15)  # wall at the top
    holes = (f.depth == 0).mean()
    assert 0.005 < holes < 0.2  # a sensor, not a renderer: some missing depth, mostly valid


def test_sample_rgbd_geometry_and_determinism():
    clean = render_sample_depth_m(0)
    landmarks = face_mesh_landmarks(render_sample_rgb(0))[:, :2] * [640, 480]
    nose, cheek_l, cheek_r = (np.round(landmarks[i]).astype(int) for i in (1, 234, 454))
    assert clean[nose[1], nose[0]] + 0.02 < min(clean[cheek_l[1], cheek_l[0]], clean[cheek_r[1], cheek_r[0]])
    with open_source("sample-rgbd", frames=2, width=320, height=240) as a, open_source("sample-rgbd", frames=2, width=320,
                                                                                       height=240) as b:
        assert all(np.array_equal(x.depth, y.depth) for x, y in zip(a, b, strict=True))
    with open_source("sample-rgbd", frames=1, noise=None) as exact:
        frame = next(iter(exact))
    assert np.array_equal(frame.depth, to_depth_units(clean, 0.001))
    with pytest.raises(SourceError, match="unknown noise profile"):
        open_source("sample-rgbd", noise="lidar")


@pytest.mark.parametrize("module", ["base", "depth_noise", "sample", "reconnect", "rgbd_folder"])
def test_docstring_examples(module):
    # realtime/ is outside pytest's doctest paths (it installs as facenormals.realtime): run its examples here.
    result = doctest.testmod(importlib.import_module(f"facenormals.realtime.sources.{module}"))
    assert result.failed == 0 and result.attempted > 0
