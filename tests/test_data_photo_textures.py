"""Photo textures: real skin colours read off a photo onto ICT's topology, de-lit, and worn by rendered faces."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from facenormals import ict_fit
from facenormals.fileio import DataError
from facenormals.mesh_prior import vertex_normals
from facenormals.training.data import albedo
from facenormals.training.data import cli as data_cli
from facenormals.training.data import photo_textures as pt

SIZE = 320


def _posed_face(face: ict_fit.IctFace, yaw_deg: float) -> np.ndarray:
    """The neutral ICT face turned by ``yaw_deg`` in a SIZE² image's crop frame (x right, y up, z to the camera)."""
    yaw = np.radians(yaw_deg)
    rot = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    centre = face.neutral[~face_eyeballs()].mean(0)
    return 11.0 * (face.neutral - centre) @ rot.T + np.array([SIZE / 2, -SIZE / 2, 0.0])


def face_eyeballs() -> np.ndarray:
    return np.load(ict_fit.ASSET, allow_pickle=False)["eyeball"]


def _checker(face: ict_fit.IctFace) -> np.ndarray:
    """A colour pattern on the model (1 cm checks of two colours, linear RGB) with no relation to the normals."""
    cells = np.floor(face.neutral[:, :2] / 1.0).astype(int).sum(1) % 2
    return np.where(cells[:, None] == 1, [0.5, 0.25, 0.15], [0.2, 0.3, 0.4]).astype(np.float32)


def _splat_image(points: np.ndarray, colors_linear: np.ndarray) -> np.ndarray:
    """An sRGB uint8 picture of the vertices, far to near, each a 3×3 dot (dense enough at this scale)."""
    image = np.full((SIZE, SIZE, 3), 0.05, np.float32)
    srgb = albedo.linear_to_srgb(colors_linear)
    for i in np.argsort(points[:, 2]):
        x, y = round(points[i, 0]), round(-points[i, 1])
        image[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2] = srgb[i]
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def face() -> ict_fit.IctFace:
    return ict_fit.load_ict_face()


def test_colours_are_read_back_from_where_the_fitted_face_lies(face):
    points = _posed_face(face, 0.0)
    truth = _checker(face)
    image = _splat_image(points, truth)
    landmarks = face.landmark_points(points)
    colors, valid = pt.texture_from_face(image, np.stack([landmarks[:, 0], -landmarks[:, 1]], 1), -landmarks[:, 2],
                                         ~face_eyeballs())
    assert not valid[face_eyeballs()].any()
    assert valid.sum() > 0.25 * (~face_eyeballs()).sum()  # the face inside the landmarks' hull
    # each valid vertex has its own check's colour (a few straddle a check's edge)
    same = np.linalg.norm(colors[valid] - truth[valid], axis=1) < 0.08
    assert same.mean() > 0.85


def test_the_far_cheek_of_a_turned_face_is_not_read(face):
    points = _posed_face(face, 55.0)
    normals = vertex_normals(points, face.triangles)
    seen = pt.visible_vertices(points, normals, face.triangles)
    model_x = face.neutral[:, 0] - face.neutral[~face_eyeballs(), 0].mean()
    # yaw > 0 turns the model's +x half away from the camera
    far, near = (model_x > 4.0) & ~face_eyeballs(), (model_x < -4.0) & ~face_eyeballs()
    assert seen[near].mean() > 0.5 and seen[far].mean() < 0.05


def test_a_vertex_hidden_behind_an_occluder_is_not_seen():
    # two parallel squares facing the camera; the near one covers the left half of the far one
    grid = np.stack(np.meshgrid(np.arange(0.0, 20.0), np.arange(0.0, 20.0)), -1).reshape(-1, 2)
    far = np.concatenate([grid, np.zeros((len(grid), 1))], 1)
    near = np.concatenate([grid * [0.5, 1.0] - [0.5, 0.0], np.full((len(grid), 1), 5.0)], 1)
    points = np.concatenate([far, near])
    quads = [(r * 20 + c, r * 20 + c + 1, (r + 1) * 20 + c) for r in range(19) for c in range(19)]
    triangles = np.array(quads + [tuple(np.add(q, len(grid))) for q in quads])
    normals = np.tile([0.0, 0.0, 1.0], (len(points), 1))
    seen = pt.visible_vertices(points, normals, triangles)
    assert seen[len(grid):].all()
    assert not seen[:len(grid)][grid[:, 0] < 8].any() and seen[:len(grid)][grid[:, 0] > 11].all()


