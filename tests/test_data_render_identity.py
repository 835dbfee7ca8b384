"""The data engine's speed-ups (issue 14, 2026-12-03) change no bit of what it renders.

Two levels: each compiled or restricted kernel against the former numpy code it replaced (kept here as the
reference), on real meshes and random inputs; and whole samples (image, normals, mask, depth, params) of five
settings against the fingerprints of the code before the speed-up (benchmarks/results/render_fingerprints.json),
where the numeric stack is one that recorded them.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import trimesh

from facenormals.conventions import normalize
from facenormals.training.data import augment, lighting
from facenormals.training.data.lighting import EYE_EXPONENT, SCATTER_TINT, Lighting, sample_lighting, sh_basis
from facenormals.training.data.renderer import rasterize, vertex_normals

FINGERPRINTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "render_fingerprints.json"


# --- the former numpy implementations (the reference) ---------------------------------------------------------

def _former_vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    normals = np.zeros_like(v)
    for k in range(3):
        for axis in range(3):
            normals[:, axis] += np.bincount(f[:, k], weights=fn[:, axis], minlength=len(v))
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return (normals / np.maximum(length, 1e-12)).astype(np.float32)


def _former_barycentrics(tri, xy, z, faces, perspective):
    height, width = tri.shape
    bary = np.zeros((height, width, 3), dtype=np.float32)
    depth = np.zeros((height, width), dtype=np.float32)
    rows, cols = np.nonzero(tri >= 0)
    f = np.asarray(faces, np.int64)[tri[rows, cols]]
    a, b, c = xy[f[:, 0]], xy[f[:, 1]], xy[f[:, 2]]
    px, py = cols.astype(np.float64), rows.astype(np.float64)
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    w_a = ((b[:, 0] - px) * (c[:, 1] - py) - (b[:, 1] - py) * (c[:, 0] - px)) / area
    w_b = ((c[:, 0] - px) * (a[:, 1] - py) - (c[:, 1] - py) * (a[:, 0] - px)) / area
    screen = np.clip(np.stack([w_a, w_b, 1.0 - w_a - w_b], axis=1), 0.0, 1.0)
    if perspective:
        persp = screen / z[f]
        inv_depth = persp.sum(axis=1, keepdims=True)
        bary[rows, cols] = (persp / inv_depth).astype(np.float32)
        depth[rows, cols] = (1.0 / inv_depth[:, 0]).astype(np.float32)
    else:
        bary[rows, cols] = screen.astype(np.float32)
        depth[rows, cols] = np.sum(screen * z[f], axis=1).astype(np.float32)
    return bary, depth


def _former_shade(normals, albedo, light, shadow=None, specular_mask=None, view=None, wet=None):
    irradiance = np.maximum(sh_basis(normals) @ light.sh, 0.0)
    ndotl = normals @ light.direction
    cosine = np.clip(ndotl, 0.0, None)
    direct = cosine[:, None] * light.color[None, :]
    if light.wrap > 0:
        wrapped = np.clip((ndotl + light.wrap) / (1 + light.wrap), 0.0, None)
        direct = direct + (wrapped - cosine)[:, None] * (light.color * SCATTER_TINT)[None, :]
    if shadow is not None:
        direct = direct * shadow[:, None]
    radiance = albedo * (irradiance + light.intensity * direct)
    if light.specular > 0 and light.intensity > 0:
        v = view if view is not None else np.broadcast_to(np.array([0, 0, 1], np.float32), normals.shape)
        half = normalize(v + light.direction[None, :])
        spec = np.clip(np.sum(normals * half, axis=1), 0.0, None) ** light.shininess * (cosine > 0)
        spec = spec * (light.shininess + 8) / (8 * np.pi)
        weight = light.specular * (specular_mask if specular_mask is not None else 1.0)
        if shadow is not None:
            spec = spec * shadow
        radiance = radiance + (light.intensity * spec * weight)[:, None] * light.color[None, :]
    if wet is not None and light.intensity > 0:
        v = view if view is not None else np.broadcast_to(np.array([0, 0, 1], np.float32), normals.shape)
        half = normalize(v + light.direction[None, :])
        glint = np.clip(np.sum(normals * half, axis=1), 0.0, None) ** EYE_EXPONENT * (cosine > 0)
        glint = glint * (EYE_EXPONENT + 8) / (8 * np.pi) * 0.02 * wet
        if shadow is not None:
            glint = glint * shadow
        radiance = radiance + (light.intensity * glint)[:, None] * light.color[None, :]
    return radiance.astype(np.float32)


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# --- kernels against the former code ---------------------------------------------------------------------------

def _bumpy_head(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An icosphere with random bumps: self-occluding, uneven triangles (ties and slivers included)."""
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=9.0)
    verts = np.asarray(sphere.vertices, np.float64)
    verts *= (1 + 0.08 * np.sin(verts @ rng.standard_normal((3, 4)) / 2).sum(1, keepdims=True) / 4)
    return verts.astype(np.float32), np.asarray(sphere.faces, np.int32)


