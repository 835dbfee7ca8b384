"""Shape ICT-FaceKit's 100 identity modes cannot express: a smooth random displacement along the skin's normals.

Why: the shipped model's error on real faces is person-specific low/medium-frequency shape (issue 14), and a PCA
model's random faces all lie in its 100-dimensional span. Adding a random field outside that span, at the
scales where real faces differ (cheek and brow bumps, nasal and chin asymmetries: wavelengths of 1.5–6 cm),
teaches the network to read such shape from shading instead of snapping to the model's span.

The field is a sum of random plane waves on the neutral mesh's 3-D positions (so it is attached to the
surface and smooth whatever the pose), scaled so that its largest displacement is exactly the drawn
amplitude (a bound in mm, never exceeded), and faded to zero near the eyes, nostrils and mouth (eyelids and
lips slide on the eyeballs and teeth, nostril rims are thin: displacing them makes them cut through) and off
the skin (eyeballs, sockets, teeth, gums). The ears (thin too) are guarded by the caller's fold check
(sources.IctSource halves the amplitude while the field folds skin triangles over). Wrinkles and pores
(< 5 mm) are below the ICT mesh's resolution (median face edge 2.9 mm), so they are not attempted here.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from facenormals.training.data import ict

WAVELENGTH_MM = (15.0, 60.0)  # the band drawn (log-uniform): medium-frequency shape, above the mesh resolution
WAVES = 24
FADE_MM = (6.0, 18.0)  # no displacement within 6 mm of an eye/mouth landmark, full beyond 18 mm
# of the 68 (iBUG order): nostrils 31–35, eyes 36–47, mouth 48–67 (thin or sliding skin)
EYE_MOUTH_LANDMARKS = tuple(range(31, 68))


@dataclass
class DetailField:
    """Per-vertex weights (0 = never displaced) and the neutral positions in mm the waves are evaluated on."""

    weight: np.ndarray  # V float32 in [0, 1]
    positions_mm: np.ndarray  # V×3 float32

    @classmethod
    def for_model(cls, model: ict.IctModel, fade_mm: tuple[float, float] = FADE_MM) -> DetailField:
        positions = model.neutral.astype(np.float32) * 10.0  # ICT units are cm
        skin = np.isin(model.region, (ict.FACE, ict.HEAD_NECK))
        anchors = positions[model.landmarks68[list(EYE_MOUTH_LANDMARKS)]]
        dist = np.full(len(positions), np.inf, np.float32)
        for a in anchors:  # 32 anchors × V: cheap, once per worker
            np.minimum(dist, np.linalg.norm(positions - a, axis=1), out=dist)
        lo, hi = fade_mm
        t = np.clip((dist - lo) / (hi - lo), 0.0, 1.0)
        weight = (t * t * (3 - 2 * t)) * skin  # smoothstep: the field's slope stays continuous at the fade
        return cls(weight.astype(np.float32), positions)

    def sample(self, rng: np.random.Generator, amplitude_mm: float) -> np.ndarray:
        """Displacements (V, mm) with max |d| over the weighted vertices equal to ``amplitude_mm``."""
        if amplitude_mm <= 0:
            return np.zeros(len(self.weight), np.float32)
        lo, hi = np.log(WAVELENGTH_MM[0]), np.log(WAVELENGTH_MM[1])
        wavelength = np.exp(rng.uniform(lo, hi, WAVES))
        direction = rng.standard_normal((WAVES, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        omega = direction * (2 * np.pi / wavelength)[:, None]
        phase = rng.uniform(0, 2 * np.pi, WAVES)
        coeff = rng.standard_normal(WAVES) * (wavelength / WAVELENGTH_MM[1])  # longer waves carry more amplitude
        active = self._active  # the waves are evaluated where the weight is > 0 only (~40 % of the head)
        field = np.zeros(len(self.weight), np.float64)
        field[active] = (np.cos(self._active_positions @ omega.T + phase) @ coeff) * self.weight[active]
        peak = float(np.abs(field).max())
        if peak < 1e-9:
            return np.zeros(len(self.weight), np.float32)
        return (field * (amplitude_mm / peak)).astype(np.float32)

    @cached_property
    def _active(self) -> np.ndarray:
        return np.nonzero(self.weight > 0)[0]

    @cached_property
    def _active_positions(self) -> np.ndarray:
        """Float64 positions (mm) of the displaced vertices: a per-process constant."""
        return self.positions_mm[self._active].astype(np.float64)
