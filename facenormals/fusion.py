"""Depth refinement from predicted normals (Nehab, Rusinkiewicz, Davis, Ramamoorthi, SIGGRAPH 2005).

One unknown depth ``Z`` per pixel of the face crop; the point is ``P = Z · ray`` (:func:`facenormals.depth.pixel_rays`).
The energy is a position term plus two tangent-orthogonality terms per pixel, all linear in ``Z``::

    E(Z) = Σ_p  w_p (Z_p − D_p)²                    (D: measured depth; w_p = λ where measured)
         + Σ_(p,q) w_pq (n̄_pq · (Z_q ray_q − Z_p ray_p))²   over right and down neighbours

with ``n̄_pq`` the mean of the two pixels' predicted normals. Its normal equations form a symmetric
positive-definite 5-point stencil, solved either

* matrix-free by conjugate gradients, warm-started from the previous frame's solution: batched and
  Jacobi-preconditioned in torch on CUDA for the realtime loop; on the CPU one numba loop per crop with an SSOR
  preconditioner (:mod:`facenormals.fusion_cg`); or
* as a sparse matrix by CHOLMOD (``scikit-sparse``, when installed) or SciPy's SuperLU: exact, and the
  reference the tests hold CG to, but on 2 CPU cores slower than CG to the default tolerance.

The normals fix the high frequencies, the depth the low ones. The split is made explicit before the solve
(:func:`detail_rotation`, ``FusionConfig.crossover_px``): the predicted normals are rotated so that their local-plane
fit at σ ≈ 2 sensor pixels matches the depth's, so the depth sets every scale above σ (where a consumer sensor is
reliable) and the network only the detail below it, plus holes and flying pixels, where the field is filled from
around. A network's low- and medium-frequency shape errors (a face turned a few degrees too far, a nose too flat)
would otherwise leak into the surface; a small λ then only anchors it. (``crossover_px = 0`` keeps the older
correction of the low-frequency bias only, at ``bias_sigma_px``: what a noise-free but coarse depth, e.g. a fitted
face model, wants.)

Conventions: normals and rays in our camera space (+x right, +y up, +z toward the camera), depth in metres
along the optical axis, NaN = missing. Everything here works in crop pixels; :func:`crop_intrinsics` gives the
pinhole model of an axis-aligned crop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from facenormals.camera import Intrinsics
from facenormals.depth import (
    DepthError,
    DepthNoiseModel,
    cross3,
    dot3,
    fill_holes,
    hole_mask,
    local_linear_fit,
    norm3,
    normals_from_depth,
    normals_from_gradient,
    pixel_rays,
)
from facenormals.fusion_cg import solve_pcg

if TYPE_CHECKING:  # annotations only: torch is imported by the CUDA route alone (facenormals.fusion_torch)
    import torch

SOLVERS = ("auto", "cg", "cholmod", "splu")


def cholmod_available() -> bool:
    try:
        import sksparse.cholmod  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class FusionConfig:
    """Knobs of the fusion; the defaults are tuned on the synthetic benchmark (benchmarks/fusion.py)."""

    # λ: trust in the depth vs the normals (crossover wavelength ≈ 2π/√λ sensor pixels). With the multi-scale split
    # (crossover_px) the normals already hold the depth's shape above ~2 sensor pixels, so the position term only has
    # to anchor the surface: 0.01 (benchmarks/fusion.py, sweep 0.01–0.1). Without the split, 0.1 suited the shipped
    # model's ~15° normals.
    position_weight: float = 0.01
    bias_sigma_px: float = 32.0         # Gaussian σ (crop pixels) of the low-frequency bias correction
    correct_bias: bool = True
    depth_pixel_px: float = 1.0         # one depth-sensor pixel's width in crop pixels (crop upsampling × colour/depth
    #                                     resolution): λ is per sensor measurement (÷ this²) and σ in sensor pixels (×)
    outlier_m: float = 0.015            # depth further than this from its 5×5 median is dropped (flying pixels)
    jump_m: float = 0.01                # neighbours further apart in depth are not tied (self-occlusions)
    min_valid_fraction: float = 0.05    # less measured depth than this in the face region → DepthError
    solver: str = "auto"                # auto = "cg" (on these 2 cores it beat CHOLMOD 2-3×: benchmarks/fusion.py)
    max_iterations: int = 400
    levels: int = 3                     # CG cold start: coarse-to-fine levels (1 = plain CG)
    tolerance: float = 3e-3             # CG: ‖b − A z‖ / ‖b‖; 1e-4 changed the benchmark's errors by < 0.03°
    # The sensor's noise model (facenormals.depth.NOISE_MODELS): with it, the position weight is per pixel,
    # λ_p = (pixel footprint z/f · σ_n)² / σ_z(z_p)² per sensor measurement — the variance of the normal term's
    # residual over the depth's — instead of ``position_weight``; σ_n is the predicted normals' error (radians).
    noise: DepthNoiseModel | None = None
    presmooth_px: float = 1.0           # σ (sensor pixels) of the local-plane fit of the depth the position term pulls toward
    normal_sigma_deg: float = 21.0
    # Multi-scale split (0 = off: only the low-frequency bias correction at ``bias_sigma_px``): the predicted normals
    # are rotated so that their local-plane fit at this σ (sensor pixels) matches the depth's, i.e. the depth sets
    # every scale above ~σ and the network only the detail below it. With ``crossover_deg`` > 0 and a ``noise``
    # model, σ is instead the scale at which the depth's normals reach that precision at the face's depth.
    crossover_px: float = 2.0
    crossover_deg: float = 0.0
    # The largest RMS detail (degrees, below the crossover) the predicted normals are believed to carry: where their
    # local deviation from their own low-pass is rougher, their detail is shrunk by (detail/roughness)² (a Wiener
    # weight: noisy normals fall back to the depth's shape). 0 = off.
    detail_deg: float = 12.0
    # Sequence mode (``prepare(..., previous=...)``): the previous frame's measurement history (its result's
    # ``measurement``, moved into this crop) counts as this many measurements where it agrees with the new one
    # (within ``outlier_m``): a recursive average that lowers a still face's depth noise before the split and the
    # solve. Not the refined depth: fed back, the network's own detail would count as measured. 0 = no history.
    history_weight: float = 2.0
    # The refined surface's normals by the derivative consistent with the solve (depth._depth_derivative's
    # ``sharpen``): its mean-normal steps pass the normals' slope through [¼ ½ ¼], which central differences
    # then show. Off for a sensor: that blur is what keeps the predicted normals' per-pixel noise down
    # (tests/test_fusion.py); on for a fitted face (facenormals.face3d), whose normals should keep their detail.
    sharpen_normals: bool = False


@dataclass(frozen=True)
class FusionProblem:
    """Normal equations ``A z = w_p · D`` of the energy in 5-point stencil form (crop pixels).

    ``ax/bx/wx`` are H×(W−1) (edge p → right neighbour: residual ``ax·Z_right − bx·Z_p``),
    ``ay/by/wy`` are (H−1)×W (edge p → neighbour below). Outside ``region`` z is pinned to ``target``.
    """

    target: np.ndarray
    w_pos: np.ndarray
    ax: np.ndarray
    bx: np.ndarray
    wx: np.ndarray
    ay: np.ndarray
    by: np.ndarray
    wy: np.ndarray
    region: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.target.shape


@dataclass(frozen=True)
class FusionResult:
    """Refined depth (metres, NaN outside ``region``), its normals, the bias-corrected input normals, solver facts."""

    depth_m: np.ndarray
    normals: np.ndarray
    corrected_normals: np.ndarray
    region: np.ndarray
    solver: str
    iterations: int
    seconds: float
    bias_rotation: np.ndarray | None = None  # H×W×3 rotation vectors: reusable for the next frames (prepare's rotation=)
    measurement: np.ndarray | None = None  # the (history-averaged, outlier-free) depth it used: next frame's previous=


def crop_intrinsics(intrinsics: Intrinsics, matrix: np.ndarray, size: int) -> Intrinsics:
    """Pinhole intrinsics of a crop made with the 2×3 scale+translation ``matrix`` (frame → crop pixels)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if abs(matrix[0, 1]) > 1e-9 or abs(matrix[1, 0]) > 1e-9:
        raise ValueError("crop matrices must be axis-aligned (scale + translation)")
    sx, sy = matrix[0, 0], matrix[1, 1]
    return Intrinsics(width=size, height=size, fx=intrinsics.fx * sx, fy=intrinsics.fy * sy,
                      cx=intrinsics.cx * sx + matrix[0, 2], cy=intrinsics.cy * sy + matrix[1, 2])