def test_the_photos_own_light_is_divided_out():
    rng = np.random.default_rng(0)
    normals = rng.normal(size=(4000, 3))
    normals[:, 2] = np.abs(normals[:, 2]) + 0.5
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    albedo = np.where(rng.random(4000)[:, None] < 0.5, [0.5, 0.3, 0.2], [0.3, 0.2, 0.15]).astype(np.float32)
    light = np.array([0.6, 0.3, 0.7]) / np.linalg.norm([0.6, 0.3, 0.7])
    shading = 1.0 + 0.45 * normals @ light  # 0.55–1.45: within the correction's clamp
    lit = albedo * shading[:, None].astype(np.float32)
    out = pt.delight(lit, normals)
    # what is left is the albedo up to one brightness factor: the two colours come back, each nearly constant
    spread = lambda r: float(np.std(r) / np.mean(r))  # noqa: E731
    assert spread(lit[:, 0] / albedo[:, 0]) > 0.1 and spread(out[:, 0] / albedo[:, 0]) < 0.02
    assert abs(pt.luminance(out).mean() - pt.luminance(lit).mean()) < 0.05 * pt.luminance(lit).mean()


def test_skin_is_read_away_from_the_eyes_mouth_and_outline(face):
    points = _posed_face(face, 0.0)
    landmarks = face.landmark_points(points)
    px = np.stack([landmarks[:, 0], -landmarks[:, 1]], 1)
    mask = pt.skin_in_photo(px, (SIZE, SIZE, 3))
    at = lambda i: mask[round(px[i, 1]), round(px[i, 0])]  # noqa: E731
    assert at(4) == 1  # the nose tip
    assert at(159) == 0 and at(386) == 0  # on the upper lids' opening
    assert at(13) == 0 and at(14) == 0  # the lips' inner edge
    assert at(10) == 0 and at(152) == 0  # the outline: forehead top, chin


def test_bank_round_trip_and_bad_files_are_named(tmp_path):
    rng = np.random.default_rng(1)
    textures = [pt.PhotoTexture(f"f{i}", "g" if i < 2 else "h", rng.random((50, 3)).astype(np.float32),
                                rng.random(50) < 0.5) for i in range(3)]
    path = pt.save_bank(tmp_path / "bank.npz", textures)
    back = pt.load_bank(path)
    assert [t.name for t in back] == ["f0", "f1", "f2"] and [t.group for t in back] == ["g", "g", "h"]
    for a, b in zip(textures, back, strict=True):
        assert np.array_equal(a.valid, b.valid) and np.allclose(a.colors, b.colors, atol=1e-3)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a bank")
    with pytest.raises(DataError, match=r"junk\.npz"):
        pt.load_bank(junk)
    with pytest.raises(DataError, match=r"missing\.npz"):
        pt.load_bank(tmp_path / "missing.npz")
    with pytest.raises(DataError, match="nothing to write"):
        pt.save_bank(tmp_path / "empty.npz", [])


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    data_cli.add_arguments(parser)
    return data_cli.main(parser.parse_args(list(argv)))


@pytest.mark.shared
def test_faces_in_real_photos_dress_rendered_faces(shared_data, tmp_path):
    bank = tmp_path / "bank.npz"
    assert _cli("textures", "--in", str(shared_data / "photos"), "--out", str(bank)) == 0
    textures = pt.load_bank(bank)
    assert len({t.group for t in textures}) >= 4  # obama, biden, two_people ×2, ...
    for texture in textures:
        skin = texture.colors[texture.valid]
        assert 0.0 < np.median(pt.luminance(skin)) < 0.8 and (texture.colors[~texture.valid] == 0).all()
    with pytest.raises(Exception, match="already exists"):
        _cli("textures", "--in", str(shared_data / "photos"), "--out", str(bank))
    out = tmp_path / "ict"
    ict = str(shared_data / "ict-facekit" / "ict_facekit.npz")
    common = ("render", "--source", "ict", "--ict", ict, "--count", "4", "--seed", "3", "--workers", "1",
              "--size", "96", "--no-contact-sheet", "--backgrounds")
    assert _cli(*common, "--out", str(out), "--photo-textures", str(bank), "--p-photo", "1.0") == 0
    params = [json.loads(p.read_text()) for p in sorted((out / "params").glob("*.json"))]
    assert [p["albedo"] for p in params] == ["photo"] * 4
    assert all(p["texture"] in {t.name for t in textures} for p in params)
    # the same seed without a bank draws the same identities (the skin is drawn after the shape)
    plain = tmp_path / "plain"
    assert _cli(*common, "--out", str(plain)) == 0
    a = [json.loads(p.read_text()) for p in sorted((plain / "params").glob("*.json"))]
    assert [p["albedo"] for p in a] == ["procedural"] * 4
    assert [p["identity_norm"] for p in a] == [p["identity_norm"] for p in params]
    with pytest.raises(DataError, match=r"nope\.npz"):
        _cli(*common, "--out", str(tmp_path / "x"), "--photo-textures", str(tmp_path / "nope.npz"))
