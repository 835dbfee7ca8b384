"""Depth maps: validity and holes, alignment to the colour camera, back-projection and normals.

Conventions:
    * Depth ``d`` is the distance along the optical axis in metres (> 0); invalid pixels are NaN.
      Raw sensor depth (uint16, 0 = missing) becomes metres with :func:`depth_to_metres`.
    * 3-D points and normals are in our camera space (:mod:`facenormals.conventions`): +x right, +y **up**,
      +z toward the camera. A pinhole camera therefore looks down **-z**: the pixel (u, v) at depth d is
      ``((u - cx) / fx · d, -(v - cy) / fy · d, -d)``.
    * Calibration extrinsics (:mod:`facenormals.calibration.calibfile`) use the OpenCV / RealSense frame
      (x right, y down, z forward); :func:`align_depth_to_colour` works in that frame internally.

>>> import numpy as np
>>> from facenormals.camera import Intrinsics
>>> intr = Intrinsics(width=5, height=5, fx=100.0, fy=100.0, cx=2.0, cy=2.0)
>>> normals, valid = normals_from_depth(np.full((5, 5), 0.5, np.float32), intr)
>>> (normals[2, 2].round(3) + 0.0).tolist(), bool(valid[2, 2])
([0.0, 0.0, 1.0], True)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import cv2
import numpy as np

from facenormals.camera import Intrinsics


def dot3(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel dot product of …×3 arrays (explicit sums: numpy reductions over a length-3 axis are slow)."""
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]


