"""Training's landmark jitter: the coarse face is fitted to moved landmarks, the image is left alone."""

from __future__ import annotations

import math

import numpy as np
import pytest
from media import frontal_renders_with_priors

from facenormals.training.augment import jitter_landmarks
from facenormals.training.config import AugmentSection, config_from_dict

GRID = np.stack(np.meshgrid(np.linspace(60, 190, 12), np.linspace(50, 200, 12)), axis=-1).reshape(-1, 2)
POINTS = np.column_stack([GRID, np.linspace(-20, 20, len(GRID))])


def _spreads(shift=0.0, rotate=0.0, scale=0.0, point=0.0) -> AugmentSection:
    return AugmentSection(prior_shift_px=shift, prior_rotate_deg=rotate, prior_scale=scale, prior_point_px=point)


def test_zero_spreads_leave_the_points_and_the_input_untouched():
    before = POINTS.copy()
    moved = jitter_landmarks(POINTS, 256, np.random.default_rng(0), _spreads())
    np.testing.assert_allclose(moved, POINTS, atol=1e-12)
    np.testing.assert_array_equal(POINTS, before)
    assert moved is not POINTS


def test_a_shift_moves_every_point_alike_with_the_stated_spread_scaled_to_the_crop():
    rng = np.random.default_rng(1)
    offsets = []
    for _ in range(400):
        moved = jitter_landmarks(POINTS, 128, rng, _spreads(shift=2.0))
        delta = moved[:, :2] - POINTS[:, :2]
        np.testing.assert_allclose(delta, np.broadcast_to(delta[0], delta.shape), atol=1e-9)  # rigid shift
        np.testing.assert_allclose(moved[:, 2], POINTS[:, 2])
        offsets.append(delta[0])
    std = np.std(offsets, axis=0)
    np.testing.assert_allclose(std, 2.0 * 128 / 256, rtol=0.15)  # 2 px of a 256² crop = 1 px of a 128² one


def test_rotation_and_scale_act_about_the_centroid_and_scale_depth():
    rng = np.random.default_rng(2)
    for _ in range(20):
        moved = jitter_landmarks(POINTS, 256, rng, _spreads(rotate=3.0, scale=0.05))
        centre = POINTS[:, :2].mean(axis=0)
        np.testing.assert_allclose(moved[:, :2].mean(axis=0), centre, atol=1e-9)  # the centroid stays
        a, b = POINTS[:, :2] - centre, moved[:, :2] - centre
        zoom = np.linalg.norm(b, axis=1) / np.linalg.norm(a, axis=1)
        np.testing.assert_allclose(zoom, zoom[0], rtol=1e-9)  # one similarity for the whole face
        np.testing.assert_allclose(moved[:, 2], POINTS[:, 2] * zoom[0], rtol=1e-9)
        angles = np.arctan2(b[:, 1], b[:, 0]) - np.arctan2(a[:, 1], a[:, 0])
        angles = (angles + math.pi) % (2 * math.pi) - math.pi
        np.testing.assert_allclose(angles, angles[0], atol=1e-9)


def test_jitter_settings_are_checked_by_name():
    cfg = config_from_dict({"augment": {"prior_jitter": 0.5}, "phases": [{"steps": 1, "size": 64}]})
    assert cfg.augment.prior_jitter == 0.5
    assert config_from_dict({"phases": [{"steps": 1, "size": 64}]}).augment.prior_jitter == 0.0  # off by default
    with pytest.raises(ValueError, match="prior_jitter"):
        AugmentSection(prior_jitter=1.5)
    with pytest.raises(ValueError, match="prior_point_px"):
        AugmentSection(prior_point_px=-1.0)


@pytest.mark.shared
@pytest.mark.slow
def test_the_loader_fits_the_prior_to_jittered_landmarks_and_keeps_the_image(shared_data, tmp_path):
    """Real renders, real MediaPipe landmarks, the real ICT fit: jitter moves the prior a little, not the image."""
    from facenormals.training.loaders import load_item

    found = frontal_renders_with_priors(shared_data, tmp_path / "frontal")

    def item(jitter: float, seed: int) -> dict[str, np.ndarray]:
        augment = AugmentSection(prior_dropout=0.0, prior_jitter=jitter, prior_shift_px=4.0)
        return load_item(found[0], 128, np.random.default_rng([seed]), augment, "ict-fit")

    plain, again, jittered = item(0.0, 3), item(0.0, 3), item(1.0, 3)
    np.testing.assert_array_equal(plain["prior"], again["prior"])  # deterministic per seed
    np.testing.assert_array_equal(plain["image"], jittered["image"])  # the image is not moved
    both = (plain["prior"][3] > 0) & (jittered["prior"][3] > 0)
    cosine = np.clip((plain["prior"][:3] * jittered["prior"][:3]).sum(axis=0)[both], -1.0, 1.0)
    mean_deg = float(np.degrees(np.arccos(cosine)).mean())
    assert 0.05 < mean_deg < 10.0, mean_deg  # moved, but still the same face
    assert not np.array_equal(plain["prior"][3], jittered["prior"][3])  # the coverage moved with the face
