"""Skin relief below the mesh's resolution (wrinkles, creases, pores): a bump field on the shading normals.

Why: ICT-FaceKit's face is smooth below ~3 mm (median edge 2.9 mm) and its renders' fine intensity variation is
all albedo (``augment.skin_detail``), so the network learns that fine shading is never shape and draws faces with
no detail, while real faces' normals carry it (on the James scan the truth is 4.6° from its own σ = 4 px blur).
Here a random height field h of wavelengths 4–16 mm, attached to the surface (evaluated at each pixel's
neutral-face position), tilts the shading normals by its tangential gradient: n' = normalise(n − ∇ₜh). The image
is shaded with n' and n' is written as the ground truth, so the two agree by construction whatever the pose.

The field is a sum of plane waves, each of amplitude proportional to its wavelength (equal slope per octave),
scaled so that the RMS tilt of the weighted skin is the drawn angle (uniform in [0, ``relief_deg``] per sample).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WAVELENGTH_MM = (4.0, 16.0)  # from ~4 px on a 256² crop (finer aliases) to the width of a forehead crease
WAVES = 96  # enough that the sum looks like noise, not a lattice
MAX_RELIEF_DEG = 15.0  # an RMS tilt beyond this is not skin


@dataclass(frozen=True)
class Relief:
    """A height field h(p) = Σ aᵢ sin(kᵢ·p + φᵢ) in mm, p in mm (the mesh's neutral positions)."""

    wave_vectors: np.ndarray  # W×3, radians per mm
    amplitudes: np.ndarray  # W, mm
    phases: np.ndarray  # W

    @classmethod
    def sample(cls, rng: np.random.Generator, rms_tilt_deg: float) -> Relief:
        """Random waves whose tangential slope has RMS tan(``rms_tilt_deg``) on average over directions."""
        if not 0.0 <= rms_tilt_deg <= MAX_RELIEF_DEG:
            raise ValueError(f"relief tilt must be in [0, {MAX_RELIEF_DEG:g}]°, got {rms_tilt_deg:g}")
        lo, hi = np.log(WAVELENGTH_MM[0]), np.log(WAVELENGTH_MM[1])
        wavelength = np.exp(rng.uniform(lo, hi, WAVES))
        direction = rng.standard_normal((WAVES, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        wave_vectors = direction * (2 * np.pi / wavelength)[:, None]
        slopes = rng.rayleigh(1.0, WAVES)  # each wave's peak slope before scaling
        # RMS of the full gradient: sqrt(Σ sᵢ² / 2); about 2/3 of its square lies in a random tangent plane
        rms = np.sqrt(np.sum(slopes**2) / 2.0 * (2.0 / 3.0))
        slopes *= np.tan(np.radians(rms_tilt_deg)) / rms
        amplitudes = slopes * wavelength / (2 * np.pi)  # slope = a·|k|
        return cls(wave_vectors, amplitudes, rng.uniform(0, 2 * np.pi, WAVES))

    def gradient(self, positions_mm: np.ndarray) -> np.ndarray:
        """∇h at N×3 positions (dimensionless: mm per mm), N×3 float64."""
        arg = positions_mm.astype(np.float64) @ self.wave_vectors.T + self.phases
        return (np.cos(arg) * self.amplitudes) @ self.wave_vectors

    def height(self, positions_mm: np.ndarray) -> np.ndarray:
        """h at N×3 positions, mm (for tests and pictures)."""
        return np.sin(positions_mm.astype(np.float64) @ self.wave_vectors.T + self.phases) @ self.amplitudes


def tilt_normals(normals: np.ndarray, gradient: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Unit normals N×3 tilted by the tangential part of ``gradient`` (same frame as the normals), scaled by
    ``weight`` (N, 0 = untouched): the normals of the surface displaced by h along n, to first order."""
    n = normals.astype(np.float64)
    tangential = gradient - np.sum(gradient * n, axis=1, keepdims=True) * n
    tilted = n - weight[:, None] * tangential
    return (tilted / np.linalg.norm(tilted, axis=1, keepdims=True)).astype(np.float32)
