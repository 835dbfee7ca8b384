"""Lighting: the paper's random directional light, plus ambient, low-order spherical harmonics and specular.

All quantities are linear RGB radiance; directions are camera space (+x right, +y up, +z toward the camera).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from facenormals.conventions import normalize
from facenormals.geometry import normalise_rows


@dataclass
class Lighting:
    """One lighting set-up. ``sh`` is 9×3 (order-2 real SH irradiance coefficients per colour channel)."""

    direction: np.ndarray  # (3,) unit, z > 0 (the paper: light from the camera's side)
    intensity: float  # the paper: U[0, 2]
    color: np.ndarray  # (3,) directional light colour, mean 1
    sh: np.ndarray = field(default_factory=lambda: np.zeros((9, 3), np.float32))
    specular: float = 0.0  # Blinn-Phong strength
    shininess: float = 20.0
    wrap: float = 0.0  # diffuse wrap: light bleeding past the terminator, as skin's subsurface scattering does
    shadows: bool = True  # cast shadows of the directional light

    def as_dict(self) -> dict:
        return {"light_dir": [round(float(v), 5) for v in self.direction], "light_intensity": round(self.intensity, 5),
                "light_color": [round(float(v), 4) for v in self.color],
                "ambient": round(float(self.sh[0].mean() * 0.886227), 5),
                "specular": round(self.specular, 4), "shininess": round(self.shininess, 2),
                "wrap": round(self.wrap, 3), "cast_shadows": self.shadows}


def random_hemisphere_direction(rng: np.random.Generator, min_z: float = 0.0) -> np.ndarray:
    """Uniform direction on the hemisphere z > min_z (camera side)."""
    while True:
        v = rng.standard_normal(3)
        v /= np.linalg.norm(v)
        v[2] = abs(v[2])
        if v[2] > min_z:
            return v.astype(np.float32)


def sample_lighting(rng: np.random.Generator, harsh: bool = False) -> Lighting:
    """The paper's protocol (direction with z > 0, intensity U[0, 2]) on top of a random ambient SH environment.

    ``harsh`` (validation) forces strong grazing side light with little ambient.
    """
    if harsh:
        direction = normalize(np.array([rng.choice([-1, 1]) * rng.uniform(0.8, 1.0), rng.uniform(-0.4, 0.5),
                                        rng.uniform(0.05, 0.35)], np.float32))
        intensity = float(rng.uniform(1.5, 2.0))
        ambient = float(rng.uniform(0.03, 0.12))
    else:
        direction = random_hemisphere_direction(rng)
        intensity = float(rng.uniform(0.0, 2.0))
        ambient = float(rng.uniform(0.12, 0.6))
    warm = rng.uniform(-0.12, 0.12)  # colour temperature: warm (tungsten) to cool (shade)
    color = np.array([1 + warm, 1.0, 1 - warm], np.float32) * rng.uniform(0.95, 1.05, 3).astype(np.float32)
    sh = np.zeros((9, 3), np.float32)
    tint = np.array([1 - warm / 2, 1.0, 1 + warm / 2], np.float32)
    sh[0] = ambient / 0.886227 * tint  # irradiance of a constant environment = ambient
    sh[1:4] = (rng.uniform(-0.5, 0.5, (3, 1)) * ambient / 0.886227).astype(np.float32)  # soft sky/ground gradient
    sh[4:9] = (rng.uniform(-0.15, 0.15, (5, 1)) * ambient / 0.886227).astype(np.float32)
    specular = float(rng.uniform(0.0, 0.12)) if rng.random() < 0.7 else 0.0
    wrap = float(rng.uniform(0.0, 0.35))
    shadows = bool(rng.random() < 0.85)
    return Lighting(direction, intensity, color, sh, specular, float(rng.uniform(6.0, 30.0)), wrap, shadows)


def sh_basis(normals: np.ndarray) -> np.ndarray:
    """Order-2 real SH basis with the clamped-cosine convolution folded in (Ramamoorthi & Hanrahan 2001): N×9."""
    x, y, z = normals[:, 0], normals[:, 1], normals[:, 2]
    c1, c2, c3, c4, c5 = 0.429043, 0.511664, 0.743125, 0.886227, 0.247708
    return np.stack([np.full_like(x, c4), 2 * c2 * y, 2 * c2 * z, 2 * c2 * x, 2 * c1 * x * y, 2 * c1 * y * z,
                     c3 * z * z - c5, 2 * c1 * x * z, c1 * (x * x - y * y)], axis=1)


SCATTER_TINT = np.array([1.0, 0.55, 0.45], np.float32)  # light that wraps past the terminator reddens in skin
EYE_EXPONENT = 400.0  # wet cornea: a sharp catchlight


def shade(normals: np.ndarray, albedo: np.ndarray, light: Lighting, shadow: np.ndarray | None = None,
          specular_mask: np.ndarray | None = None, view: np.ndarray | None = None,
          wet: np.ndarray | None = None) -> np.ndarray:
    """Linear RGB radiance of N surface points: albedo·(SH irradiance + directional) + specular.

    normals N×3 unit (camera space), albedo N×3 linear, shadow N (1 = lit), view N×3 unit toward the camera,
    wet N in [0, 1] (eyes: an extra sharp highlight).
    """
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
    n_dot_half = None
    if light.specular > 0 and light.intensity > 0:
        n_dot_half = _n_dot_half(normals, view, light.direction)
        spec = np.clip(n_dot_half, 0.0, None) ** light.shininess * (cosine > 0)
        # energy-normalised Blinn-Phong lobe keeps broad highlights dim and tight ones bright
        spec = spec * (light.shininess + 8) / (8 * np.pi)
        weight = light.specular * (specular_mask if specular_mask is not None else 1.0)
        if shadow is not None:
            spec = spec * shadow
        radiance = radiance + (light.intensity * spec * weight)[:, None] * light.color[None, :]
    if wet is not None and light.intensity > 0:
        # the catchlight only where wet > 0 (the eyes): elsewhere it is multiplied by 0 (x⁴⁰⁰ is the costly part)
        eyes = np.flatnonzero(wet > 0)
        if n_dot_half is not None:
            n_dot_half_eyes = n_dot_half[eyes]
        else:
            n_dot_half_eyes = _n_dot_half(normals[eyes], view[eyes] if view is not None else None, light.direction)
        glint = np.clip(n_dot_half_eyes, 0.0, None) ** EYE_EXPONENT * (cosine[eyes] > 0)
        glint = glint * (EYE_EXPONENT + 8) / (8 * np.pi) * 0.02 * wet[eyes]
        if shadow is not None:
            glint = glint * shadow[eyes]
        radiance[eyes] += (light.intensity * glint)[:, None] * light.color[None, :]
    return radiance.astype(np.float32)


def _n_dot_half(normals: np.ndarray, view: np.ndarray | None, direction: np.ndarray) -> np.ndarray:
    """n·h per point, h the unit half-vector between the view direction (default +z) and the light."""
    v = view if view is not None else np.broadcast_to(np.array([0, 0, 1], np.float32), normals.shape)
    half = normalise_rows(np.ascontiguousarray(v + direction[None, :], dtype=np.float32), 1e-8)  # = normalize()
    return np.sum(normals * half, axis=1)
