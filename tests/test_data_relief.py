"""Fine skin relief (training/data/relief.py): the bump field's normals are the exact normals of its height field
on a plane, its RMS tilt is the one drawn, and the renderer applies it to image and ground truth alike, only when
asked (sets rendered without it keep their random streams)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import trimesh

from facenormals.training.data import cli as data_cli
from facenormals.training.data.relief import Relief, tilt_normals
from facenormals.training.data.synth import RenderSettings, SceneMesh, render


def _plane_points(n: int = 4000, seed: int = 0) -> np.ndarray:
    xy = np.random.default_rng(seed).uniform(-60.0, 60.0, (n, 2))
    return np.column_stack([xy, np.zeros(n)])


def test_gradient_is_the_height_fields_derivative():
    field = Relief.sample(np.random.default_rng(1), 5.0)
    points = _plane_points(50) + np.random.default_rng(2).normal(0, 10, (50, 3))
    eps = 1e-4
    numeric = np.stack([(field.height(points + eps * e) - field.height(points - eps * e)) / (2 * eps)
                        for e in np.eye(3)], axis=1)
    np.testing.assert_allclose(field.gradient(points), numeric, atol=1e-6)


def test_on_a_plane_the_tilted_normals_are_the_relief_surfaces_normals():
    """z = h(x, y) has normal ∝ (−h_x, −h_y, 1): exactly what tilting +z by the tangential gradient gives."""
    field = Relief.sample(np.random.default_rng(3), 6.0)
    points = _plane_points()
    up = np.tile(np.array([[0.0, 0.0, 1.0]], np.float32), (len(points), 1))
    gradient = field.gradient(points)
    expected = np.column_stack([-gradient[:, 0], -gradient[:, 1], np.ones(len(points))])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(tilt_normals(up, gradient, np.ones(len(points))), expected, atol=1e-6)
    np.testing.assert_array_equal(tilt_normals(up, gradient, np.zeros(len(points))), up)  # weight 0: untouched


@pytest.mark.parametrize("tilt_deg", [2.0, 6.0])
def test_the_rms_tilt_is_the_one_drawn(tilt_deg):
    up = np.tile(np.array([[0.0, 0.0, 1.0]], np.float32), (4000, 1))
    rms = []
    for seed in range(20):
        field = Relief.sample(np.random.default_rng(seed), tilt_deg)
        tilted = tilt_normals(up, field.gradient(_plane_points(seed=seed)), np.ones(len(up)))
        rms.append(np.sqrt(np.mean(np.arccos(np.clip(tilted[:, 2], -1, 1)) ** 2)))
    # per field the plane sees 2 of the 3 directions' slope on average: over 20 fields within 15 %
    assert np.degrees(np.mean(rms)) == pytest.approx(tilt_deg, rel=0.15)


def test_out_of_range_tilts_are_refused():
    with pytest.raises(ValueError, match="relief tilt"):
        Relief.sample(np.random.default_rng(0), 20.0)
    with pytest.raises(ValueError, match="relief_deg"):
        RenderSettings(relief_deg=-1.0)
    parser = argparse.ArgumentParser()
    data_cli.add_arguments(parser)
    with pytest.raises(ValueError, match="--relief-deg"):
        data_cli.main(parser.parse_args(["render", "--count", "1", "--out", "/nonexistent/x", "--relief-deg", "30"]))


def _sphere_mesh(relief_weight: bool) -> SceneMesh:
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=80.0)  # mm: a head-sized ball, 10k faces
    vertices = np.asarray(sphere.vertices, np.float32)
    front = vertices[vertices[:, 2] > 0]
    oval = front[np.argsort(-np.hypot(front[:, 0], front[:, 1]))[:64]]  # the silhouette's rim
    weight = np.clip(vertices[:, 2] / 80.0, 0, 1).astype(np.float32) if relief_weight else None
    return SceneMesh(vertices=vertices, faces=np.asarray(sphere.faces, np.int64), oval=oval, mm_per_unit=1.0,
                     relief_weight=weight)


def _fine_angle_deg(normals: np.ndarray, mask: np.ndarray) -> float:
    """Mean angle between the normals and their 5×5 box blur, over the mask's interior (the fine part)."""
    import cv2

    blurred = cv2.blur(normals, (5, 5))
    blurred /= np.maximum(np.linalg.norm(blurred, axis=2, keepdims=True), 1e-8)
    inner = cv2.erode(mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    cos = np.clip(np.sum(normals * blurred, axis=2), -1, 1)[inner]
    return float(np.degrees(np.arccos(cos)).mean())


def test_the_renderer_applies_relief_only_when_asked():
    plain = render(_sphere_mesh(False), RenderSettings(size=128), np.random.default_rng(1))
    unused = render(_sphere_mesh(True), RenderSettings(size=128), np.random.default_rng(1))
    np.testing.assert_array_equal(unused.normals, plain.normals)  # a weight alone draws nothing
    np.testing.assert_array_equal(unused.image, plain.image)
    assert "relief_deg" not in unused.params
    bumpy = render(_sphere_mesh(True), RenderSettings(size=128, relief_deg=8.0), np.random.default_rng(1))
    assert 2.0 <= bumpy.params["relief_deg"] <= 8.0  # this seed's draw: enough relief to see
    np.testing.assert_array_equal(bumpy.mask, plain.mask)
    assert _fine_angle_deg(bumpy.normals, bumpy.mask) > _fine_angle_deg(plain.normals, plain.mask) + 0.3


def _fine_contrast(image: np.ndarray, mask: np.ndarray) -> float:
    """Std of the grey image minus its 5×5 blur over the mask's interior, relative to its mean."""
    import cv2

    grey = np.asarray(image, np.float32).mean(axis=2)
    inner = cv2.erode(mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    return float((grey - cv2.blur(grey, (5, 5)))[inner].std() / max(grey[inner].mean(), 1e-6))


def test_the_image_is_shaded_with_the_tilted_normals():
    """Same seeds, with and without relief (the light differs: the relief's draws come first): over several
    renders the image's fine contrast on the face grows with the relief's."""
    ratios = []
    for seed in range(6):
        plain = render(_sphere_mesh(True), RenderSettings(size=128), np.random.default_rng(seed))
        bumpy = render(_sphere_mesh(True), RenderSettings(size=128, relief_deg=8.0), np.random.default_rng(seed))
        if bumpy.params["relief_deg"] >= 2.0:  # the tilt is drawn in [0, 8]: near 0 there is nothing to see
            ratios.append(_fine_contrast(bumpy.image, bumpy.mask) / _fine_contrast(plain.image, plain.mask))
    assert len(ratios) >= 3 and min(ratios) > 1.2, ratios
