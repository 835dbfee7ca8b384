"""Per-vertex albedo for ICT faces: a procedural skin model, and texture transfer from a textured scan.

Colours are linear RGB in [0, 1]. The procedural model varies skin tone (the Monk Skin Tone scale, light to
dark), adds low-frequency blotches and redness, and paints lips, brows, stubble, hair, eyes and the mouth
from ICT's region labels and 68 landmarks (computed once on the neutral head, so they follow expressions).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

from facenormals.training.data import ict

# Monk Skin Tone scale (Google, 2022), sRGB: tones 1 (lightest) … 10 (darkest).
MONK_SRGB = np.array([[246, 237, 228], [243, 231, 219], [247, 234, 208], [234, 218, 186], [215, 189, 150],
                      [160, 126, 86], [130, 92, 67], [96, 65, 52], [58, 49, 42], [41, 36, 32]], np.float32) / 255.0
HAIR_SRGB = np.array([[20, 16, 14], [45, 32, 25], [75, 52, 36], [110, 80, 55], [160, 125, 85], [200, 170, 120],
                      [120, 60, 35], [150, 150, 150], [215, 215, 210]], np.float32) / 255.0
HAIR_P = np.array([0.3, 0.22, 0.16, 0.1, 0.06, 0.04, 0.04, 0.05, 0.03])
IRIS_SRGB = np.array([[60, 35, 20], [100, 65, 35], [90, 110, 140], [80, 110, 70], [130, 110, 70]], np.float32) / 255.0


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055).astype(np.float32)


@dataclass
class FaceLayout:
    """Static per-vertex weights of facial features on the ICT topology (computed once per model)."""

    lips: np.ndarray
    brows: np.ndarray
    lid_margin: np.ndarray  # lashes and lid edge around the eye opening
    cheeks: np.ndarray
    nose: np.ndarray
    under_eye: np.ndarray
    beard: np.ndarray
    t_zone: np.ndarray
    pupil: np.ndarray  # 1 at the pupil, 0 elsewhere on the iris
    iris: np.ndarray
    sclera: np.ndarray
    mouth_inside: np.ndarray
    teeth: np.ndarray
    socket: np.ndarray
    mouth_ao: np.ndarray  # 1 at the lips' opening, falling toward the throat: the mouth's occlusion
    skin: np.ndarray
    head_dir: np.ndarray  # unit direction of each vertex from the head centre (for hairlines)
    eye_radial: np.ndarray  # distance from the eyeball's optical axis (cm), eyeballs only
    bank_low: np.ndarray  # V×K smooth random fields, wavelength 3–9 cm (blotches)
    bank_mid: np.ndarray  # V×K, 1–5 cm (hairline, stubble)
    bank_high: np.ndarray  # V×K, 0.4–1.2 cm (hair strands)

    @cached_property
    def support(self) -> dict[str, np.ndarray]:
        """Vertex ids where each feature's weight is > 0. A blend base·(1 − w) + c·w leaves base's bits unchanged
        where w = 0, so blends touch only these (a tenth of the head or less)."""
        eyes = np.clip(self.sclera + self.iris, 0, 1)
        mouth = np.clip(self.teeth + self.mouth_inside, 0, 1)
        weights = {"beard": self.beard, "lips": self.lips, "brows": self.brows, "lid_margin": self.lid_margin,
                   "eyes": eyes, "mouth_inside": self.mouth_inside, "teeth": self.teeth, "mouth": mouth,
                   "socket": self.socket}
        return {name: np.flatnonzero(w > 0) for name, w in weights.items()}

    def field(self, bank: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A random unit-variance smooth field: a random combination of the precomputed plane waves."""
        w = rng.standard_normal(bank.shape[1]).astype(np.float32)
        return bank @ (w / np.linalg.norm(w))


def _soft(d: np.ndarray, radius: float, softness: float) -> np.ndarray:
    return np.clip((radius - d) / softness + 0.5, 0.0, 1.0).astype(np.float32)