@pytest.mark.parametrize("perspective", [True, False])
def test_rasteriser_kernels_match_the_former_numpy_code_bit_for_bit(perspective):
    rng = np.random.default_rng(5)
    verts, faces = _bumpy_head(rng)
    assert _same_bits(vertex_normals(verts, faces), _former_vertex_normals(verts, faces))
    for _ in range(3):
        rot, _jac = cv2.Rodrigues(rng.standard_normal(3))
        posed = verts @ rot.T.astype(np.float32) + np.array([0, 0, -60], np.float32)
        depth = -posed[:, 2].astype(np.float64)
        scale = 450.0 / (depth if perspective else 60.0)  # focal 450 px, or weak perspective at the mean depth
        xy = np.stack([96 + scale * posed[:, 0], 96 - scale * posed[:, 1]], 1).astype(np.float64)
        frags = rasterize(xy, depth, faces, (192, 192), perspective=perspective)
        assert frags.covered.sum() > 5000
        bary, dep = _former_barycentrics(frags.tri, xy, depth, faces, perspective)
        assert _same_bits(frags.bary, bary) and _same_bits(frags.depth, dep)
        values = np.hstack([vertex_normals(posed, faces), posed, rng.random((len(verts), 2), dtype=np.float32)])
        b = bary.reshape(-1, 3)[frags.covered.reshape(-1)]
        ids = faces[frags.tri[frags.covered]]
        former = np.zeros((192, 192, values.shape[1]), np.float32)
        former[frags.covered] = (b[:, 0:1] * values[ids[:, 0]] + b[:, 1:2] * values[ids[:, 1]]
                                 + b[:, 2:3] * values[ids[:, 2]])
        assert _same_bits(frags.interpolate_vertices(values, faces), former)


def test_shading_matches_the_former_code_bit_for_bit():
    rng = np.random.default_rng(11)
    n = 20_000
    normals = normalize(rng.standard_normal((n, 3)).astype(np.float32))
    albedo = rng.random((n, 3), dtype=np.float32)
    view = normalize(rng.standard_normal((n, 3)).astype(np.float32) + np.array([0, 0, 3], np.float32))
    wet = np.where(rng.random(n) < 0.05, rng.random(n), 0.0).astype(np.float32)  # eyes: a few wet pixels
    shadow = rng.random(n).astype(np.float32)
    checked = 0
    for seed in range(40):
        light = sample_lighting(np.random.default_rng(seed), harsh=seed % 4 == 0)
        for extra in ({}, {"shadow": shadow}, {"view": view, "wet": wet}, {"view": view, "wet": wet, "shadow": shadow,
                                                                           "specular_mask": albedo[:, 0]},
                      {"wet": wet}):
            assert _same_bits(lighting.shade(normals, albedo, light, **extra),
                              _former_shade(normals, albedo, light, **extra)), (seed, sorted(extra))
            checked += light.specular > 0
    assert checked > 50  # the specular branch (shared half vector) was exercised, not only the catchlight
    dim = Lighting(np.array([0.0, 0.0, 1.0], np.float32), 0.0, np.ones(3, np.float32))  # no direct light: no glint
    assert _same_bits(lighting.shade(normals, albedo, dim, wet=wet), _former_shade(normals, albedo, dim, wet=wet))