def crop_depth(depth_m: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Warp frame depth (metres, NaN = missing) into a crop; bilinear among valid pixels only.

    A crop pixel whose footprint is mostly holes stays NaN, so holes are not smeared across edges.
    """
    valid = ~hole_mask(depth_m)
    values = np.where(valid, depth_m, 0.0).astype(np.float32)
    flags = cv2.INTER_LINEAR
    warp = {"dsize": (size, size), "flags": flags, "borderMode": cv2.BORDER_CONSTANT, "borderValue": 0}
    num = cv2.warpAffine(values, np.asarray(matrix, np.float64), **warp)
    den = cv2.warpAffine(valid.astype(np.float32), np.asarray(matrix, np.float64), **warp)
    out = np.full((size, size), np.nan, dtype=np.float32)
    ok = den > 0.5
    out[ok] = num[ok] / den[ok]
    return out


def warp_crop(previous: np.ndarray, previous_matrix: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Move a crop-space map (last frame's refined depth or bias rotation) into this frame's crop; NaN where new."""
    size = previous.shape[0]
    prev_full = np.vstack([np.asarray(previous_matrix, np.float64), [0.0, 0.0, 1.0]])
    cur_full = np.vstack([np.asarray(matrix, np.float64), [0.0, 0.0, 1.0]])
    relative = (cur_full @ np.linalg.inv(prev_full))[:2]
    return cv2.warpAffine(previous.astype(np.float32), relative, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(np.nan,) * 4)


def _smooth_normals(normals: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Normalised Gaussian smoothing of a normal map over ``weight``; renormalised."""
    w = weight.astype(np.float32)
    num = cv2.GaussianBlur(normals * w[..., None], (0, 0), sigma)
    den = cv2.GaussianBlur(w, (0, 0), sigma)
    out = num / np.maximum(den, 1e-6)[..., None]
    return out / np.maximum(norm3(out), 1e-6)[..., None]


def smooth_depth(depth_m: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing among valid pixels (NaN stays NaN)."""
    valid = ~hole_mask(depth_m)
    num = cv2.GaussianBlur(np.where(valid, depth_m, 0.0).astype(np.float32), (0, 0), sigma)
    den = cv2.GaussianBlur(valid.astype(np.float32), (0, 0), sigma)
    return np.where(valid, num / np.maximum(den, 1e-6), np.nan).astype(np.float32)


def rotate_between(v: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Apply, per pixel, the smallest rotation taking unit ``a`` to unit ``b`` to vectors ``v`` (…×3).

    Rodrigues with ``c = a × b``: ``R v = v + c × v + c × (c × v) / (1 + a · b)``.
    """
    c = cross3(a, b)
    cos = dot3(a, b)[..., None]
    cv = cross3(c, v)
    return v + cv + cross3(c, cv) / np.maximum(1.0 + cos, 1e-6)


def rotate_by_vector(v: np.ndarray, omega: np.ndarray) -> np.ndarray:
    """Rotate vectors ``v`` (…×3) by per-pixel rotation vectors ``omega`` (axis × angle in radians)."""
    angle = norm3(omega)[..., None]
    axis = omega / np.maximum(angle, 1e-12)
    cos, sin = np.cos(angle), np.sin(angle)
    return v * cos + cross3(axis, v) * sin + axis * dot3(axis, v)[..., None] * (1.0 - cos)


def apply_rotation(normals: np.ndarray, omega: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Rotate unit normals by the rotation-vector field ``omega``; zero outside ``region``."""
    corrected = rotate_by_vector(normals, omega)
    corrected /= np.maximum(norm3(corrected), 1e-6)[..., None]
    return np.where(region[..., None], corrected, 0.0).astype(np.float32)


def bias_rotation(normals: np.ndarray, depth_m: np.ndarray, intrinsics: Intrinsics, region: np.ndarray,
                  sigma: float) -> np.ndarray:
    """The smooth rotation-vector field (H×W×3, radians) taking σ-smoothed predicted normals onto smoothed depth's.

    The rotation is measured where the Gaussian sees no region border (a one-sided average bends both
    fields differently there) and spread from there over the whole region as a smooth rotation-vector field.
    The low-pass work runs on a grid subsampled by ~σ/4 (it only keeps frequencies that grid holds).
    """
    pre = 2.0  # light pre-smoothing of the depth against per-pixel noise; the normals get the same
    depth_normals, depth_ok = normals_from_depth(smooth_depth(depth_m, pre), intrinsics)
    support = depth_ok & region
    pred_pre = _smooth_normals(normals, support, pre)
    height, width = region.shape
    step = max(1, int(sigma // 4))
    small = (max(1, width // step), max(1, height // step))

    def shrink(x: np.ndarray) -> np.ndarray:
        return cv2.resize(x.astype(np.float32), small, interpolation=cv2.INTER_AREA)

    weight = shrink(support)
    low_sigma = sigma * small[0] / width
    depth_low = _smooth_normals(shrink(depth_normals * support[..., None]) / np.maximum(weight, 1e-6)[..., None],
                                weight > 0.5, low_sigma)
    pred_low = _smooth_normals(shrink(pred_pre * support[..., None]) / np.maximum(weight, 1e-6)[..., None],
                               weight > 0.5, low_sigma)
    cross = cross3(pred_low, depth_low)
    sin = norm3(cross)[..., None]
    cos = dot3(pred_low, depth_low)[..., None]
    omega = cross / np.maximum(sin, 1e-12) * np.arctan2(sin, cos)
    distance = cv2.distanceTransform((weight > 0.5).astype(np.uint8), cv2.DIST_L2, 3)
    interior = distance > min(low_sigma, 0.5 * float(distance.max()))
    num = cv2.GaussianBlur(np.where(interior[..., None], omega, 0.0).astype(np.float32), (0, 0), low_sigma)
    den = cv2.GaussianBlur(interior.astype(np.float32), (0, 0), low_sigma)
    far = den < 1e-3  # beyond the blur's reach: the interior's mean rotation
    omega = num / np.maximum(den, 1e-3)[..., None]
    if far.any():
        omega[far] = omega[interior].mean(axis=0) if interior.any() else 0.0
    return cv2.resize(omega, (width, height), interpolation=cv2.INTER_LINEAR).astype(np.float32)


def _rotation_vectors(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel rotation vectors (axis × angle) of the smallest rotations taking unit ``a`` to unit ``b``."""
    cross = cross3(a, b)
    sin = norm3(cross)[..., None]
    return cross / np.maximum(sin, 1e-12) * np.arctan2(sin, dot3(a, b)[..., None])


def detail_rotation(normals: np.ndarray, depth_m: np.ndarray, intrinsics: Intrinsics, region: np.ndarray,
                    sigma: float) -> np.ndarray:
    """Rotation-vector field (H×W×3) that gives the predicted normals the depth's shape at every scale above σ.

    Both the depth and the predicted normals get the same Gaussian-weighted local-plane fit (σ crop pixels) over the
    measured pixels: the depth's fitted gradient is the sensor's normal at that scale, the normals' fitted value the
    network's. Rotating each predicted normal by the rotation between the two keeps the network's detail below σ
    and replaces everything coarser (its medium-frequency shape errors and its bias) by the measurement. The local
    plane (not a normalised Gaussian) keeps both unbiased next to borders and holes. Where the depth cannot say
    (holes, flying pixels, beyond the region's measured part) the field is filled from around, coarse to fine.
    The fit runs on a grid subsampled to σ/1.5 per cell: its output holds nothing finer.
    """
    height, width = region.shape
    support = (region & ~hole_mask(depth_m)).astype(np.float32)
    stacked = np.concatenate([np.nan_to_num(depth_m)[..., None], normals], axis=-1).astype(np.float32)
    factor = max(1.0, sigma / 1.5)
    small = (max(8, round(width / factor)), max(8, round(height / factor)))
    scale_x, scale_y = width / small[0], height / small[1]
    weight = cv2.resize(support, small, interpolation=cv2.INTER_AREA)
    values = cv2.resize(stacked * support[..., None], small, interpolation=cv2.INTER_AREA)
    values /= np.maximum(weight, 1e-6)[..., None]
    grid = Intrinsics(width=small[0], height=small[1], fx=intrinsics.fx / scale_x, fy=intrinsics.fy / scale_y,
                      cx=(intrinsics.cx + 0.5) / scale_x - 0.5, cy=(intrinsics.cy + 0.5) / scale_y - 0.5)
    value, d_u, d_v, ok = local_linear_fit(values, weight, sigma / scale_x)  # one set of moments for both
    z, z_u, z_v = value[..., 0], d_u[..., 0], d_v[..., 0]
    low = value[..., 1:] / np.maximum(norm3(value[..., 1:]), 1e-6)[..., None]
    ok &= (weight > 0.5) & (z > 0)
    if not ok.any():
        return np.zeros_like(normals, dtype=np.float32)
    omega = _rotation_vectors(low, normals_from_gradient(z, z_u, z_v, grid))
    omega = _fill_field(np.where(ok[..., None], omega, 0.0).astype(np.float32), ok, (2.0, 6.0, 18.0))
    return cv2.resize(omega, (width, height), interpolation=cv2.INTER_LINEAR)


def shrink_detail(normals: np.ndarray, region: np.ndarray, sigma: float, detail_deg: float) -> np.ndarray:
    """Predicted normals with their detail below σ scaled by ``min(1, detail² / roughness²)`` (unit, zero outside).

    ``roughness`` is the local RMS angle (Gaussian σ) between the normals and their own σ-low-pass: a network's
    real detail stays below ``detail_deg``, pure noise far above, so noisy normals leave the depth's shape alone.
    The low-passes run on a grid subsampled to σ/1.5 per cell (they hold nothing finer).
    """
    height, width = region.shape
    factor = max(1.0, sigma / 1.5)
    small = (max(8, round(width / factor)), max(8, round(height / factor)))
    inside = region.astype(np.float32)

    def low_pass(x: np.ndarray) -> np.ndarray:
        """Normalised Gaussian over the region, on the small grid, brought back to full size."""
        num = cv2.resize(x * (inside if x.ndim == 2 else inside[..., None]), small, interpolation=cv2.INTER_AREA)
        den = cv2.resize(inside, small, interpolation=cv2.INTER_AREA)
        blur = sigma * small[0] / width
        num, den = cv2.GaussianBlur(num, (0, 0), blur), cv2.GaussianBlur(den, (0, 0), blur)
        out = num / (np.maximum(den, 1e-6) if x.ndim == 2 else np.maximum(den, 1e-6)[..., None])
        return cv2.resize(out, (width, height), interpolation=cv2.INTER_LINEAR)

    low = low_pass(normals)
    low /= np.maximum(norm3(low), 1e-6)[..., None]
    angle_sq = 2.0 * (1.0 - np.clip(dot3(normals, low), -1.0, 1.0))  # ≈ angle² (radians²) for small angles
    rough_sq = low_pass(angle_sq.astype(np.float32))
    keep = np.minimum(1.0, np.radians(detail_deg) ** 2 / np.maximum(rough_sq, 1e-12))[..., None]
    out = low + keep * (normals - low)
    out /= np.maximum(norm3(out), 1e-6)[..., None]
    return np.where(region[..., None], out, 0.0).astype(np.float32)


def presmooth(depth_m: np.ndarray, measured: np.ndarray, sigma: float) -> np.ndarray:
    """The depth's Gaussian-weighted local-plane fit (σ crop pixels; NaN where undetermined).

    A local plane, not a normalised Gaussian: no flattening of a curved face toward the interior at borders and
    holes. Fitted on a grid subsampled to σ per cell (about the sensor's own grid: the crop's depth repeats each
    measurement over σ/presmooth_px crop pixels) and interpolated back, which is exact enough for a fitted surface.
    """
    height, width = measured.shape
    factor = max(1.0, sigma)
    small = (max(8, round(width / factor)), max(8, round(height / factor)))
    weight = cv2.resize(measured.astype(np.float32), small, interpolation=cv2.INTER_AREA)
    values = cv2.resize(np.where(measured, depth_m, 0.0).astype(np.float32), small, interpolation=cv2.INTER_AREA)
    values /= np.maximum(weight, 1e-6)
    fit, _, _, ok = local_linear_fit(values, weight, sigma * small[0] / width)
    fit = np.where(ok, fit, np.nan).astype(np.float32)
    return cv2.resize(fit, (width, height), interpolation=cv2.INTER_LINEAR)


def with_history(depth_m: np.ndarray, previous: np.ndarray, weight: float, max_change_m: float) -> np.ndarray:
    """``(D + k·Z_prev) / (1 + k)`` where both exist and agree within ``max_change_m``; the new depth elsewhere.

    Where they disagree (the face moved in depth, a disocclusion, a wrong warp) the new measurement wins alone.
    """
    with np.errstate(invalid="ignore"):
        agree = ~hole_mask(depth_m) & ~hole_mask(previous) & (np.abs(depth_m - previous) < max_change_m)
    blended = (depth_m + weight * np.where(agree, previous, 0.0)) / (1.0 + weight)
    return np.where(agree, blended, depth_m).astype(np.float32)


def _fill_field(values: np.ndarray, known: np.ndarray, sigmas: tuple[float, ...]) -> np.ndarray:
    """Fill a H×W×C field outside ``known`` by normalised convolution at growing σ; the known mean beyond reach."""
    out = values.copy()
    todo = ~known
    weight = known.astype(np.float32)
    for sigma in sigmas:
        if not todo.any():
            break
        den = cv2.GaussianBlur(weight, (0, 0), sigma)
        num = cv2.GaussianBlur(values * weight[..., None], (0, 0), sigma)
        reach = todo & (den > 1e-3)
        out[reach] = num[reach] / den[reach, None]
        todo &= ~reach
    out[todo] = values[known].mean(axis=0)
    return out


def crossover_sigma(depth_m: np.ndarray, intrinsics: Intrinsics, config: FusionConfig) -> float:
    """σ (crop pixels) of the multi-scale split: ``config.crossover_px`` sensor pixels, or from the noise model.

    A local plane fitted with Gaussian weights σ (sensor pixels) to depth with noise σ_z has a slope error of about
    σ_z / (footprint · √(4π) · σ²), footprint = z/f per sensor pixel; the split goes where that reaches
    ``crossover_deg`` at the face's median depth: farther or noisier faces leave more of the shape to the network.
    """
    pixel = max(1.0, config.depth_pixel_px)
    if config.crossover_deg <= 0 or config.noise is None:
        return config.crossover_px * pixel
    z = float(np.nanmedian(depth_m))
    footprint = z / (0.5 * (intrinsics.fx + intrinsics.fy) / pixel)
    ratio = float(config.noise.sigma_m(z)) / footprint
    return float(np.sqrt(ratio / (np.sqrt(4 * np.pi) * np.radians(config.crossover_deg)))) * pixel


def build_problem(target: np.ndarray, measured: np.ndarray, normals: np.ndarray, region: np.ndarray,
                  intrinsics: Intrinsics, position_weight: float | np.ndarray, jump_m: float = np.inf,
                  jump_depth: np.ndarray | None = None, normal_weight: np.ndarray | None = None) -> FusionProblem:
    """Stencil coefficients of the energy for one crop.

    ``target`` is the depth the position term pulls toward (hole-filled), ``measured`` marks where that is a
    measurement (weight λ); elsewhere in the region a tiny weight keeps the system definite. Neighbours whose
    depths differ by more than ``jump_m`` (a self-occlusion: nose over cheek, an open mouth) are not tied together;
    ``jump_depth`` (default ``target``) is the depth judged, e.g. a median-filtered one that noise cannot split.
    ``normal_weight`` (H×W, default 1): how much each pixel's normal is trusted to be a surface's; an edge's tangent
    term gets the smaller of its two pixels' (weighted least squares: where the normals are known to be no surface's,
    the solve does not spread their misfit over the neighbours).
    """
    rays = pixel_rays(intrinsics, target.shape)
    position_weight = np.asarray(position_weight, dtype=np.float32)  # a scalar or per pixel
    w_pos = np.where(region, np.where(measured, position_weight, position_weight * 1e-4), 1.0).astype(np.float32)

    def edges(n_p: np.ndarray, n_q: np.ndarray, r_p: np.ndarray, r_q: np.ndarray, ok: np.ndarray):
        n = n_p + n_q
        n /= np.maximum(norm3(n), 1e-6)[..., None]
        a = dot3(n, r_q)
        b = dot3(n, r_p)
        return a.astype(np.float32), b.astype(np.float32), ok.astype(np.float32)

    with np.errstate(invalid="ignore"):
        judged = target if jump_depth is None else jump_depth
        tie_x = region[:, :-1] & region[:, 1:] & ~(np.abs(np.diff(judged, axis=1)) > jump_m)
        tie_y = region[:-1] & region[1:] & ~(np.abs(np.diff(judged, axis=0)) > jump_m)
    ax, bx, wx = edges(normals[:, :-1], normals[:, 1:], rays[:, :-1], rays[:, 1:], tie_x)
    ay, by, wy = edges(normals[:-1], normals[1:], rays[:-1], rays[1:], tie_y)
    if normal_weight is not None:
        trust = np.asarray(normal_weight, dtype=np.float32)
        wx = (wx * np.minimum(trust[:, :-1], trust[:, 1:])).astype(np.float32)
        wy = (wy * np.minimum(trust[:-1], trust[1:])).astype(np.float32)
    target = np.where(region, target, 0.0).astype(np.float32)
    return FusionProblem(target, w_pos, ax, bx, wx, ay, by, wy, region)


# ---------------------------------------------------------------------------------------------- CG

def solve_cg(problems: list[FusionProblem], inits: list[np.ndarray], device: str | torch.device = "cpu",
             max_iterations: int = 400, tolerance: float = 1e-5) -> tuple[list[np.ndarray], int]:
    """Conjugate gradients, matrix-free, warm-started from ``inits``: on CUDA batched Jacobi-preconditioned in torch
    (:mod:`facenormals.fusion_torch`); on the CPU each crop by :func:`facenormals.fusion_cg.solve_pcg` (numba,
    SSOR-preconditioned, float64).

    The residual of the start is formed in float64 and CG iterates on the float32 correction, so float32
    precision limits the correction (≈ millimetres), not the depth (≈ metres). Stops when every problem's
    ‖b − A z‖ / ‖b‖ < ``tolerance``. Returns (solutions, iterations used).
    """
    # iterate only over the bounding box of all regions: outside, z stays pinned at the start
    rows, cols = np.nonzero(np.any([p.region for p in problems], axis=0))
    if rows.size == 0:
        return [np.asarray(x, np.float32) for x in inits], 0
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    window = [_window(p, r0, r1, c0, c1) for p in problems]
    starts = [x[r0:r1, c0:c1] for x in inits]
    if str(device).split(":")[0] == "cpu":  # one numba loop per crop, SSOR-preconditioned: ~4× fewer iterations
        solved = [solve_pcg(w, x, max_iterations, tolerance) for w, x in zip(window, starts, strict=True)]
        parts, iterations = [part for part, _ in solved], max(count for _, count in solved)
    else:  # torch is imported only here: the CPU route (and every import of this module) does without it (~3 s)
        from facenormals.fusion_torch import solve_cg_batched

        parts, iterations = solve_cg_batched(window, starts, [stencil_diagonal(w) for w in window], device,
                                             max_iterations, tolerance)
    out = [np.array(x, dtype=np.float32) for x in inits]
    for full, part in zip(out, parts, strict=True):
        full[r0:r1, c0:c1] = part
    return out, iterations


def stencil_diagonal(problem: FusionProblem) -> np.ndarray:
    """The diagonal of the normal equations' matrix A (H×W, float64)."""
    d = problem.w_pos.astype(np.float64)
    wx, ax, bx = (np.asarray(v, np.float64) for v in (problem.wx, problem.ax, problem.bx))
    wy, ay, by = (np.asarray(v, np.float64) for v in (problem.wy, problem.ay, problem.by))
    d[:, 1:] += wx * ax ** 2
    d[:, :-1] += wx * bx ** 2
    d[1:, :] += wy * ay ** 2
    d[:-1, :] += wy * by ** 2
    return d


def _window(p: FusionProblem, r0: int, r1: int, c0: int, c1: int) -> FusionProblem:
    return FusionProblem(p.target[r0:r1, c0:c1], p.w_pos[r0:r1, c0:c1], p.ax[r0:r1, c0:c1 - 1], p.bx[r0:r1, c0:c1 - 1],
                         p.wx[r0:r1, c0:c1 - 1], p.ay[r0:r1 - 1, c0:c1], p.by[r0:r1 - 1, c0:c1], p.wy[r0:r1 - 1, c0:c1],
                         p.region[r0:r1, c0:c1])


# ---------------------------------------------------------------------------------------------- sparse direct

def to_sparse(problem: FusionProblem) -> tuple[scipy.sparse.csc_matrix, np.ndarray, np.ndarray]:
    """The normal equations restricted to region pixels: (A, b, flat pixel indices of the unknowns)."""
    height, width = problem.shape
    index = np.full(height * width, -1, dtype=np.int64)
    flat = np.flatnonzero(problem.region)
    index[flat] = np.arange(flat.size)
    diag = stencil_diagonal(problem).ravel()
    grid = np.arange(height * width).reshape(height, width)
    rows, cols, vals = [index[flat]], [index[flat]], [diag[flat]]
    for p, q, w, a, b in ((grid[:, :-1], grid[:, 1:], problem.wx, problem.ax, problem.bx),
                          (grid[:-1], grid[1:], problem.wy, problem.ay, problem.by)):
        on = w > 0
        i, j = index[p[on]], index[q[on]]
        v = -(w[on].astype(np.float64) * a[on] * b[on])
        rows += [i, j]
        cols += [j, i]
        vals += [v, v]
    n = flat.size
    matrix = scipy.sparse.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    rhs = (problem.w_pos.astype(np.float64) * problem.target).ravel()[flat]
    return matrix, rhs, flat


def solve_direct(problem: FusionProblem, method: str = "cholmod") -> np.ndarray:
    """Exact solve of one crop by sparse Cholesky (CHOLMOD) or LU (SuperLU)."""
    matrix, rhs, flat = to_sparse(problem)
    if method == "cholmod":
        from sksparse.cholmod import cholesky

        solution = cholesky(matrix)(rhs)
    elif method == "splu":
        solution = scipy.sparse.linalg.splu(matrix, permc_spec="COLAMD").solve(rhs)
    else:
        raise ValueError(f"unknown direct solver {method!r}")
    out = problem.target.astype(np.float64).ravel().copy()
    out[flat] = solution
    return out.reshape(problem.shape).astype(np.float32)


# ---------------------------------------------------------------------------------------------- per crop

@dataclass(frozen=True)
class PreparedCrop:
    """One crop's linear system, its start, and what built it (kept for the coarse levels)."""

    problem: FusionProblem
    init: np.ndarray
    corrected_normals: np.ndarray
    intrinsics: Intrinsics
    measured: np.ndarray
    position_weight: float | np.ndarray  # λ, a scalar or per pixel
    warm: bool = False  # init came from the previous frame: refine it directly, no coarse levels
    bias_rotation: np.ndarray | None = None
    measurement: np.ndarray | None = None
    normal_weight: np.ndarray | None = None  # per-pixel trust in the normal term (None: 1; kept for the coarse levels)


def position_weights(depth_m: np.ndarray, intrinsics: Intrinsics, config: FusionConfig) -> float | np.ndarray:
    """λ per sensor measurement: ``config.position_weight``, or from the sensor's noise at each pixel's depth.

    The normal term's residual ``n̄·(P_q − P_p)`` has σ ≈ (z/f)·σ_n (one pixel's footprint times the normals'
    angular error), the position term's σ_z(z): weighting both by their inverse variance gives
    ``λ_p = ((z/f)·σ_n / σ_z(z))²`` — larger where the sensor is precise (near, Kinect-like), smaller where not.
    """
    if config.noise is None:
        return config.position_weight
    z = np.where(np.isfinite(depth_m) & (depth_m > 0), depth_m, np.nanmedian(depth_m)).astype(np.float32)
    focal = 0.5 * (intrinsics.fx + intrinsics.fy)
    residual = z / focal * np.radians(config.normal_sigma_deg)
    return ((residual / config.noise.sigma_m(z)) ** 2).astype(np.float32)


def prepare(depth_m: np.ndarray, normals: np.ndarray, mask: np.ndarray, intrinsics: Intrinsics,
            config: FusionConfig = FusionConfig(), init: np.ndarray | None = None,
            rotation: np.ndarray | None = None, previous: np.ndarray | None = None,
            normal_weight: np.ndarray | None = None) -> PreparedCrop:
    """Validate one crop, drop outliers, correct the normals' bias, build the linear system and a start.

    ``rotation``: a bias rotation field from an earlier frame (moved into this crop) to reuse instead of
    measuring it again — the bias changes slowly, and measuring it is half of this function's work.
    ``previous``: sequence mode — the previous frame's ``FusionResult.measurement`` moved into this crop
    (:func:`warp_crop` with the tracked face's crop matrices), averaged into the measurement with
    ``config.history_weight``. ``normal_weight``: per-pixel trust in the normal term (:func:`build_problem`).
    """
    if depth_m.ndim != 2 or normals.shape != (*depth_m.shape, 3) or mask.shape != depth_m.shape:
        raise DepthError(f"crop shapes differ: depth {depth_m.shape}, normals {normals.shape}, mask {mask.shape}")
    if normal_weight is not None and np.shape(normal_weight) != depth_m.shape:
        raise DepthError(f"normal_weight is {np.shape(normal_weight)} but the crop is {depth_m.shape}")
    if depth_m.shape != (intrinsics.height, intrinsics.width):
        raise DepthError(f"crop is {depth_m.shape[1]}×{depth_m.shape[0]} but its intrinsics are for "
                         f"{intrinsics.width}×{intrinsics.height}")
    normals = np.nan_to_num(np.asarray(normals, dtype=np.float32))
    length = norm3(normals)
    region = np.asarray(mask, bool) & (length > 0.5)
    normals = np.where(region[..., None], normals / np.maximum(length, 1e-6)[..., None], 0.0).astype(np.float32)
    depth = np.where(region, depth_m, np.nan).astype(np.float32)
    measured = ~hole_mask(depth)
    if region.sum() == 0:
        raise DepthError("empty face region: no pixel has both the mask and a predicted normal")
    if measured.sum() < max(config.min_valid_fraction * region.sum(), 16):
        raise DepthError(f"too little valid depth in the face region: {int(measured.sum())} of {int(region.sum())} "
                         f"pixels (need {config.min_valid_fraction:.0%}); sensor too close/far or depth not aligned")
    if config.outlier_m > 0:
        filled = fill_holes(depth)  # everywhere: the median below must not see zeros past the region's border
        median = cv2.medianBlur(cv2.medianBlur(filled, 5), 5)  # also what self-occlusions are judged on
    else:  # a noise-free measurement (a fitted face): no outliers to find, its jumps judged on itself
        filled = fill_holes(depth, region)
        median = filled
    if config.outlier_m > 0:  # flying pixels and speckles: replaced by the local median
        outliers = measured & ~(np.abs(np.nan_to_num(depth) - median) < config.outlier_m)
        measured &= ~outliers
        depth = np.where(measured, depth, np.nan).astype(np.float32)
        filled = np.where(outliers, median, filled).astype(np.float32)
    if previous is not None and config.history_weight > 0:
        depth = with_history(depth, previous, config.history_weight, config.outlier_m or 0.015)
        filled = np.where(measured, depth, filled).astype(np.float32)
    pixel = max(1.0, config.depth_pixel_px)  # an upsampled measurement repeats over pixel² crop pixels
    if config.presmooth_px > 0:
        smooth = presmooth(depth, measured, config.presmooth_px * pixel)
        filled = np.where(measured & np.isfinite(smooth), smooth, filled).astype(np.float32)
    omega = rotation if config.correct_bias else None  # a field from an earlier frame, reused
    if config.correct_bias and config.crossover_px > 0:  # the multi-scale split
        sigma = crossover_sigma(depth, intrinsics, config)
        if config.detail_deg > 0:
            normals = shrink_detail(normals, region, sigma, config.detail_deg)
        if omega is None:
            omega = detail_rotation(normals, depth, intrinsics, region, sigma)
    elif config.correct_bias and omega is None:  # the low-frequency bias only
        omega = bias_rotation(normals, depth, intrinsics, region, config.bias_sigma_px * pixel)
    corrected = apply_rotation(normals, np.nan_to_num(omega), region) if omega is not None else normals
    position_weight = position_weights(filled, intrinsics, config) / pixel**2
    problem = build_problem(filled, measured, corrected, region, intrinsics, position_weight, config.jump_m, median,
                            normal_weight)
    usable = None if init is None else region & np.isfinite(init) & (init > 0)
    if usable is not None and np.array_equal(usable, region):
        start = init  # a warm start that covers the whole region: no smoothed guess needed
    else:
        start = smooth_depth(np.where(region, filled, np.nan), 2.0)
        if usable is not None:
            start = np.where(usable, init, start)
    start = np.where(region, start, problem.target).astype(np.float32)
    return PreparedCrop(problem, start, corrected, intrinsics, measured, position_weight, warm=init is not None,
                        bias_rotation=omega, measurement=depth, normal_weight=normal_weight)


def _pool(x: np.ndarray) -> np.ndarray:
    """2×2 sums (odd trailing rows/columns dropped)."""
    h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
    x = x[:h, :w]
    return x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2]


def coarser(crop: PreparedCrop) -> PreparedCrop:
    """The same crop at half resolution: λ×4 keeps the crossover at the same physical wavelength."""
    region_f = crop.problem.region.astype(np.float32)
    count = _pool(region_f)
    region = count >= 2
    normals = np.stack([_pool(crop.corrected_normals[..., k]) for k in range(3)], axis=-1)
    normals /= np.maximum(norm3(normals), 1e-6)[..., None]
    target = _pool(crop.problem.target * region_f) / np.maximum(count, 1)
    init = _pool(crop.init * region_f) / np.maximum(count, 1)
    measured = region & (_pool(crop.measured.astype(np.float32)) >= 2)
    h, w = region.shape
    intr = crop.intrinsics
    # pixel centres: coarse pixel c covers fine pixels 2c and 2c+1, centred at 2c + 0.5
    coarse = Intrinsics(width=w, height=h, fx=intr.fx / 2, fy=intr.fy / 2, cx=(intr.cx - 0.5) / 2, cy=(intr.cy - 0.5) / 2)
    if np.ndim(crop.position_weight):
        lam = _pool(crop.position_weight * region_f) / np.maximum(count, 1) * 4.0
    else:
        lam = crop.position_weight * 4.0
    trust = None
    if crop.normal_weight is not None:
        trust = _pool(crop.normal_weight * region_f) / np.maximum(count, 1)
    problem = build_problem(target, measured, np.where(region[..., None], normals, 0.0), region, coarse, lam,
                            normal_weight=trust)
    return PreparedCrop(problem, np.where(region, init, problem.target).astype(np.float32),
                        normals.astype(np.float32), coarse, measured, lam, normal_weight=trust)


def _finer_start(crop: PreparedCrop, coarse_solution: np.ndarray, coarse_region: np.ndarray) -> np.ndarray:
    """Upsample a coarse solution as the fine start; fine pixels the coarse grid missed keep their own start."""
    h, w = crop.init.shape
    ok = coarse_region.astype(np.float32)
    num = cv2.resize(np.where(coarse_region, coarse_solution, 0.0).astype(np.float32), (w // 2 * 2, h // 2 * 2),
                     interpolation=cv2.INTER_LINEAR)
    den = cv2.resize(ok, (w // 2 * 2, h // 2 * 2), interpolation=cv2.INTER_LINEAR)
    up = crop.init.copy()
    sub = up[: num.shape[0], : num.shape[1]]
    good = (den > 0.99) & crop.problem.region[: num.shape[0], : num.shape[1]]
    sub[good] = num[good] / den[good]
    return up


def solve_multilevel(crops: list[PreparedCrop], levels: int, device: str | torch.device, max_iterations: int,
                     tolerance: float) -> tuple[list[np.ndarray], int]:
    """CG coarse to fine: each level starts from the upsampled solution of the level below.

    The depth already holds the low frequencies; the coarse levels carry the normals' mid frequencies
    across the face in a quarter of the work, so the finest level needs few iterations.
    Returns (solutions, iterations at the finest level).
    """
    if levels > 1 and min(crops[0].init.shape) >= 32:
        coarse = [coarser(c) for c in crops]
        solutions, _ = solve_multilevel(coarse, levels - 1, device, max_iterations, tolerance)
        crops = [PreparedCrop(c.problem, _finer_start(c, s, k.problem.region), c.corrected_normals, c.intrinsics,
                              c.measured, c.position_weight) for c, s, k in zip(crops, solutions, coarse, strict=True)]
    return solve_cg([c.problem for c in crops], [c.init for c in crops], device, max_iterations, tolerance)


def resolve_solver(name: str, device: str | torch.device = "cpu") -> str:
    if name not in SOLVERS:
        raise ValueError(f"unknown fusion solver {name!r}; choose from {SOLVERS}")
    if name == "auto":
        # warm-started CG: batched on CUDA, and on CPU it also beat CHOLMOD (analysis + factorisation per frame)
        return "cg"
    if name == "cholmod" and not cholmod_available():
        raise RuntimeError("solver 'cholmod' needs scikit-sparse (pip install scikit-sparse, with libsuitesparse-dev)")
    return name


def fuse_many(crops: list[PreparedCrop], config: FusionConfig = FusionConfig(),
              device: str | torch.device = "cpu") -> list[FusionResult]:
    """Solve several prepared crops: one batched CG (all crops the same size) or one direct solve each."""
    if not crops:
        return []
    solver = resolve_solver(config.solver, device)
    start = time.perf_counter()
    if solver == "cg":
        levels = 1 if all(c.warm for c in crops) else config.levels  # a warm start already holds every scale
        depths, iterations = solve_multilevel(crops, levels, device, config.max_iterations, config.tolerance)
    else:
        depths, iterations = [solve_direct(c.problem, solver) for c in crops], 1
    seconds = (time.perf_counter() - start) / len(crops)
    results = []
    for crop, depth in zip(crops, depths, strict=True):
        region = crop.problem.region
        depth = np.where(region, depth, np.nan).astype(np.float32)
        # differenced only along the edges the solve tied: across a cut (a self-occlusion step) it has no slope
        normals, ok = normals_from_depth(depth, crop.intrinsics, (crop.problem.wx > 0, crop.problem.wy > 0),
                                         sharpen=config.sharpen_normals)
        normals[~(ok & region)] = 0.0
        results.append(FusionResult(depth, normals, crop.corrected_normals, region, solver, iterations, seconds,
                                    crop.bias_rotation, crop.measurement))
    return results


def fuse(depth_m: np.ndarray, normals: np.ndarray, mask: np.ndarray, intrinsics: Intrinsics,
         config: FusionConfig = FusionConfig(), init: np.ndarray | None = None,
         device: str | torch.device = "cpu", rotation: np.ndarray | None = None,
         previous: np.ndarray | None = None, normal_weight: np.ndarray | None = None) -> FusionResult:
    """Refine one crop's depth (metres, NaN = missing) with its predicted normals; see the module docstring.

    ``init``: a warm start, e.g. the previous frame's refined depth moved by :func:`warp_crop`;
    ``rotation``: the previous frame's ``bias_rotation``, moved the same way, to skip re-measuring the bias;
    ``previous``: sequence mode, the previous result's ``measurement`` moved the same way (see :func:`prepare`);
    ``normal_weight``: per-pixel trust in the normals (default 1 everywhere; :func:`build_problem`).
    Raises :class:`DepthError` when the crop holds too little valid depth to anchor the surface.
    """
    return fuse_many([prepare(depth_m, normals, mask, intrinsics, config, init, rotation, previous, normal_weight)],
                     config, device)[0]
