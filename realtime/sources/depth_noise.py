"""Sensor-like corruption of a clean depth map: what a consumer-grade RGB-D camera would have measured.

``add_sensor_noise(depth_m, intrinsics, rng, profile)`` takes a clean float depth map in metres (0 = no surface) and
returns a float32 map in metres with 0 where the sensor would report no depth. The model, in order:

1. **Occlusion shadows** (stereo/structured light): a background pixel is not seen by the second view when a nearer
   surface lies within its disparity difference ``f·b·(1/z_near − 1/z_far)`` pixels towards the second view, so
   shadows fall left of near objects (default profiles) and widen with the depth jump, as on real sensors.
2. **Edge holes**: pixels on a depth discontinuity (3×3 range and Laplacian above ``edge_jump_m``) are lost with
   probability ``edge_hole_prob``.
3. **Flying pixels**: surviving discontinuity pixels are, with probability ``flying_prob``, a blend between the near
   and far surface (the mixed-pixel effect of stereo windows and ToF).
4. **Grazing angles**: pixels whose surface normal is more than ``grazing_deg`` from the viewing ray are lost
   (probability ramps from 0 at ``grazing_deg`` to ``grazing_hole_prob`` at 90°).
5. **Axial noise**: Gaussian with σ(z) = sqrt(floor² + (z²·σ_d / (f·b))²): constant disparity noise σ_d gives noise
   growing with z², as measured for Kinect v1 (Khoshelham & Elberink 2012, σ ≈ 1.4 mm·z²/m²) and RealSense D4xx.
6. **Disparity quantisation**: disparity ``f·b/z`` rounded to ``disparity_step`` px, so depth comes in steps that
   grow with z².
7. **Random dropouts** and the **working range** [min_range_m, max_range_m].

Sensor constants (``focal_baseline_px_m`` = f·b in the sensor's own pixels, σ_d, step) are typical datasheet-scale
values, not a calibration of one unit. ``PROFILES`` holds ``realsense`` (D435-like active stereo: 50 mm baseline,
f ≈ 383 px at 640×480, 1/32 px subpixel steps) and ``kinect`` (Kinect v1 structured light: 75 mm, f ≈ 580 px, 1/8 px).

Convention: ``depth_m`` is H×W (z along the optical axis, not ray length), intrinsics are those of that map.

>>> import numpy as np
>>> from facenormals.camera import Intrinsics
>>> k = Intrinsics(64, 48, 60.0, 60.0, 31.5, 23.5)
>>> clean = np.full((48, 64), 1.0)
>>> noisy = add_sensor_noise(clean, k, np.random.default_rng(0), "realsense")
>>> bool(abs(np.median(noisy[noisy > 0]) - 1.0) < 0.01)
True
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from facenormals.camera import Intrinsics


@dataclass(frozen=True)
class NoiseProfile:
    """Parameters of :func:`add_sensor_noise`; see the module docstring for the model."""

    name: str
    focal_baseline_px_m: float  # f·b of the sensor's depth camera (pixels × metres): sets noise and quantisation
    baseline_m: float  # sets occlusion shadow width in the output image's pixels (with its fx)
    disparity_noise_px: float  # σ_d
    disparity_step_px: float  # quantisation of disparity
    axial_floor_m: float  # noise floor independent of range
    min_range_m: float
    max_range_m: float
    edge_jump_m: float
    edge_hole_prob: float
    flying_prob: float
    grazing_deg: float
    grazing_hole_prob: float
    dropout_prob: float
    shadow_side: int  # +1: shadows fall left of near objects (second view on the right, as on D4xx), -1: mirrored


PROFILES: dict[str, NoiseProfile] = {
    "realsense": NoiseProfile(
        name="realsense",
        focal_baseline_px_m=383.0 * 0.050,
        baseline_m=0.050,
        disparity_noise_px=0.08,
        disparity_step_px=1.0 / 32.0,
        axial_floor_m=0.0005,
        min_range_m=0.17,
        max_range_m=6.0,
        edge_jump_m=0.02,
        edge_hole_prob=0.6,
        flying_prob=0.35,
        grazing_deg=72.0,
        grazing_hole_prob=0.9,
        dropout_prob=0.002,
        shadow_side=1,
    ),
    "kinect": NoiseProfile(
        name="kinect",
        focal_baseline_px_m=580.0 * 0.075,
        baseline_m=0.075,
        disparity_noise_px=0.062,  # σ ≈ 1.425e-3 · z² (Khoshelham & Elberink 2012)
        disparity_step_px=1.0 / 8.0,
        axial_floor_m=0.0005,
        min_range_m=0.5,
        max_range_m=4.0,
        edge_jump_m=0.02,
        edge_hole_prob=0.7,
        flying_prob=0.25,
        grazing_deg=70.0,
        grazing_hole_prob=0.95,
        dropout_prob=0.004,
        shadow_side=1,
    ),
}


def add_sensor_noise(
    depth_m: np.ndarray,
    intrinsics: Intrinsics,
    rng: np.random.Generator,
    profile: str | NoiseProfile = "realsense",
) -> np.ndarray:
    """Corrupt a clean depth map (metres, 0 = nothing) like ``profile``'s sensor would; returns float32 metres, 0 = hole."""
    prof = PROFILES[profile] if isinstance(profile, str) else profile
    clean = np.asarray(depth_m, dtype=np.float32)
    if clean.ndim != 2 or clean.shape != (intrinsics.height, intrinsics.width):
        raise ValueError(f"depth {clean.shape} does not match intrinsics {intrinsics.width}x{intrinsics.height} (H×W)")
    valid = np.isfinite(clean) & (clean > 0)
    z = np.where(valid, clean, 0.0).astype(np.float32)

    near, far = _local_min_max(z, valid)
    # A discontinuity jumps (3×3 range) and bends (Laplacian): a steep but continuous plane only does the first.
    bend = np.abs(cv2.Laplacian(z, cv2.CV_32F, ksize=1))
    edge = valid & (far - near > prof.edge_jump_m) & (bend > prof.edge_jump_m)
    holes = _occlusion_shadow(z, valid, intrinsics.fx * prof.baseline_m, prof.shadow_side)
    holes |= edge & (rng.random(z.shape, dtype=np.float32) < prof.edge_hole_prob)

    flying = edge & ~holes & (rng.random(z.shape, dtype=np.float32) < prof.flying_prob)
    blend = 0.2 + 0.6 * rng.random(z.shape, dtype=np.float32)
    z = np.where(flying, near + blend * (far - near), z)

    angle = _view_angle_deg(clean, valid, intrinsics)
    ramp = np.clip((angle - prof.grazing_deg) / (90.0 - prof.grazing_deg), 0.0, 1.0) * prof.grazing_hole_prob
    holes |= ~flying & (rng.random(z.shape, dtype=np.float32) < ramp)  # steep surfaces and jumps alike
    holes |= rng.random(z.shape, dtype=np.float32) < prof.dropout_prob

    fb = prof.focal_baseline_px_m
    sigma = np.sqrt(prof.axial_floor_m**2 + (z * z * prof.disparity_noise_px / fb) ** 2)
    z = z + rng.standard_normal(z.shape, dtype=np.float32) * sigma
    z = _quantise_disparity(z, fb, prof.disparity_step_px)

    keep = valid & ~holes & (z >= prof.min_range_m) & (z <= prof.max_range_m)
    return np.where(keep, z, 0.0).astype(np.float32)