def test_tone_map_of_the_lit_pixels_equals_that_of_the_whole_image():
    rng = np.random.default_rng(2)
    lit = rng.random((64, 64)) < 0.4
    image = np.zeros((64, 64, 3), np.float32)
    image[lit] = rng.random((int(lit.sum()), 3), dtype=np.float32) * 3
    face = lit & (rng.random((64, 64)) < 0.7)
    full, full_params = augment.tone_map(image, face, np.random.default_rng(9), 0.2)
    pixels, params = augment.tone_map(image[lit], face[lit], np.random.default_rng(9), 0.2)
    assert params == full_params and _same_bits(pixels, full[lit]) and not full[~lit].any()
    nothing = np.zeros((8, 8), bool)
    black, black_params = augment.tone_map(np.zeros((8, 8, 3), np.float32), nothing, np.random.default_rng(9))
    empty, empty_params = augment.tone_map(np.zeros((0, 3), np.float32), nothing[nothing], np.random.default_rng(9))
    assert empty_params == black_params and empty.shape == (0, 3) and not black.any()


@pytest.mark.shared
def test_ict_fold_checks_and_albedo_blends_keep_their_bits(shared_data):
    from facenormals.training.data import albedo, ict

    model = ict.IctModel(shared_data / "ict-facekit" / "ict_facekit.npz")
    faces, _ids, local, reference = model._face_triangles
    neutral, basis = model._face_identity_basis
    rng = np.random.default_rng(3)
    for _ in range(20):
        w_id = (rng.standard_normal(100) * rng.uniform(1.0, 3.0)).astype(np.float32)
        face_vertices = neutral + (w_id @ basis).reshape(-1, 3)
        former = float((np.sum(ict._triangle_normals(face_vertices, local) * reference, axis=1) < 0).mean())
        assert model.identity_folded_share(w_id) == former
        head = model.build(w_id, np.zeros(len(model.expression_basis), np.float32))
        former = float((np.sum(ict._triangle_normals(head, faces) * reference, axis=1) < 0).mean())
        assert model.folded_share(head) == former
    layout = albedo.face_layout(model)
    weights = {"beard": layout.beard, "lips": layout.lips, "brows": layout.brows, "lid_margin": layout.lid_margin,
               "eyes": np.clip(layout.sclera + layout.iris, 0, 1), "mouth_inside": layout.mouth_inside,
               "teeth": layout.teeth, "mouth": np.clip(layout.teeth + layout.mouth_inside, 0, 1),
               "socket": layout.socket}
    for name, weight in weights.items():
        ids = layout.support[name]
        assert 0 < len(ids) < len(weight) and not np.delete(weight, ids).any(), name  # all of the weight, only it
        base = rng.random((len(weight), 3), dtype=np.float32)
        color = rng.random(3, dtype=np.float32) * np.float32(0.8)
        blended = base.copy()
        albedo._blend(blended, ids, weight * np.float32(0.7), color)
        w = (weight * np.float32(0.7))[:, None]
        assert _same_bits(blended, base * (1 - w) + color * w), name


# --- whole samples against the code before the speed-up -------------------------------------------------------

@pytest.mark.shared
@pytest.mark.slow  # ~15 renders at 256² plus the James texture transfer's set-up
def test_renders_reproduce_the_fingerprints_of_the_code_before_the_speed_up(shared_data, tmp_path):
    from facenormals.benchmarks import render_fingerprint

    recorded = json.loads(FINGERPRINTS.read_text())
    here = render_fingerprint.platform_key()
    record = render_fingerprint.record_for(recorded, here)
    if record is None:
        stacks = [r["platform"] for r in recorded["records"]]
        pytest.skip(f"fingerprints were recorded on {stacks}, this is {here}: BLAS and vector code may round "
                    "differently here (the kernel tests above still check equal bits)")
    now = render_fingerprint.fingerprints(shared_data.parent, tmp_path)
    assert now.keys() == record["fingerprints"].keys()
    for name, samples in record["fingerprints"].items():
        for index, digest in enumerate(samples):
            changed = sorted(key for key in digest if now[name][index].get(key) != digest[key])
            assert not changed, f"{name} sample {index}: {changed} differ from the code before the speed-up"
