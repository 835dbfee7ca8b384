"""Tiny synthetic dataset folders (shaded ellipsoids) for tests and smoke runs; no face data needed.

Normals are analytic (orthographic view of an ellipsoid, our convention: +x right, +y up, +z toward
the camera); images are Lambertian shading under a random light on a noisy background.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facenormals.conventions import normalize
from facenormals.dataset import DatasetWriter


def ellipsoid(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Normals (H×W×3, zero outside) and mask of a random ellipsoid seen from the front."""
    cx, cy = rng.uniform(0.4, 0.6, size=2) * size
    rx, ry = rng.uniform(0.25, 0.4, size=2) * size
    rz = rng.uniform(0.2, 0.4) * size
    cols, rows = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))
    u, v = (cols - cx) / rx, -(rows - cy) / ry  # v: +y up
    r2 = u * u + v * v
    mask = r2 < 0.95
    w = np.sqrt(np.clip(1 - r2, 1e-6, None))
    # gradient of x²/rx² + y²/ry² + z²/rz² at the surface point
    normals = normalize(np.stack([u / rx, v / ry, w / rz], axis=-1))
    normals[~mask] = 0
    return normals.astype(np.float32), mask


def shade(normals: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    light = normalize(np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6), 1.0], np.float32))
    albedo = rng.uniform(0.4, 0.9, size=3).astype(np.float32)
    lit = np.clip(normals @ light, 0, 1)[..., None] * albedo + 0.1
    background = rng.uniform(0, 1, size=3).astype(np.float32) * 0.5 + rng.normal(0, 0.05, normals.shape)
    image = np.where(mask[..., None], lit, background)
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def write_ellipsoids(root: str | Path, count: int, size: int = 64, kind: str = "paired", seed: int = 0) -> Path:
    """Write ``count`` samples of ``kind`` ("paired", "image-only", "normal-only") into dataset folder ``root``."""
    rng = np.random.default_rng(seed)
    writer = DatasetWriter(root)
    for i in range(count):
        normals, mask = ellipsoid(size, rng)
        image = shade(normals, mask, rng)
        writer.write(f"{kind}_{i:04d}", mask,
                     image=None if kind == "normal-only" else image,
                     normals=None if kind == "image-only" else normals)
    return Path(root)


def write_run_folders(root: str | Path, paired: int, image_only: int, normal_only: int, val: int) -> Path:
    """A training run's data at 64²: ``root/train`` with each kind (seeds 0, 1, 2), ``root/val`` paired (seed 3)."""
    root = Path(root)
    for kind, count, seed in (("paired", paired, 0), ("image-only", image_only, 1), ("normal-only", normal_only, 2)):
        if count:
            write_ellipsoids(root / "train", count, 64, kind, seed=seed)
    write_ellipsoids(root / "val", val, 64, "paired", seed=3)
    return root
