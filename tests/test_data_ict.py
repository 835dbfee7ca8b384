"""ICT renders: the mask agrees with MediaPipe's landmark hull (the realtime path's mask), covers the face and
not the background; ranges of the paper's protocol are honoured. Needs ../shared (ICT-FaceKit)."""

from __future__ import annotations

import numpy as np
import pytest

from facenormals.faces import FaceMesh
from facenormals.geometry import hull_mask
from facenormals.training.data.jobs import sample_rng
from facenormals.training.data.synth import RenderSettings, render

pytestmark = pytest.mark.shared  # the ICT-FaceKit model


@pytest.fixture(scope="module")
def ict_source(shared_data):
    from facenormals.training.data.sources import IctSource

    return IctSource(shared_data / "ict-facekit" / "ict_facekit.npz")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_mask_matches_mediapipe_landmark_hull(ict_source):
    landmarker = FaceMesh(max_faces=1)
    settings = RenderSettings(size=256, max_angle=np.radians(20), crop_jitter=False)
    ious = []
    for index in range(6):
        rng = sample_rng(77, index)
        result = render(ict_source.sample(rng), settings, rng, None)
        faces = [found.points for found in landmarker.find(result.image)]
        if not faces:
            continue
        mp_mask = hull_mask(faces[0], result.mask.shape)
        ious.append(_iou(result.mask, mp_mask))
    landmarker.close()
    assert len(ious) >= 4, "MediaPipe should find the face on most renders"
    assert np.mean(ious) > 0.8 and min(ious) > 0.7, ious


def test_mask_covers_the_face_not_the_background(ict_source):
    settings = RenderSettings(size=128)
    for index in range(4):
        rng = sample_rng(5, index)
        mesh = ict_source.sample(rng)
        result = render(mesh, settings, rng, None)
        mask = result.mask
        assert 0.3 < mask.mean() < 0.85
        assert (result.depth_mm[mask] > 0).all()  # only rendered surface, never background
        assert not mask[0, 0] and not mask[0, -1]  # crop corners are background or hair
        n = result.normals[mask]
        assert np.allclose(np.linalg.norm(n, axis=1), 1, atol=1e-3)
        assert (n[:, 2] > -0.05).mean() > 0.99  # visible surface faces the camera
        assert (result.normals[~mask] == 0).all()


def test_pose_and_light_ranges(ict_source):
    settings = RenderSettings(size=64)
    for index in range(12):
        rng = sample_rng(3, index)
        p = render(ict_source.sample(rng), settings, rng, None).params
        assert abs(p["rotation_angle_deg"]) <= 45.0
        assert p["light_dir"][2] > 0 and 0.0 <= p["light_intensity"] <= 2.0
        rot = np.array(p["rotation_matrix"])
        angle = np.degrees(np.arccos(np.clip((np.trace(rot) - 1) / 2, -1, 1)))
        assert angle == pytest.approx(abs(p["rotation_angle_deg"]), abs=1e-2)


def test_same_seed_same_render(ict_source):
    def once(index: int):
        rng = sample_rng(1, index)
        return render(ict_source.sample(rng), RenderSettings(size=64), rng, None)

    b, c, d = once(7), once(7), once(8)
    assert np.array_equal(b.image, c.image) and np.array_equal(b.normals, c.normals) and b.params == c.params
    assert not np.array_equal(b.normals, d.normals)


def test_a_sample_is_regenerated_from_its_seed_and_a_wrong_seed_is_caught(ict_source, tmp_path):
    from facenormals.fileio import DataError

    drawn = ict_source.sample(sample_rng(12, 4), with_albedo=False)
    stored = drawn.params
    assert drawn.identity is not None and len(drawn.identity) == 100
    assert stored["identity_norm"] == pytest.approx(np.linalg.norm(drawn.identity), abs=1e-3)
    again = ict_source.regenerate(12, 4, stored, tmp_path / "ict_000004.json")
    np.testing.assert_array_equal(again.identity, drawn.identity)
    with pytest.raises(DataError, match=r"ict_000004\.json: the regenerated face differs"):
        ict_source.regenerate(13, 4, stored, tmp_path / "ict_000004.json")


def test_a_near_neutral_set_is_regenerated_without_its_share(shared_data, tmp_path):
    """Sets rendered with --mild-expressions draw the near-neutral choice before the identity: a source without the
    share (what the identity map's trainer and the headroom benchmark build) replays it from the params."""
    from facenormals.training.data.sources import IctSource

    path = shared_data / "ict-facekit" / "ict_facekit.npz"
    mild_source, plain_source = IctSource(path, mild_expressions=0.5), IctSource(path)
    drawn = [mild_source.sample(sample_rng(91, i), with_albedo=False) for i in range(8)]
    scales = [d.params["expression_scale"] for d in drawn]
    assert min(scales) < 1.0 and max(scales) == 1.0  # both kinds among them
    for index, face in enumerate(drawn):
        again = plain_source.regenerate(91, index, face.params, tmp_path / f"ict_{index:06d}.json")
        np.testing.assert_array_equal(again.identity, face.identity)
        assert again.params["expressions"] == face.params["expressions"]
        assert again.params["expression_scale"] == face.params["expression_scale"]
    # and a source with the share regenerates a set rendered without one
    plain = plain_source.sample(sample_rng(91, 0), with_albedo=False)
    again = mild_source.regenerate(91, 0, plain.params, tmp_path / "ict_000000.json")
    np.testing.assert_array_equal(again.identity, plain.identity)