def _dist_to_polyline(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    best = np.full(len(points), np.inf)
    for a, b in itertools.pairwise(line):
        ab = b - a
        t = np.clip(((points - a) @ ab) / max(ab @ ab, 1e-9), 0, 1)
        best = np.minimum(best, np.linalg.norm(points - (a + t[:, None] * ab), axis=1))
    return best


def face_layout(model: ict.IctModel) -> FaceLayout:
    v = model.neutral
    region = model.region
    lm = v[model.landmarks68]
    xy = v[:, :2]
    front = (region == ict.FACE) & (v[:, 2] > 2.0)
    # lips: inside the outer lip contour (landmarks 48–59) seen frontally, on the face skin
    lip_poly = np.round(lm[48:60, :2] * 100).astype(np.int32)
    inside = np.array([cv2.pointPolygonTest(lip_poly, (float(p[0] * 100), float(p[1] * 100)), True) for p in xy])
    lips = np.clip(inside / 25.0 + 0.5, 0, 1).astype(np.float32) * front * (v[:, 2] > 8.0)
    brow = np.zeros(len(v), np.float32)
    for lo, hi in ((17, 22), (22, 27)):
        line = lm[lo:hi, :2] + np.array([0, 0.15], np.float32)
        brow = np.maximum(brow, _soft(_dist_to_polyline(xy, line), 0.45, 0.35))
    brows = brow * front * (v[:, 2] > 6.0)
    lid = np.zeros(len(v), np.float32)
    for eye in (lm[36:42], lm[42:48]):
        loop = np.vstack([eye[:, :2], eye[:1, :2]])
        lid = np.maximum(lid, _soft(_dist_to_polyline(xy, loop), 0.22, 0.2))
    lid_margin = lid * (region == ict.FACE) * (v[:, 2] > 6.0)
    cheeks = np.zeros(len(v), np.float32)
    for a, b in ((2, 31), (14, 35)):
        centre = (lm[a] * 0.55 + lm[b] * 0.45)
        cheeks = np.maximum(cheeks, np.exp(-np.sum((v - centre) ** 2, 1) / (2 * 2.0 ** 2)))
    nose = np.exp(-np.sum((v - lm[30]) ** 2, 1) / (2 * 1.2 ** 2)).astype(np.float32)
    under_eye = np.zeros(len(v), np.float32)
    for eye in (lm[36:42], lm[42:48]):
        centre = eye.mean(0) + np.array([0, -0.9, -0.3], np.float32)
        under_eye = np.maximum(under_eye, np.exp(-np.sum((v - centre) ** 2 / np.array([1.6, 0.6, 1.6]) ** 2, 1) / 2))
    jaw_y = lm[33, 1]  # below the nose
    beard = ((region == ict.FACE) & (v[:, 1] < jaw_y) & (v[:, 2] > -1)).astype(np.float32) * (1 - lips)
    beard *= np.clip((np.abs(v[:, 0]) - 0.0) / 0.5, 0.3, 1.0)
    t_zone = (np.exp(-np.sum((v[:, :2] - lm[27, :2]) ** 2, 1) / (2 * 2.5 ** 2))
              + np.exp(-np.sum((v - lm[30]) ** 2, 1) / (2 * 1.5 ** 2))).clip(0, 1).astype(np.float32)
    iris = np.zeros(len(v), np.float32)
    pupil = np.zeros(len(v), np.float32)
    for (lo, hi), centre in zip(ict.IRIS_RANGES, model.eyeball_centres, strict=True):
        pts = v[lo:hi + 1]
        axis = pts.mean(0) - centre
        axis /= np.linalg.norm(axis)
        radial = np.linalg.norm((pts - centre) - ((pts - centre) @ axis)[:, None] * axis, axis=1)
        iris[lo:hi + 1] = 1.0
        pupil[lo:hi + 1] = _soft(radial, radial.max() * 0.38, radial.max() * 0.08)
    sclera = ((region == ict.EYEBALL_L) | (region == ict.EYEBALL_R)).astype(np.float32) * (1 - iris)
    radial_all = np.full(len(v), 99.0, np.float32)
    for (lo, hi), (ilo, ihi), centre in zip(ict.EYEBALL_RANGES, ict.IRIS_RANGES, model.eyeball_centres, strict=True):
        axis = v[ilo:ihi + 1].mean(0) - centre  # optical axis: from the eyeball centre through the iris
        axis /= np.linalg.norm(axis)
        pts = v[lo:hi + 1] - centre
        along = pts @ axis
        radial = np.linalg.norm(pts - along[:, None] * axis, axis=1)
        radial_all[lo:hi + 1] = np.where(along > 0, radial, 99.0)
    bank_rng = np.random.default_rng(20200614)  # fixed: the bank is part of the model, samples mix it randomly
    centre = np.array([0.0, 3.0, -1.0], np.float32)
    head_dir = (v - centre) / np.maximum(np.linalg.norm(v - centre, axis=1, keepdims=True), 1e-6)
    return FaceLayout(
        lips=lips, brows=brows.astype(np.float32), lid_margin=lid_margin.astype(np.float32),
        cheeks=cheeks.astype(np.float32), nose=nose,
        under_eye=under_eye.astype(np.float32), beard=beard.astype(np.float32), t_zone=t_zone, pupil=pupil,
        iris=iris, sclera=sclera,
        mouth_inside=((region == ict.MOUTH_SOCKET) | (region == ict.GUMS)).astype(np.float32),
        teeth=(region == ict.TEETH).astype(np.float32),
        socket=((region == ict.EYE_SOCKET_L) | (region == ict.EYE_SOCKET_R)).astype(np.float32),
        mouth_ao=np.clip((v[:, 2] - 4.0) / (lm[62, 2] - 4.0), 0.15, 1.0).astype(np.float32),
        skin=((region == ict.FACE) | (region == ict.HEAD_NECK)).astype(np.float32), head_dir=head_dir.astype(np.float32),
        eye_radial=radial_all, bank_low=_wave_bank(v, bank_rng, (3.0, 9.0), 24),
        bank_mid=_wave_bank(v, bank_rng, (1.0, 5.0), 24), bank_high=_wave_bank(v, bank_rng, (0.4, 1.2), 24))


def _wave_bank(points: np.ndarray, rng: np.random.Generator, wavelength: tuple[float, float],
               terms: int) -> np.ndarray:
    """V×terms random plane waves sin(k·p + φ), each of variance ½·2 = 1 after the √2 factor."""
    k = rng.standard_normal((terms, 3))
    k /= np.linalg.norm(k, axis=1, keepdims=True)
    k *= (2 * np.pi / rng.uniform(*wavelength, (terms, 1)))
    phase = rng.uniform(0, 2 * np.pi, terms)
    return (np.sin(points @ k.T + phase) * np.sqrt(2.0)).astype(np.float32)


def sample_skin_tone(rng: np.random.Generator) -> np.ndarray:
    """A linear-RGB skin albedo: luminance from very dark to very light, reddish-to-yellowish chroma.

    Skin in photographs, in linear RGB, runs from luminance ~0.02 (very dark) to ~0.5 (very light) with
    G/R ≈ 0.4–0.6 and B/G ≈ 0.55–0.8, e.g. sRGB (224, 172, 140) and (100, 65, 50); the Monk scale's ten tones
    (MONK_SRGB) span the same luminance range and are listed for reference.
    """
    lum = float(np.exp(rng.uniform(np.log(0.02), np.log(0.5))))
    g = rng.uniform(0.4, 0.62)
    b = g * rng.uniform(0.55, 0.8)
    r = lum / (0.2126 + 0.7152 * g + 0.0722 * b)
    return np.clip(np.array([r, r * g, r * b], np.float32), 0.002, 0.95)


@dataclass
class FaceAlbedo:
    """Per-vertex appearance of one face: albedo (V×3 linear), specular weight (V), how far hair lifts the
    surface (V, cm, 0 off the hair), and the parameters drawn (for the per-sample record)."""

    colors: np.ndarray
    shininess: np.ndarray
    hair_offset: np.ndarray
    params: dict


def procedural_albedo(model: ict.IctModel, layout: FaceLayout, rng: np.random.Generator) -> FaceAlbedo:
    """Random procedural appearance (see the module docstring)."""
    v = model.neutral
    tone = sample_skin_tone(rng)
    lum = float(tone.mean())
    base = np.tile(tone, (len(v), 1))
    # low-frequency blotchiness and redness (stronger contrast on light skin, as in photographs)
    base *= (1 + 0.06 * layout.field(layout.bank_low, rng))[:, None]
    red = np.array([1.0, 0.78, 0.8], np.float32)
    flush = rng.uniform(0.1, 0.45) * (layout.cheeks + 0.6 * layout.nose)
    base *= (1 - flush[:, None] * (1 - red))
    base *= (1 - rng.uniform(0.05, 0.25) * layout.under_eye)[:, None]
    hair_color = srgb_to_linear(HAIR_SRGB[rng.choice(len(HAIR_SRGB), p=HAIR_P)] * rng.uniform(0.85, 1.15))
    if lum < 0.15:  # darker skin mostly comes with dark hair
        hair_color = np.minimum(hair_color, srgb_to_linear(HAIR_SRGB[1]) * 1.5)
    stubble = rng.uniform(0.2, 0.7) if rng.random() < 0.25 else 0.0
    at = layout.support  # each blend below only where its weight is > 0 (elsewhere it would keep base as it is)
    if stubble:
        bw = layout.beard * np.clip(1 + 0.2 * layout.field(layout.bank_mid, rng), 0, 1.3) * stubble
        ids = at["beard"]
        b, w = base[ids], bw[ids, None]
        base[ids] = b * (1 - w) + (hair_color * 0.8 + b * 0.2) * w * 0.7 + b * w * 0.3
    lip_tone = tone * np.array([1.0, 0.6, 0.65], np.float32) * rng.uniform(0.55, 0.9)
    if rng.random() < 0.06:  # lipstick
        lip_tone = srgb_to_linear(np.array([rng.uniform(0.5, 0.8), rng.uniform(0.1, 0.3), rng.uniform(0.15, 0.35)]))
    _blend(base, at["lips"], layout.lips, lip_tone)
    brow_strength = rng.uniform(0.4, 0.95)
    bw = layout.brows * brow_strength
    brow_color = np.minimum(hair_color, base.mean(0) * 0.5) * 0.7 + hair_color * 0.3
    ids = at["brows"]
    _blend(base, ids, bw, brow_color * 0.8 + base[ids] * 0.2)
    lashes = layout.lid_margin * rng.uniform(0.5, 0.9)
    _blend(base, at["lid_margin"], lashes, np.minimum(hair_color, base.mean(0)) * 0.4)
    if rng.random() > 0.08:
        hair, hair_volume = hair_weights(layout, rng, v)
    else:
        hair = hair_volume = np.zeros(len(v), np.float32)
    hair_tex = hair_color * (1 + 0.25 * layout.field(layout.bank_high, rng))[:, None]
    ids = np.flatnonzero(hair > 0)
    _blend(base, ids, hair, hair_tex[ids])
    # eyes and mouth
    # darker skin: brown eyes; lighter skin: any iris colour
    iris_pick = rng.integers(2) if lum < 0.1 else rng.integers(len(IRIS_SRGB))
    iris_color = srgb_to_linear(IRIS_SRGB[iris_pick] * rng.uniform(0.8, 1.2))
    sclera = srgb_to_linear(np.array([0.78, 0.72, 0.68], np.float32) * rng.uniform(0.65, 0.85))
    ids = at["eyes"]
    eyes = np.clip(layout.sclera[ids] + layout.iris[ids], 0, 1)
    r = layout.eye_radial[ids]
    iris_r = rng.uniform(0.6, 0.68)  # cm; the cornea carries the iris pattern (the iris mesh sits behind it)
    iris_w = _soft(r, iris_r, 0.06) * eyes
    pupil_w = _soft(r, iris_r * rng.uniform(0.3, 0.5), 0.04) * eyes
    limbus = np.clip(1 - np.abs(r - iris_r) / 0.08, 0, 1) * eyes * 0.6
    # the sclera darkens toward the lids (the lids and lashes shadow it)
    sclera_shade = np.clip(1.0 - 0.6 * (r / 1.1), 0.25, 0.9)[:, None]
    eye = sclera * sclera_shade * (1 - iris_w)[:, None] + iris_color * (iris_w * (1 - pupil_w) * (1 - limbus))[:, None]
    eye += 0.005 * pupil_w[:, None]
    base[ids] = base[ids] * (1 - eyes[:, None]) + eye * eyes[:, None]
    # the mouth interior is mostly occluded: its albedo carries that darkening (no ambient occlusion otherwise)
    inside = srgb_to_linear(np.array([0.45, 0.18, 0.18], np.float32)) * rng.uniform(0.15, 0.4)
    _blend(base, at["mouth_inside"], layout.mouth_inside, inside)
    teeth = srgb_to_linear(np.array([0.85, 0.8, 0.68], np.float32) * rng.uniform(0.55, 0.85))
    _blend(base, at["teeth"], layout.teeth, teeth)
    ids = at["mouth"]
    mouth = np.clip(layout.teeth[ids] + layout.mouth_inside[ids], 0, 1)
    base[ids] *= (1 - mouth * (1 - layout.mouth_ao[ids]))[:, None]
    _blend(base, at["socket"], layout.socket, 0.02)
    params = {"albedo": "procedural", "skin_tone_srgb": [round(float(c), 3) for c in linear_to_srgb(tone)],
              "stubble": round(float(stubble), 3), "hair": bool(hair.any())}
    shininess = specular_weights(layout) * (1 - 0.85 * hair)
    params["hair_thickness_cm"] = round(float(rng.uniform(0.3, 1.6)), 3) if hair.any() else 0.0
    return FaceAlbedo(np.clip(base, 0.0, 1.0).astype(np.float32), shininess.astype(np.float32),
                      (hair_volume * params["hair_thickness_cm"]).astype(np.float32), params)


def _blend(base: np.ndarray, ids: np.ndarray, weight: np.ndarray, color: np.ndarray | float) -> None:
    """In place on the vertices ``ids``: base ← base·(1 − w) + color·w (``color``: one colour, or one per id)."""
    w = weight[ids, None]
    base[ids] = base[ids] * (1 - w) + color * w


def hair_weights(layout: FaceLayout, rng: np.random.Generator, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A hair cap: a spherical cap tilted backwards with a ragged edge (front hairline, temples, nape).

    Returns (colour weight with a ~4 mm soft edge, volume weight rising over ~2 cm from the hairline).
    """
    tilt = np.radians(rng.uniform(30, 45))
    half_angle = np.radians(rng.uniform(76, 92))
    axis = np.array([0.0, np.cos(tilt), -np.sin(tilt)], np.float32)
    cosang = layout.head_dir @ axis
    edge = np.cos(half_angle) + 0.04 * layout.field(layout.bank_mid, rng)
    # the face itself (below the brows, in front) never gets hair
    keep = (1 - (layout.head_dir[:, 2] > 0.55) * (v[:, 1] < 8.5)) * layout.skin
    hair = np.clip((cosang - edge) / 0.04, 0, 1) * keep
    ramp = np.clip((cosang - edge) / 0.2, 0, 1)
    volume = ramp * ramp * (3 - 2 * ramp) * keep  # smoothstep: no ledge at the hairline
    return hair.astype(np.float32), volume.astype(np.float32)


def specular_weights(layout: FaceLayout) -> np.ndarray:
    """How shiny each vertex is: oily T-zone and wet eyes shine, hair and the mouth interior barely."""
    spec = 0.6 * layout.skin + 0.5 * layout.t_zone + 0.4 * layout.lips + 2.0 * (layout.sclera + layout.iris)
    return (spec * (1 - 0.8 * layout.mouth_inside)).astype(np.float32)