def to_depth_units(depth_m: np.ndarray, depth_scale_m: float) -> np.ndarray:
    """Metres → uint16 sensor units (0 stays 0 = missing; beyond the uint16 range becomes missing too).

    >>> to_depth_units(np.array([[0.0, 0.5, 70.0]]), 0.001).tolist()
    [[0, 500, 0]]
    """
    units = np.round(np.asarray(depth_m, dtype=np.float64) / depth_scale_m)
    units[(units < 0) | (units > 65535) | ~np.isfinite(units)] = 0
    return units.astype(np.uint16)


def _local_min_max(z: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """3×3 nearest and farthest valid depth around each pixel (holes do not count as near)."""
    kernel = np.ones((3, 3), np.uint8)
    far = cv2.dilate(z, kernel)
    near = cv2.erode(np.where(valid, z, np.float32(np.inf)), kernel)
    near = np.where(np.isfinite(near), near, z)
    return near.astype(np.float32), far.astype(np.float32)


def _occlusion_shadow(z: np.ndarray, valid: np.ndarray, focal_baseline_img: float, side: int) -> np.ndarray:
    """Pixels hidden from the second view: some pixel k columns towards ``side`` has a disparity larger by more than k.

    With g(u) = d(u) − side·u the test "exists k > 0: d(u + side·k) − d(u) > k" becomes "the running maximum of g
    beyond u exceeds g(u)": one cumulative maximum per row instead of a loop over shifts. Runs on the clean depth, so
    only real geometry (jumps, surfaces steeper than one disparity pixel per pixel) casts shadows.
    """
    with np.errstate(divide="ignore"):
        disparity = np.where(valid, focal_baseline_img / np.maximum(z, 1e-6), -np.inf).astype(np.float32)
    columns = np.arange(z.shape[1], dtype=np.float32)[None, :]
    g = disparity - side * columns
    if side > 0:  # casters lie to the right: running max from the right, excluding the pixel itself
        beyond = np.maximum.accumulate(g[:, ::-1], axis=1)[:, ::-1]
        beyond = np.concatenate([beyond[:, 1:], np.full_like(beyond[:, :1], -np.inf)], axis=1)
    else:
        beyond = np.maximum.accumulate(g, axis=1)
        beyond = np.concatenate([np.full_like(beyond[:, :1], -np.inf), beyond[:, :-1]], axis=1)
    return valid & (beyond > g)


def _view_angle_deg(z: np.ndarray, valid: np.ndarray, k: Intrinsics) -> np.ndarray:
    """Angle between the surface normal and the viewing ray, degrees; 0 where unknown.

    For P = z·((u − cx)/fx, (v − cy)/fy, 1), ∂P/∂u × ∂P/∂v ∝ n = (−fx·z_u, −fy·z_v, z + (u − cx)·z_u + (v − cy)·z_v)
    and n·ray = z, so cos θ = z / (|n|·|ray|) without building point clouds.
    """
    height, width = z.shape
    zv = np.where(valid, z, 0.0).astype(np.float32)
    z_v, z_u = np.gradient(zv)
    u = (np.arange(width, dtype=np.float32) - k.cx)[None, :]
    v = (np.arange(height, dtype=np.float32) - k.cy)[:, None]
    nz = zv + u * z_u + v * z_v
    n_len = np.sqrt((k.fx * z_u) ** 2 + (k.fy * z_v) ** 2 + nz**2)
    ray_len = np.sqrt((u / k.fx) ** 2 + (v / k.fy) ** 2 + 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = zv / (n_len * ray_len)
    angle = np.degrees(np.arccos(np.clip(np.nan_to_num(cos, nan=1.0), 0.0, 1.0)))
    return np.where(valid, angle, 0.0).astype(np.float32)


def _quantise_disparity(z: np.ndarray, focal_baseline: float, step: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        disparity = np.round(focal_baseline / z / step) * step
        quantised = np.where((z > 0) & (disparity > 0), focal_baseline / disparity, 0.0)
    return quantised.astype(np.float32)
