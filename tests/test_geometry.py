import numpy as np
import pytest

from facenormals.geometry import box_from_mask, face_crop, hull_mask, paste_back, square_box, transform_points


def _frame(rng, h=360, w=480):
    return rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)


def test_square_box_is_1_2_times_tightest_square():
    points = np.array([[10, 20], [110, 20], [60, 70]], dtype=np.float32)
    box = square_box(points)
    assert (box.cx, box.cy) == (60, 45)
    assert box.side == pytest.approx(120.0)


def test_crop_maps_landmarks_inside_and_centred(rng):
    frame = _frame(rng)
    landmarks = rng.uniform([150, 100], [300, 260], size=(40, 2))
    crop = face_crop(frame, landmarks, size=256)
    inside = transform_points(landmarks, crop.matrix)
    lo, hi = inside.min(0), inside.max(0)
    # the landmark extent spans 1/1.2 of the crop along its longer axis, centred
    assert (hi - lo).max() == pytest.approx(256 / 1.2, rel=1e-3)
    assert ((lo + hi) / 2) == pytest.approx([127.5, 127.5], abs=1e-3)
    assert crop.mask.any() and crop.mask.mean() < 0.7


def test_crop_pads_outside_frame(rng):
    frame = np.full((100, 100, 3), 200, np.uint8)
    crop = face_crop(frame, np.array([[-30.0, -30.0], [40.0, 40.0]]), size=64)
    assert crop.image[0, 0].tolist() == [0, 0, 0]
    assert crop.image[-1, -1].tolist() == [200, 200, 200]


def test_crop_pixels_match_frame(rng):
    frame = _frame(rng, 400, 400)
    # tightest square 256/1.2 centred so that the crop's frame edge is pixel 72's edge: an integer shift
    half = 256 / 1.2 / 2
    centre = 72 - 0.5 + 128
    points = np.array([[centre - half, centre - half], [centre + half, centre + half]])
    box = square_box(points)
    crop = face_crop(frame, points, size=256)
    x0 = round(box.cx - box.side / 2 + 0.5)
    y0 = round(box.cy - box.side / 2 + 0.5)
    assert box.side == pytest.approx(256.0)
    np.testing.assert_array_equal(crop.image[10:-10, 10:-10], frame[y0 + 10:y0 + 246, x0 + 10:x0 + 246])


def test_paste_back_round_trip(rng):
    frame = _frame(rng)
    landmarks = rng.uniform([150, 100], [300, 260], size=(60, 2))
    crop = face_crop(frame, landmarks, size=256)
    normals = np.zeros((256, 256, 3), np.float32)
    normals[..., 0] = 0.6
    normals[..., 2] = 0.8
    pasted, valid = paste_back(normals, crop.mask, crop.matrix, frame.shape[:2])
    expected = hull_mask(landmarks, frame.shape[:2])
    overlap = (valid & expected).sum() / max(1, (valid | expected).sum())
    assert overlap > 0.95
    assert np.allclose(pasted[valid], [0.6, 0.0, 0.8], atol=1e-5)
    assert np.isnan(pasted[~valid]).all()


def test_box_from_mask_matches_points():
    mask = np.zeros((200, 200), bool)
    mask[50:150, 80:120] = True
    box = box_from_mask(mask)
    assert box.side == pytest.approx(120.0) and (box.cx, box.cy) == (99.5, 99.5)


@pytest.mark.parametrize("bad", [np.zeros((1, 2)), np.zeros((5, 3)), np.full((4, 2), np.nan), np.ones((4, 2))])
def test_bad_landmarks(bad):
    with pytest.raises(ValueError):
        square_box(bad)


def test_paste_back_renormalises_exactly_like_numpy(rng):
    """The one-pass renormalisation gives the bytes of the numpy formula it replaced: valid where the warped mask
    > 0.5 and |n| > 1e-3, n / max(|n|, 1e-6) there, NaN elsewhere (zero normals and a partial mask included)."""
    import cv2

    from facenormals.geometry import invert_affine

    normals = (rng.standard_normal((64, 64, 3)) * 0.5).astype(np.float32)
    normals[rng.random((64, 64)) < 0.1] = 0.0
    mask = np.zeros((64, 64), bool)
    mask[8:56, 12:50] = True
    matrix = np.array([[0.7, 0.0, -11.3], [0.0, 0.7, -6.6]])
    got, valid = paste_back(normals, mask, matrix, (60, 70))
    inverse = invert_affine(matrix)
    warped = cv2.warpAffine(normals, inverse, (70, 60), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    weight = cv2.warpAffine(mask.astype(np.float32), inverse, (70, 60), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT)
    length = np.linalg.norm(warped, axis=2, keepdims=True)
    expected_valid = (weight > 0.5) & (length[..., 0] > 1e-3)
    expected = warped / np.maximum(length, 1e-6)
    expected[~expected_valid] = np.nan
    assert 0 < expected_valid.sum() < expected_valid.size
    np.testing.assert_array_equal(valid, expected_valid)
    assert got.dtype == np.float32 and got.tobytes() == expected.tobytes()
