"""The face's parts from real MediaPipe landmarks (the astronaut photo), and ``eval --diagnose``'s split by part."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facenormals import mesh_prior
from facenormals.conventions import angular_error_deg, sphere_normals
from facenormals.faces import mesh_to_pixels
from facenormals.geometry import face_crop
from facenormals.training.diagnose import SetDiagnosis, decompose
from facenormals.training.face_parts import PART_NAMES, REST, face_part_masks


@pytest.fixture(scope="module")
def crop_points(astronaut_landmarks) -> tuple[np.ndarray, np.ndarray]:
    """The astronaut's landmarks (conftest) as crop points on the paper's crop, and the crop's mask."""
    image, landmarks = astronaut_landmarks
    crop = face_crop(image, mesh_to_pixels(landmarks, image.shape[1], image.shape[0], np.float64)[0])
    return mesh_prior.landmarks_in_crop(landmarks, image.shape, crop.matrix), crop.mask.astype(bool)


def _centre(region: np.ndarray) -> tuple[float, float]:
    rows, cols = np.nonzero(region)
    return float(rows.mean()), float(cols.mean())


def test_parts_tile_the_mask_where_a_face_has_them(crop_points) -> None:
    points, mask = crop_points
    parts = face_part_masks(points, mask)
    assert list(parts) == [*PART_NAMES, REST]
    stacked = np.stack(list(parts.values()))
    assert (stacked.sum(axis=0) == mask).all()  # disjoint, and together exactly the mask
    assert all(region.sum() > 50 for region in parts.values())
    rows = {name: _centre(region)[0] for name, region in parts.items()}
    assert rows["brows"] < rows["eyes"] < rows["nose"] < rows["mouth"]  # top to bottom on the crop
    # both eyes: pixels on either side of the nose's centre column, none on it
    nose_col = _centre(parts["nose"])[1]
    eye_cols = np.nonzero(parts["eyes"])[1]
    assert (eye_cols < nose_col - 5).sum() > 20 and (eye_cols > nose_col + 5).sum() > 20
    assert not parts["eyes"][:, round(nose_col)].any()
    assert parts[REST].sum() > 0.6 * mask.sum()  # cheeks, forehead and jaw are most of the face


def test_parts_need_the_mesh_landmarks(crop_points) -> None:
    points, mask = crop_points
    with pytest.raises(ValueError, match="468"):
        face_part_masks(points[:100], mask)


def test_an_error_in_the_mouth_only_shows_in_the_mouth(crop_points) -> None:
    points, mask = crop_points
    truth, _ = sphere_normals(mask.shape[0], radius_frac=0.7)
    parts = face_part_masks(points, mask)
    turn, _ = cv2.Rodrigues(np.array([[np.radians(12.0)], [0.0], [0.0]]))
    pred = truth.copy()
    pred[parts["mouth"]] = truth[parts["mouth"]] @ turn.T.astype(np.float32)
    expected = float(angular_error_deg(pred, truth)[parts["mouth"]].mean())
    assert 10.0 < expected <= 12.0  # the turn about x moves each normal by up to 12°

    split = decompose(pred, truth, mask, points=points)
    assert split.face_parts["mouth"]["mean_deg"] == pytest.approx(expected, abs=1e-4)
    for name in ("eyes", "brows", "nose", REST):
        assert split.face_parts[name]["mean_deg"] < 1e-3
    assert sum(split.face_part_pixels.values()) == mask.sum()

    with_points = SetDiagnosis(points_of=lambda name, shape: points)
    with_points.add("a", pred, truth, mask)
    result = with_points.result()["face_parts"]
    assert result["mouth"]["mean_deg"] == pytest.approx(expected, abs=1e-4)
    assert sum(e["pixel_pct"] for e in result.values()) == pytest.approx(100.0)
    assert result["mouth"]["pixel_pct"] == pytest.approx(100.0 * parts["mouth"].sum() / mask.sum())

    without = SetDiagnosis(points_of=lambda name, shape: None)  # a sample with no stored landmarks: no split
    without.add("a", pred, truth, mask)
    assert "face_parts" not in without.result()
