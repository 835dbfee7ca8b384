"""Training's truth-pulled coarse face (training/truth_prior.py): a smooth tilt of the stated size, a pull toward
the truth, the stored face's coverage and no-face fallback kept, the image left alone."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from media import frontal_renders_with_priors

from facenormals import mesh_prior
from facenormals.training.config import AugmentSection, config_from_dict
from facenormals.training.truth_prior import smooth_field, tilt, truth_prior

SIZE = 128


def sphere(size: int = SIZE, flatten: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals of a sphere filling most of the crop (z scaled by ``flatten`` before normalising), its mask."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    x, y = (xs - size / 2 + 0.5) / (0.42 * size), -(ys - size / 2 + 0.5) / (0.42 * size)
    inside = x**2 + y**2 < 1.0
    z = np.sqrt(np.clip(1.0 - x**2 - y**2, 0.0, None)) * flatten
    n = np.stack([x, y, z], axis=-1)
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-9)
    return (n * inside[..., None]).astype(np.float32), inside


def angles_deg(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip(np.sum(a[where] * b[where], axis=1), -1.0, 1.0)))


def test_the_tilt_has_the_stated_rms_angle_over_the_region():
    normals, mask = sphere()
    for rms in (2.0, 6.0, 12.0):
        field = smooth_field(SIZE, np.random.default_rng(int(rms)))
        moved = tilt(normals, field, mask, rms)
        deg = angles_deg(moved, normals, mask)
        assert np.sqrt(np.mean(deg**2)) == pytest.approx(rms, rel=0.05)  # tan-scaled: within the small-angle error
        np.testing.assert_allclose(np.linalg.norm(moved[mask], axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(tilt(normals, field, mask, 0.0), normals)


def test_the_tilt_field_is_smooth_and_seeded():
    field = smooth_field(SIZE, np.random.default_rng(5))
    np.testing.assert_array_equal(field, smooth_field(SIZE, np.random.default_rng(5)))
    assert not np.array_equal(field, smooth_field(SIZE, np.random.default_rng(6)))
    detail = field - cv2.GaussianBlur(field, (0, 0), 2.0)
    assert detail.std() < 0.05 * field.std()  # coarse shape only: nothing at the scale of skin or eyelids
    assert field.std() == pytest.approx(1.0, rel=1e-3)

    def medium(f: np.ndarray) -> float:  # the share of the field between σ 8 and σ 32 px of a 256² crop
        return float((cv2.GaussianBlur(f, (0, 0), 4.0 * SIZE / 256) - cv2.GaussianBlur(f, (0, 0), 16.0 * SIZE / 256)).std())

    finer = smooth_field(SIZE, np.random.default_rng(5), scales_px=(6.0, 12.0, 24.0))
    assert finer.std() == pytest.approx(1.0, rel=1e-3)
    assert medium(finer) > 1.5 * medium(field)  # finer scales: more of the shape shading can tell


def test_the_coarse_face_moves_toward_the_truth_keeps_its_coverage_and_stays_smooth():
    truth, mask = sphere()
    flat, _ = sphere(flatten=0.5)  # a coarse face too flat by half: 10–30° off away from the centre,
    stored = mesh_prior.fill_prior(flat, mask)  # extended over the crop as stored faces are
    coverage = mask.copy()
    before = angles_deg(stored, truth, mask).mean()
    gaps = []
    for seed in range(12):
        out = truth_prior(stored, coverage, truth, mask, np.random.default_rng(seed), max_tilt_deg=0.0)
        np.testing.assert_allclose(np.linalg.norm(out, axis=2), 1.0, atol=1e-5)  # unit over the whole crop
        gaps.append(angles_deg(out, truth, mask).mean())
    # pulled a random share of the way (uniform in [0, 1]): never further, on average about half
    assert max(gaps) <= before + 0.5 and min(gaps) < 0.5 * before < max(gaps)
    tilted = truth_prior(stored, coverage, truth, mask, np.random.default_rng(0), max_tilt_deg=12.0)
    untilted = truth_prior(stored, coverage, truth, mask, np.random.default_rng(0), max_tilt_deg=0.0)
    assert 0.5 < angles_deg(tilted, untilted, mask).mean() < 12.0


def test_no_stored_face_stays_the_no_face_fallback_and_bad_shapes_are_named():
    truth, mask = sphere()
    empty = np.zeros_like(truth)
    out = truth_prior(empty, np.zeros_like(mask), truth, mask, np.random.default_rng(0), 12.0)
    np.testing.assert_array_equal(out, empty)
    with pytest.raises(ValueError, match="truth prior"):
        truth_prior(truth[:64], mask[:64], truth, mask, np.random.default_rng(0), 12.0)


def test_settings_are_checked_by_name_and_off_by_default():
    cfg = config_from_dict({"augment": {"prior_from_truth": 0.5}, "phases": [{"steps": 1, "size": 64}]})
    assert cfg.augment.prior_from_truth == 0.5
    assert config_from_dict({"phases": [{"steps": 1, "size": 64}]}).augment.prior_from_truth == 0.0
    with pytest.raises(ValueError, match="prior_from_truth"):
        AugmentSection(prior_from_truth=1.5)
    with pytest.raises(ValueError, match="prior_truth_tilt_deg"):
        AugmentSection(prior_truth_tilt_deg=-1.0)
    scales = config_from_dict({"augment": {"prior_truth_scales_px": [6, 12]}, "phases": [{"steps": 1, "size": 64}]})
    assert scales.augment.prior_truth_scales_px == (6, 12)
    with pytest.raises(ValueError, match="prior_truth_scales_px"):
        AugmentSection(prior_truth_scales_px=())


@pytest.mark.shared
@pytest.mark.slow
def test_the_loader_pulls_the_stored_face_and_keeps_the_image_and_coverage(shared_data, tmp_path):
    """Real renders, real MediaPipe landmarks, the real ICT fit: the prior changes, nothing else does."""
    from facenormals.training.loaders import load_item

    found = frontal_renders_with_priors(shared_data, tmp_path / "frontal")

    def item(share: float) -> dict[str, np.ndarray]:
        augment = AugmentSection(prior_dropout=0.0, prior_from_truth=share)
        return load_item(found[0], 128, np.random.default_rng([3]), augment, "ict-fit")

    plain, pulled = item(0.0), item(1.0)
    for key in ("image", "normals", "mask"):
        np.testing.assert_array_equal(plain[key], pulled[key])
    np.testing.assert_array_equal(plain["prior"][3], pulled["prior"][3])  # the stored face's coverage
    assert not np.array_equal(plain["prior"][:3], pulled["prior"][:3])
    drawn = np.linalg.norm(plain["prior"][:3], axis=0) > 0.5  # zero only where the warp left the source crop
    np.testing.assert_allclose(np.linalg.norm(pulled["prior"][:3], axis=0)[drawn], 1.0, atol=1e-4)
