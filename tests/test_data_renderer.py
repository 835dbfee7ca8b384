"""Analytic checks of the data engine's rasteriser, cameras and lighting (no shared data needed)."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from facenormals.conventions import angular_error_deg, sphere_normals
from facenormals.training.data.camera import PinholeCamera, WeakPerspectiveCamera, crop_camera
from facenormals.training.data.lighting import Lighting, sample_lighting, sh_basis, shade
from facenormals.training.data.renderer import rasterize, vertex_normals
from facenormals.training.data.synth import euler_yaw_pitch_roll, random_rotation


def _render_normals(vertices, faces, camera, size):
    xy, depth = camera.project(vertices)
    frags = rasterize(xy, depth, faces, (size, size), perspective=camera.perspective)
    vn = vertex_normals(vertices, faces)
    n = frags.interpolate_vertices(vn, faces)
    n /= np.maximum(np.linalg.norm(n, axis=2, keepdims=True), 1e-9)
    return n, frags


def test_sphere_weak_perspective_matches_analytic_normals():
    size, radius = 96, 1.0
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=radius)
    verts = np.asarray(sphere.vertices, np.float32) + np.array([0, 0, -10], np.float32)
    scale = 0.45 * size / radius
    centre = (size - 1) / 2
    normals, frags = _render_normals(verts, np.asarray(sphere.faces), WeakPerspectiveCamera(scale, centre, centre), size)
    expected, mask = sphere_normals(size, radius_frac=0.45)
    inside = mask & (expected[..., 2] > 0.2) & frags.covered  # the polygonal rim departs from the sphere
    assert inside.sum() > 0.6 * mask.sum()
    err = angular_error_deg(normals[inside], expected[inside])
    assert err.max() < 1.0, f"max error {err.max():.2f}°"
    # coverage agrees with the analytic disc up to the rim pixels
    assert abs(int(frags.covered.sum()) - int(mask.sum())) < 0.03 * mask.sum()


def test_sphere_pinhole_matches_ray_traced_normals():
    size, radius, dist, focal = 80, 1.0, 4.0, 120.0
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=radius)
    verts = np.asarray(sphere.vertices, np.float32) + np.array([0, 0, -dist], np.float32)
    c = (size - 1) / 2
    normals, frags = _render_normals(verts, np.asarray(sphere.faces), PinholeCamera(focal, c, c), size)
    cols, rows = np.meshgrid(np.arange(size), np.arange(size))
    rays = np.stack([(cols - c) / focal, -(rows - c) / focal, -np.ones_like(cols, dtype=float)], -1)
    rays /= np.linalg.norm(rays, axis=2, keepdims=True)
    centre = np.array([0, 0, -dist])
    b = rays @ centre
    disc = b ** 2 - (centre @ centre - radius ** 2)
    hit = disc > 0
    t = b - np.sqrt(np.clip(disc, 0, None))
    expected = (rays * t[..., None] - centre) / radius
    inside = hit & frags.covered & (np.sum(expected * -rays, axis=2) > 0.3)
    assert inside.sum() > 500
    err = angular_error_deg(normals[inside], expected[inside].astype(np.float32))
    assert err.max() < 1.0, f"max error {err.max():.2f}°"


@pytest.mark.parametrize("camera_kind", ["pinhole", "weak-perspective"])
def test_tilted_plane_normals_and_depth_are_exact(camera_kind):
    size = 64
    tilt = np.radians(35.0)
    # a square plane facing +z, tilted about the x-axis then the y-axis, 50 units in front of the camera
    grid = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], np.float32) * 10
    rx = np.array([[1, 0, 0], [0, np.cos(tilt), -np.sin(tilt)], [0, np.sin(tilt), np.cos(tilt)]])
    ry = np.array([[np.cos(0.4), 0, np.sin(0.4)], [0, 1, 0], [-np.sin(0.4), 0, np.cos(0.4)]])
    rot = ry @ rx
    verts = (grid @ rot.T + np.array([0, 0, -50])).astype(np.float32)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    camera = PinholeCamera(100.0, 31.5, 31.5) if camera_kind == "pinhole" else WeakPerspectiveCamera(2.0, 31.5, 31.5)
    normals, frags = _render_normals(verts, faces, camera, size)
    expected = (rot @ np.array([0, 0, 1.0])).astype(np.float32)
    cov = frags.covered
    assert cov.sum() > 300
    err = angular_error_deg(normals[cov], np.broadcast_to(expected, normals[cov].shape))
    assert err.max() < 1.0 and expected[1] < 0  # tilted away from the top: +y is up, it faces down
    # depth: the plane n·p = n·p0 met by each pixel's ray (pinhole) or column (weak perspective)
    rows, cols = np.nonzero(cov)
    p0 = verts[0]
    if camera_kind == "pinhole":
        rays = np.stack([(cols - 31.5) / 100.0, -(rows - 31.5) / 100.0, -np.ones(len(rows))], 1)
        t = (expected @ p0) / (rays @ expected)
        analytic = t  # distance along −z equals t because the ray's z component is −1
    else:
        x, y = (cols - 31.5) / 2.0, -(rows - 31.5) / 2.0
        z = (expected @ p0 - expected[0] * x - expected[1] * y) / expected[2]
        analytic = -z
    assert np.abs(frags.depth[rows, cols] - analytic).max() < 1e-3 * 50


def test_occlusion_keeps_the_nearest_surface():
    near = np.array([[-1, -1, -5], [1, -1, -5], [0, 1, -5]], np.float32)
    far = near * np.array([3, 3, 1], np.float32) + np.array([0, 0, -5], np.float32)
    verts = np.vstack([far, near])
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    xy, depth = WeakPerspectiveCamera(8.0, 16, 16).project(verts)
    frags = rasterize(xy, depth, faces, (32, 32))
    assert frags.tri[16, 16] == 1 and abs(frags.depth[16, 16] - 5) < 1e-4
    assert (frags.tri == 0).any()  # the far triangle shows around the near one
    back = rasterize(xy, depth, faces[:, ::-1], (32, 32))  # clockwise = back-facing: culled
    assert not back.covered.any()


def test_crop_camera_reproduces_the_paper_crop():
    rng = np.random.default_rng(1)
    points = rng.uniform(-5, 5, (30, 3)) + np.array([0, 0, -60])
    for kind in ("pinhole", "weak-perspective"):
        camera, _ = crop_camera(kind, points, 256)
        xy, _ = camera.project(points)
        lo, hi = xy.min(0), xy.max(0)
        side = (hi - lo).max()
        # the tightest square, enlarged 1.2×, fills the crop: the landmarks span 256/1.2 pixels
        assert side == pytest.approx(256 / 1.2, rel=1e-6)
        assert (lo + hi) / 2 == pytest.approx([127.5, 127.5], abs=1e-6)


def test_random_rotation_follows_the_paper_protocol():
    rng = np.random.default_rng(0)
    angles, axes = [], []
    for _ in range(2000):
        axis, angle, rot = random_rotation(rng, np.pi / 4)
        angles.append(angle)
        axes.append(axis)
        assert np.allclose(rot @ rot.T, np.eye(3), atol=1e-9) and np.linalg.det(rot) > 0
        assert np.isclose(np.degrees(np.arccos(np.clip((np.trace(rot) - 1) / 2, -1, 1))), abs(np.degrees(angle)),
                          atol=1e-6)
    angles = np.array(angles)
    assert angles.min() >= -np.pi / 4 and angles.max() <= np.pi / 4
    assert angles.min() < -0.75 and angles.max() > 0.75  # the whole range is used
    assert np.abs(np.mean(axes, axis=0)).max() < 0.06  # axes uniform on the sphere
    yaw, pitch, roll = euler_yaw_pitch_roll(random_rotation(np.random.default_rng(3), 0.3)[2])
    assert max(abs(yaw), abs(pitch), abs(roll)) < 40


def test_lighting_follows_the_paper_protocol():
    rng = np.random.default_rng(0)
    lights = [sample_lighting(rng) for _ in range(1000)]
    intensity = np.array([li.intensity for li in lights])
    assert intensity.min() >= 0 and intensity.max() <= 2 and intensity.max() > 1.9 and intensity.min() < 0.1
    assert all(li.direction[2] > 0 and abs(np.linalg.norm(li.direction) - 1) < 1e-5 for li in lights)
    harsh = [sample_lighting(rng, harsh=True) for _ in range(100)]
    assert all(abs(li.direction[0]) > 0.75 and li.intensity >= 1.5 for li in harsh)


def test_shading_is_lambertian_plus_sh():
    normals = np.array([[0, 0, 1], [1, 0, 0], [0, 0, -1]], np.float32)
    light = Lighting(np.array([0, 0, 1], np.float32), 1.5, np.ones(3, np.float32))
    light.sh[0] = 0.2 / 0.886227
    out = shade(normals, np.full((3, 3), 0.5, np.float32), light)
    assert out[0] == pytest.approx([0.5 * (0.2 + 1.5)] * 3, rel=1e-5)  # lit head-on
    assert out[1] == pytest.approx([0.5 * 0.2] * 3, rel=1e-5)  # grazing: ambient only
    assert out[2] == pytest.approx([0.5 * 0.2] * 3, rel=1e-5)
    assert sh_basis(normals).shape == (3, 9)


def test_shadow_map_shadows_behind_an_occluder_and_not_elsewhere():
    from facenormals.training.data.shadows import shadow_factor

    # a floor square (normal +z) and a small square roof 2 units above its centre; light straight from +z
    floor = np.array([[-5, -5, 0], [5, -5, 0], [5, 5, 0], [-5, 5, 0]], np.float32)
    roof = np.array([[-1, -1, 2], [1, -1, 2], [1, 1, 2], [-1, 1, 2]], np.float32)
    verts = np.vstack([floor, roof])
    faces = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    points = np.array([[0, 0, 0], [0.5, -0.5, 0], [3.5, 3.5, 0], [-4, 0, 0], [0, 0, 2]], np.float32)
    normals = np.tile(np.array([0, 0, 1], np.float32), (len(points), 1))
    lit = shadow_factor(verts, faces, points, normals, np.array([0, 0, 1.0]), bias=0.01)
    assert lit[0] == 0 and lit[1] == 0  # under the roof
    assert lit[2] == 1 and lit[3] == 1 and lit[4] == 1  # open floor, and the roof itself (no self-shadowing)
    # light 45° toward +x: the roof's shadow moves 2 units toward −x, to x ∈ [−3, −1]
    moved = np.array([[-2, 0, 0], [0.5, 0, 0], [-4, 0, 0]], np.float32)
    slanted = shadow_factor(verts, faces, moved, normals[:3], np.array([1.0, 0, 1.0]) / np.sqrt(2), bias=0.01)
    assert slanted.tolist() == [0.0, 1.0, 1.0]


def test_rasterize_rejects_bad_indices_instead_of_reading_out_of_bounds():
    xy = np.array([[0, 0], [10, 0], [0, 10]], np.float64)
    with pytest.raises(ValueError, match="indices"):
        rasterize(xy, np.ones(3), np.array([[0, 2, 3]]), (16, 16))
    with pytest.raises(ValueError, match="one depth per vertex"):
        rasterize(xy, np.ones(2), np.array([[0, 2, 1]]), (16, 16))
    empty = rasterize(xy, np.ones(3), np.zeros((0, 3), np.int64), (16, 16))
    assert not empty.covered.any()