def cross3(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel cross product of …×3 arrays (faster than ``np.cross`` on images)."""
    out = np.empty(np.broadcast_shapes(a.shape, b.shape), dtype=np.result_type(a, b))
    out[..., 0] = a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1]
    out[..., 1] = a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2]
    out[..., 2] = a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]
    return out


def norm3(a: np.ndarray) -> np.ndarray:
    return np.sqrt(dot3(a, a))


class DepthError(ValueError):
    """Depth that cannot be used: wrong shape or type, nothing valid, or not matching its calibration."""


MAX_DEPTH_M = 16.0  # beyond any consumer depth sensor's range (RealSense, Kinect: ≤ 10 m): such readings are invalid
SATURATED = 65535  # the uint16 "no reading / overflow" code many sensors and recorders write


def implausible_depth(depth: np.ndarray, scale_m: float | None = None) -> np.ndarray:
    """True where a reading is saturated (uint16 65535) or farther than :data:`MAX_DEPTH_M`: not a distance."""
    depth = np.asarray(depth)
    if np.issubdtype(depth.dtype, np.integer):
        far = depth.astype(np.float64) * float(scale_m or 0.0) > MAX_DEPTH_M if scale_m else np.zeros(depth.shape, bool)
        return far | (depth == SATURATED) if depth.dtype == np.uint16 else far
    with np.errstate(invalid="ignore"):
        return depth > MAX_DEPTH_M


def depth_to_metres(depth: np.ndarray, scale_m: float | None = None) -> np.ndarray:
    """Raw depth → float32 metres with NaN where missing.

    ``uint16`` (sensor units, 0 = missing) needs ``scale_m`` (metres per unit, e.g. 0.001 for millimetres).
    Float input is taken as metres already; zero, negative, NaN and infinite values all become NaN, and so do
    :func:`implausible_depth` readings (saturated, or beyond :data:`MAX_DEPTH_M`): fused as distances they
    would put a face at 65 m.
    """
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise DepthError(f"depth must be a single-channel H×W map, got shape {depth.shape}")
    if np.issubdtype(depth.dtype, np.integer):
        if scale_m is None or not np.isfinite(scale_m) or scale_m <= 0:
            raise DepthError(f"integer depth needs a positive depth scale (metres per unit), got {scale_m!r}")
        metres = depth.astype(np.float32) * np.float32(scale_m)
    elif np.issubdtype(depth.dtype, np.floating):
        metres = depth.astype(np.float32, copy=True)
    else:
        raise DepthError(f"unsupported depth dtype {depth.dtype}")
    with np.errstate(invalid="ignore"):
        metres[~(np.isfinite(metres) & (metres > 0)) | implausible_depth(depth, scale_m)] = np.nan
    return metres


def hole_mask(depth_m: np.ndarray) -> np.ndarray:
    """True where depth is missing (NaN, ≤ 0 or infinite)."""
    with np.errstate(invalid="ignore"):
        return ~(np.isfinite(depth_m) & (depth_m > 0))


def check_matches(depth: np.ndarray, intrinsics: Intrinsics, what: str = "depth") -> None:
    """Raise :class:`DepthError` when a map's size differs from its intrinsics' image size."""
    if depth.shape[:2] != (intrinsics.height, intrinsics.width):
        raise DepthError(f"{what} is {depth.shape[1]}×{depth.shape[0]} but its intrinsics are for "
                         f"{intrinsics.width}×{intrinsics.height}: wrong calibration or unaligned stream")


def pixel_rays(intrinsics: Intrinsics, shape: tuple[int, int] | None = None) -> np.ndarray:
    """H×W×3 float32 rays in our camera space with z = -1: the point at depth d is ``d · ray``."""
    height, width = shape if shape is not None else (intrinsics.height, intrinsics.width)
    u = (np.arange(width, dtype=np.float32) - np.float32(intrinsics.cx)) / np.float32(intrinsics.fx)
    v = -(np.arange(height, dtype=np.float32) - np.float32(intrinsics.cy)) / np.float32(intrinsics.fy)
    rays = np.empty((height, width, 3), dtype=np.float32)
    rays[..., 0] = u[None, :]
    rays[..., 1] = v[:, None]
    rays[..., 2] = -1.0
    return rays


def backproject(depth_m: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """H×W depth (metres, NaN = missing) → H×W×3 points in our camera space (NaN where missing)."""
    return pixel_rays(intrinsics, depth_m.shape) * depth_m[..., None]


def normals_from_points(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals of an organised point map by neighbour cross products.

    Central differences where both neighbours exist, one-sided next to holes and borders. Returns
    (normals H×W×3 float32, zero where undefined; valid bool H×W).
    """
    valid = np.isfinite(points).all(axis=2)
    if not valid.all():
        points = np.where(valid[..., None], points, np.nan)

    def derivative(axis: int) -> np.ndarray:
        # points are NaN where invalid, so a difference touching a hole is NaN and falls back below
        step = np.diff(points, axis=axis)  # step k = p[k+1] - p[k]
        out = np.full_like(points, np.nan)
        inner = (slice(None), slice(1, -1)) if axis == 1 else (slice(1, -1),)
        lo_step = (slice(None), slice(None, -1)) if axis == 1 else (slice(None, -1),)
        hi_step = (slice(None), slice(1, None)) if axis == 1 else (slice(1, None),)
        out[inner] = (step[hi_step] + step[lo_step]) * 0.5  # central difference
        for shift in (slice(None, -1), slice(1, None)):  # forward, then backward where still undefined
            target = (slice(None), shift) if axis == 1 else (shift,)
            missing = np.isnan(out[target][..., 0])
            out[target][missing] = step[missing]
        return out

    with np.errstate(invalid="ignore"):
        d_du, d_dv = derivative(1), derivative(0)
        # rows grow downwards (toward -y): dv × du points toward the camera for a frontal surface
        normals = cross3(d_dv, d_du)
        length = norm3(normals)
    ok = valid & np.isfinite(length) & (length > 1e-12)
    normals = np.where(ok[..., None], normals / np.where(ok, length, 1.0)[..., None], 0.0).astype(np.float32)
    return normals, ok


def _depth_derivative(z: np.ndarray, axis: int, tied: np.ndarray | None = None, sharpen: bool = False) -> np.ndarray:
    """∂z along ``axis``: central differences, one-sided next to holes, borders and untied steps (``tied`` False:
    a step the surface does not have, e.g. a self-occlusion), NaN where neither side exists. A pixel tied to
    neither neighbour (a sliver between two cuts) is differenced across them: some slope rather than none.

    ``sharpen``: for a surface integrated from normals by the fusion stencil (each step the slope of its two
    pixels' mean normal: a trapezoid rule), whose central differences see the normals' slope filtered by
    [¼ ½ ¼] (cos²(ω/2): 15 % lost at an 8-pixel wavelength). ``1.5·c_k − 0.25·(c_(k−1) + c_(k+1))`` on the
    central differences ``c`` cancels that to second order (97.9 % kept at 8 px) and never amplifies; used where
    pixel k and both neighbours have central differences (the five pixels are one surface).
    """
    if axis == 0:
        return _depth_derivative(z.T, 1, None if tied is None else tied.T, sharpen).T
    step = np.diff(z, axis=1)  # step k = z[k+1] - z[k]
    if tied is not None:
        step = np.where(tied, step, np.nan)
    out = np.full_like(z, np.nan)
    out[:, 1:-1] = (step[:, 1:] + step[:, :-1]) * 0.5
    central = np.isfinite(out)
    if sharpen:
        full = central[:, 2:-2] & central[:, 1:-3] & central[:, 3:-1]
        sharp = 1.5 * out[:, 2:-2] - 0.25 * (out[:, 1:-3] + out[:, 3:-1])
        out[:, 2:-2] = np.where(full, sharp, out[:, 2:-2])
    forward, backward = out[:, :-1], out[:, 1:]
    np.copyto(forward, step, where=np.isnan(forward))
    np.copyto(backward, step, where=np.isnan(backward))
    if tied is not None:
        lonely = np.isnan(out) & np.isfinite(z)
        if lonely.any():
            out[lonely] = _depth_derivative(z, 1)[lonely]
    return out


def normals_from_depth(depth_m: np.ndarray, intrinsics: Intrinsics, ties: tuple[np.ndarray, np.ndarray] | None = None,
                       sharpen: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Normals (our camera space) of a depth map: the cross product of its back-projected tangents.

    With ``P = z·r``, ``r = ((u−cx)/fx, −(v−cy)/fy, −1)``, the tangents are ``P_u = z_u·r + z·r_u`` and
    ``P_v = z_v·r + z·r_v`` (``z_u``, ``z_v`` by central differences, one-sided next to holes); their cross
    product, scaled by fx·fy/z, is ``(fx·z_u, −fy·z_v, z + (u−cx)·z_u + (v−cy)·z_v)``. It matches
    :func:`normals_from_points` on :func:`backproject` up to second-order terms, in less than half the work.
    ``ties``: (H×(W−1), (H−1)×W) bool, which neighbours are one surface (e.g. a fusion solve's tied edges); steps
    between untied ones are not differenced across (one-sided there), as a depth jump is no slope. ``sharpen``: the
    derivative consistent with the fusion solve's discretisation (see :func:`_depth_derivative`), for its surfaces.
    """
    z = np.asarray(depth_m, dtype=np.float32)
    tie_x, tie_y = (None, None) if ties is None else ties
    with np.errstate(invalid="ignore"):
        z = np.where(z > 0, z, np.nan).astype(np.float32)
        zu, zv = _depth_derivative(z, 1, tie_x, sharpen), _depth_derivative(z, 0, tie_y, sharpen)
        u = np.arange(z.shape[1], dtype=np.float32) - np.float32(intrinsics.cx)
        v = np.arange(z.shape[0], dtype=np.float32) - np.float32(intrinsics.cy)
        normals = np.empty((*z.shape, 3), dtype=np.float32)
        normals[..., 0] = np.float32(intrinsics.fx) * zu
        normals[..., 1] = -np.float32(intrinsics.fy) * zv
        normals[..., 2] = z + u[None, :] * zu + v[:, None] * zv
        length = norm3(normals)
        ok = np.isfinite(length) & (length > 1e-12)
    normals /= np.where(ok, length, 1.0)[..., None]
    normals[~ok] = 0.0
    return normals, ok


def fill_holes(depth_m: np.ndarray, region: np.ndarray | None = None, sigmas: tuple[float, ...] = (2.0, 6.0, 18.0)) -> np.ndarray:
    """Fill missing depth inside ``region`` by normalised convolution at growing scales.

    A smooth guess for holes (e.g. a solver's start); pixels that were valid keep their value.
    """
    holes = hole_mask(depth_m)
    target = holes if region is None else holes & region
    if not target.any():
        return depth_m.copy()
    if holes.all():
        raise DepthError("no valid depth to fill holes from")
    weight = (~holes).astype(np.float32)
    values = np.where(holes, 0.0, depth_m).astype(np.float32)
    filled = depth_m.copy()
    todo = target.copy()
    height, width = depth_m.shape
    for sigma in sigmas:
        step = max(1, int(sigma // 3))  # wide blurs run on a subsampled grid: same result, far less work
        if step > 1:
            small = (max(1, width // step), max(1, height // step))
            blur = sigma * small[0] / width
            num = cv2.resize(cv2.GaussianBlur(cv2.resize(values, small, interpolation=cv2.INTER_AREA), (0, 0), blur),
                             (width, height), interpolation=cv2.INTER_LINEAR)
            den = cv2.resize(cv2.GaussianBlur(cv2.resize(weight, small, interpolation=cv2.INTER_AREA), (0, 0), blur),
                             (width, height), interpolation=cv2.INTER_LINEAR)
        else:
            num = cv2.GaussianBlur(values, (0, 0), sigma)
            den = cv2.GaussianBlur(weight, (0, 0), sigma)
        ok = todo & (den > 1e-3)
        filled[ok] = num[ok] / den[ok]
        todo &= ~ok
    if todo.any():
        filled[todo] = np.nanmedian(depth_m)
    return filled


def align_depth_to_colour(depth_m: np.ndarray, depth_intrinsics: Intrinsics, colour_intrinsics: Intrinsics,
                          rotation: np.ndarray, translation_m: np.ndarray, fill_cracks: bool = True) -> np.ndarray:
    """Reproject depth into the colour camera (its pixels, its optical-axis distance), nearest surface wins.

    ``rotation`` (3×3) and ``translation_m`` (3) map depth-camera points to colour-camera points in the
    OpenCV frame (x right, y down, z forward): ``X_colour = R · X_depth + t``. Lens distortion of both cameras
    is ignored except through their undistorted pinhole models. Splatting to a finer colour grid leaves
    cracks; ``fill_cracks`` closes them with the nearest neighbouring surface.
    """
    check_matches(depth_m, depth_intrinsics, "depth")
    rotation = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
    translation_m = np.asarray(translation_m, dtype=np.float64).reshape(3)
    rows, cols = np.nonzero(~hole_mask(depth_m))
    d = depth_m[rows, cols].astype(np.float64)
    points = np.stack([(cols - depth_intrinsics.cx) / depth_intrinsics.fx * d,
                       (rows - depth_intrinsics.cy) / depth_intrinsics.fy * d, d], axis=1)
    points = points @ rotation.T + translation_m
    z = points[:, 2]
    front = z > 1e-6
    u = np.round(points[front, 0] / z[front] * colour_intrinsics.fx + colour_intrinsics.cx).astype(np.int64)
    v = np.round(points[front, 1] / z[front] * colour_intrinsics.fy + colour_intrinsics.cy).astype(np.int64)
    z = z[front]
    inside = (u >= 0) & (u < colour_intrinsics.width) & (v >= 0) & (v < colour_intrinsics.height)
    out = np.full((colour_intrinsics.height, colour_intrinsics.width), np.inf, dtype=np.float32)
    np.minimum.at(out, (v[inside], u[inside]), z[inside].astype(np.float32))
    if fill_cracks:
        for _ in range(2):  # two passes close the gaps of up to 2× upsampling
            closest = cv2.erode(out, np.ones((3, 3), np.uint8))
            # a crack has surface on at least half its sides; outside a straight silhouette only 3 of 8
            neighbours = cv2.boxFilter(np.isfinite(out).astype(np.float32), -1, (3, 3), normalize=False)
            cracks = np.isinf(out) & np.isfinite(closest) & (neighbours >= 4)
            out[cracks] = closest[cracks]
    out[np.isinf(out)] = np.nan
    return out


def depth_in_colour(raw_depth: np.ndarray, calibration, depth_scale_m: float | None = None) -> np.ndarray:
    """Raw sensor depth → metres in the colour camera's pixels, using a calibration file's contents.

    ``calibration`` is a :class:`facenormals.calibration.calibfile.Calibration`. With a depth camera in it, the
    depth is reprojected (:func:`align_depth_to_colour`). Without one (a colour-only file) the depth must
    already be aligned (same size as the colour image: e.g. RealSense ``rs.align`` output) and is only scaled
    — the documented fallback. ``depth_scale_m`` overrides the file's scale.
    """
    scale = depth_scale_m if depth_scale_m is not None else calibration.depth_scale_m
    if calibration.depth is None or calibration.rotation is None:
        if raw_depth.shape[:2] != (calibration.colour.height, calibration.colour.width):
            raise DepthError(f"depth is {raw_depth.shape[1]}×{raw_depth.shape[0]}, the colour camera "
                             f"{calibration.colour.width}×{calibration.colour.height}, and the calibration has no depth "
                             "camera to reproject with: run `facenormals calibrate rgbd`")
        if scale is None and np.issubdtype(np.asarray(raw_depth).dtype, np.integer):
            raise DepthError("the calibration has no depth scale: run `facenormals calibrate rgbd` or pass the scale")
        return depth_to_metres(raw_depth, scale)
    metres = depth_to_metres(raw_depth, scale)
    return align_depth_to_colour(metres, calibration.depth, calibration.colour, calibration.rotation,
                                 calibration.translation_m)


# ---------------------------------------------------------------------------------------------- depth-only filters
# What a user with an RGB-D camera would do without predicted normals; the baselines of benchmarks/fusion.py.
# All keep NaN for "no depth" and return float32 metres; none fills holes (their coverage is the measurement's).


@dataclass(frozen=True)
class DepthNoiseModel:
    """Axial noise of a stereo / structured-light sensor: ``σ_z(z) = sqrt(floor² + (z² σ_d / (f·b))²)``.

    ``focal_baseline_px_m`` is f·b in the sensor's own pixels, ``disparity_noise_px`` σ_d, ``disparity_step_px`` the
    disparity quantisation (its uniform error, step/√12, adds to σ_d). The same model as
    ``realtime/sources/depth_noise.py``'s profiles; :data:`NOISE_MODELS` holds those two.
    """

    focal_baseline_px_m: float
    disparity_noise_px: float
    disparity_step_px: float = 0.0
    floor_m: float = 0.0005

    def sigma_m(self, z: np.ndarray | float) -> np.ndarray:
        z = np.asarray(z, dtype=np.float32)
        disparity = np.hypot(self.disparity_noise_px, self.disparity_step_px / np.sqrt(12.0))
        return np.sqrt(self.floor_m**2 + (z * z * disparity / self.focal_baseline_px_m) ** 2).astype(np.float32)


NOISE_MODELS: dict[str, DepthNoiseModel] = {
    "realsense": DepthNoiseModel(383.0 * 0.050, 0.08, 1.0 / 32.0),  # D435-like at 640×480
    "kinect": DepthNoiseModel(580.0 * 0.075, 0.062, 1.0 / 8.0),    # Kinect v1 (Khoshelham & Elberink 2012)
}


def _windows(x: np.ndarray, ksize: int) -> np.ndarray:
    """H×W×k² stack of each pixel's ksize×ksize neighbourhood (NaN beyond the border)."""
    r = ksize // 2
    padded = np.pad(x, r, mode="constant", constant_values=np.nan)
    view = np.lib.stride_tricks.sliding_window_view(padded, (ksize, ksize))
    return view.reshape(*x.shape, ksize * ksize)


def local_median(depth_m: np.ndarray, ksize: int = 5) -> np.ndarray:
    """Median of the valid depths in each ksize×ksize window (NaN where the window holds none)."""
    z = np.where(hole_mask(depth_m), np.nan, depth_m).astype(np.float32)
    windows = _windows(z, ksize)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows
        return np.nanmedian(windows, axis=2).astype(np.float32)


def drop_outliers(depth_m: np.ndarray, max_deviation_m: float = 0.01, ksize: int = 5) -> np.ndarray:
    """Depth with pixels further than ``max_deviation_m`` from their window's median set to NaN (flying pixels)."""
    median = local_median(depth_m, ksize)
    with np.errstate(invalid="ignore"):
        keep = ~hole_mask(depth_m) & (np.abs(depth_m - median) <= max_deviation_m)
    return np.where(keep, depth_m, np.nan).astype(np.float32)


def median_filter_depth(depth_m: np.ndarray, ksize: int = 5) -> np.ndarray:
    """The valid-pixel median of each window, at the measured pixels only (flying pixels pulled onto a surface)."""
    return np.where(hole_mask(depth_m), np.nan, local_median(depth_m, ksize)).astype(np.float32)


def gaussian_filter_depth(depth_m: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing normalised over the valid pixels (NaN stays NaN)."""
    valid = ~hole_mask(depth_m)
    num = cv2.GaussianBlur(np.where(valid, depth_m, 0.0).astype(np.float32), (0, 0), sigma)
    den = cv2.GaussianBlur(valid.astype(np.float32), (0, 0), sigma)
    return np.where(valid, num / np.maximum(den, 1e-6), np.nan).astype(np.float32)


def local_linear_fit(values: np.ndarray, weight: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                                  np.ndarray]:
    """Gaussian-weighted local plane ``x(q) ≈ a + b·(u_q − u_p) + c·(v_q − v_p)`` around each pixel p, per channel.

    ``values`` H×W or H×W×C, ``weight`` H×W (0 = unknown). Returns (a, b, c) shaped like ``values`` and the pixels
    where the fit is determined. Unlike a normalised Gaussian (a first-order fit is exact on planes), it does not
    flatten a curved surface toward the region's interior at borders and holes, so its gradient stays unbiased there.
    Nine Gaussian blurs plus three per channel, the 3×3 normal equations solved in closed form per pixel.
    """
    weight = np.asarray(weight, dtype=np.float32)
    height, width = weight.shape
    u = np.broadcast_to((np.arange(width, dtype=np.float32) - width / 2)[None, :], (height, width))
    v = np.broadcast_to((np.arange(height, dtype=np.float32) - height / 2)[:, None], (height, width))

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (0, 0), sigma)

    s1, su, sv = blur(weight), blur(weight * u), blur(weight * v)
    suu, svv, suv = blur(weight * u * u), blur(weight * v * v), blur(weight * u * v)
    cu, cv = su - u * s1, sv - v * s1  # moments centred on each pixel
    cuu, cvv, cuv = suu - 2 * u * su + u * u * s1, svv - 2 * v * sv + v * v * s1, suv - u * sv - v * su + u * v * s1
    i00, i01, i02 = cuu * cvv - cuv * cuv, cv * cuv - cu * cvv, cu * cuv - cv * cuu  # adjugate of the moment matrix
    i11, i12, i22 = s1 * cvv - cv * cv, cu * cv - s1 * cuv, s1 * cuu - cu * cu
    det = s1 * i00 + cu * i01 + cv * i02
    ok = (s1 > 0.05) & (det > 1e-3 * np.maximum(s1, 1e-6) ** 3 * sigma**4)  # enough support, not all on a line
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0).astype(np.float32)
    channels = values[..., None] if values.ndim == 2 else values
    fits = []
    for k in range(channels.shape[2]):
        x = np.where(weight > 0, channels[..., k], 0.0).astype(np.float32) * weight
        t1 = blur(x)
        r1, r2 = blur(x * u) - u * t1, blur(x * v) - v * t1
        fits.append(((i00 * t1 + i01 * r1 + i02 * r2) * inv, (i01 * t1 + i11 * r1 + i12 * r2) * inv,
                     (i02 * t1 + i12 * r1 + i22 * r2) * inv))
    a, b, c = (np.stack([f[j] for f in fits], axis=-1) for j in range(3))
    if values.ndim == 2:
        a, b, c = a[..., 0], b[..., 0], c[..., 0]
    return a, b, c, ok


def normals_from_gradient(z: np.ndarray, z_u: np.ndarray, z_v: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """Unit normals of a depth map given its value and pixel derivatives (the formula of :func:`normals_from_depth`)."""
    u = np.arange(z.shape[1], dtype=np.float32) - np.float32(intrinsics.cx)
    v = np.arange(z.shape[0], dtype=np.float32) - np.float32(intrinsics.cy)
    normals = np.stack([np.float32(intrinsics.fx) * z_u, -np.float32(intrinsics.fy) * z_v,
                        z + u[None, :] * z_u + v[:, None] * z_v], axis=-1).astype(np.float32)
    return normals / np.maximum(norm3(normals), 1e-12)[..., None]


def joint_bilateral_depth(depth_m: np.ndarray, guide_rgb: np.ndarray, sigma_space: float,
                          sigma_colour: float = 20.0) -> np.ndarray:
    """Joint (cross) bilateral filter of depth guided by the colour image (``cv2.ximgproc.jointBilateralFilter``).

    Normalised over the valid pixels: the filter runs on ``depth·valid`` and on ``valid`` with the same weights.
    ``sigma_space`` in pixels, ``sigma_colour`` in 8-bit grey levels of the guide.
    """
    valid = ~hole_mask(depth_m)
    guide = np.asarray(guide_rgb, dtype=np.float32)
    diameter = 2 * int(np.ceil(2 * sigma_space)) + 1
    filt = cv2.ximgproc.jointBilateralFilter
    num = filt(guide, np.where(valid, depth_m, 0.0).astype(np.float32), diameter, sigma_colour, sigma_space)
    den = filt(guide, valid.astype(np.float32), diameter, sigma_colour, sigma_space)
    return np.where(valid & (den > 1e-3), num / np.maximum(den, 1e-6), np.nan).astype(np.float32)


def plane_fit_depth(depth_m: np.ndarray, intrinsics: Intrinsics, ksize: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares plane ``z ≈ a + b·du + c·dv`` over each window's valid pixels.

    Returns (depth ``a`` at the centre, normals of the fitted plane — the gradient (b, c) through
    :func:`normals_from_depth`'s formula —, valid). Defined where the pixel is measured and its window holds ≥ 3
    non-collinear valid pixels.
    """
    valid = ~hole_mask(depth_m)
    w = valid.astype(np.float64)
    z = np.where(valid, depth_m, 0.0).astype(np.float64)
    r = ksize // 2
    offsets = np.arange(-r, r + 1, dtype=np.float64)
    du = np.tile(offsets, (ksize, 1))
    dv = du.T

    def corr(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
        return cv2.filter2D(image, cv2.CV_64F, kernel, borderType=cv2.BORDER_CONSTANT)

    ones = np.ones((ksize, ksize))
    s = {name: corr(w, k) for name, k in (("1", ones), ("u", du), ("v", dv), ("uu", du * du), ("vv", dv * dv),
                                          ("uv", du * dv))}
    t = {name: corr(z, k) for name, k in (("1", ones), ("u", du), ("v", dv))}
    matrix = np.stack([np.stack([s["1"], s["u"], s["v"]], -1), np.stack([s["u"], s["uu"], s["uv"]], -1),
                       np.stack([s["v"], s["uv"], s["vv"]], -1)], -2)
    rhs = np.stack([t["1"], t["u"], t["v"]], -1)
    det = np.linalg.det(matrix)
    ok = valid & (s["1"] >= 3) & (np.abs(det) > 1e-6)
    matrix[~ok] = np.eye(3)
    coef = np.linalg.solve(matrix, rhs[..., None])[..., 0]
    a, zu, zv = coef[..., 0], coef[..., 1], coef[..., 2]
    u = np.arange(z.shape[1], dtype=np.float64) - intrinsics.cx
    v = np.arange(z.shape[0], dtype=np.float64) - intrinsics.cy
    normals = np.stack([intrinsics.fx * zu, -intrinsics.fy * zv, a + u[None, :] * zu + v[:, None] * zv], -1)
    length = np.linalg.norm(normals, axis=-1)
    ok &= np.isfinite(length) & (length > 1e-12)
    normals = np.where(ok[..., None], normals / np.where(ok, length, 1.0)[..., None], 0.0).astype(np.float32)
    return np.where(ok, a, np.nan).astype(np.float32), normals, ok
