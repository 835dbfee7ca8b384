"""Training augmentations: geometry (image, normals and mask together) and image-side sim-to-real noise.

Convention: images RGB uint8 or float32 in [0, 1], H×W×3; normals camera space (+x right, +y up,
+z toward the camera), H×W×3, zero outside the mask; mask bool H×W.

Geometric jitter and the resize to the training size are one affine warp. Normals transform like
directions under its linear part: flip negates n_x, an in-plane rotation rotates (n_x, n_y), n_z is
unchanged. Every random choice comes from the ``np.random.Generator`` passed in, so a sample's
augmentation is a pure function of its seed (exact resume, identical across DDP restarts).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from facenormals.training.config import AugmentSection


def geometric_matrix(src_size: int, dst_size: int, rng: np.random.Generator | None,
                     cfg: AugmentSection | None, window: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """2×3 affine from source pixels to destination pixels: resize, plus random flip/rotation/zoom/shift.

    ``window``: range of the fraction of the source side that the destination shows (a random window
    inside the crop; 1 = the whole crop).
    """
    scale = dst_size / src_size
    angle, zoom, tx, ty, flip = 0.0, 1.0, 0.0, 0.0, False
    c_src, c_dst = (src_size - 1) / 2.0, (dst_size - 1) / 2.0
    if rng is not None and cfg is not None:
        flip = rng.random() < cfg.flip
        angle = math.radians(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg))
        zoom = 1.0 + rng.uniform(-cfg.scale, cfg.scale)
        tx, ty = rng.uniform(-cfg.shift, cfg.shift, size=2) * dst_size
        fraction = rng.uniform(*window)
        if fraction < 1.0:  # look at a window of the crop: zoom in, centre it anywhere inside the crop
            zoom /= fraction
            c_src += rng.uniform(-0.5, 0.5, size=2) * (1.0 - fraction) * src_size
    c_src = np.broadcast_to(np.asarray(c_src, dtype=np.float64), (2,))
    s = scale * zoom
    cos, sin = math.cos(angle) * s, math.sin(angle) * s
    linear = np.array([[cos, -sin], [sin, cos]])
    if flip:
        linear = linear @ np.diag([-1.0, 1.0])
    offset = np.array([c_dst + tx, c_dst + ty]) - linear @ c_src
    return np.hstack([linear, offset[:, None]])


def warp_normals(normals: np.ndarray, mask: np.ndarray, matrix: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Warp a normal map and its mask; vectors are rotated/flipped with the warp and renormalised."""
    warped = cv2.warpAffine(normals.astype(np.float32), matrix, (size, size), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    weight = cv2.warpAffine(mask.astype(np.float32), matrix, (size, size), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    linear = matrix[:, :2] / math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    flip_y = np.diag([1.0, -1.0])  # image directions are y-down; normals are y-up
    rotate = (flip_y @ linear @ flip_y).astype(np.float32)
    xy = warped[..., :2] @ rotate.T
    out = np.concatenate([xy, warped[..., 2:]], axis=2)
    length = np.linalg.norm(out, axis=2, keepdims=True)
    new_mask = (weight > 0.5) & (length[..., 0] > 1e-3)
    out = np.where(new_mask[..., None], out / np.maximum(length, 1e-6), 0.0).astype(np.float32)
    return out, new_mask


def warp_image(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    shrink = abs(np.linalg.det(matrix[:, :2])) < 0.8
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT101)


def warp_mask(mask: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    weight = cv2.warpAffine(mask.astype(np.float32), matrix, (size, size), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return weight > 0.5


def _colour(image: np.ndarray, rng: np.random.Generator, cfg: AugmentSection) -> np.ndarray:
    image = image * (1.0 + rng.uniform(-cfg.brightness, cfg.brightness))
    mean = image.mean()
    image = (image - mean) * (1.0 + rng.uniform(-cfg.contrast, cfg.contrast)) + mean
    gray = image.mean(axis=2, keepdims=True)
    image = gray + (image - gray) * (1.0 + rng.uniform(-cfg.saturation, cfg.saturation))
    image = image * (1.0 + rng.uniform(-cfg.hue_gain, cfg.hue_gain, size=3)).astype(np.float32)
    image = np.clip(image, 0.0, 1.0)
    return np.power(image, math.exp(rng.uniform(-cfg.gamma, cfg.gamma))).astype(np.float32)


def _occlude(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    """Paint one ellipse or rectangle (flat colour or noise texture) over part of the face, in place."""
    size = image.shape[0]
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return
    k = rng.integers(rows.size)
    cy, cx = int(rows[k]), int(cols[k])
    ax, ay = (rng.uniform(0.08, 0.25, size=2) * size).astype(int) + 1
    stamp = np.zeros(image.shape[:2], np.uint8)
    if rng.random() < 0.5:
        cv2.ellipse(stamp, (cx, cy), (int(ax), int(ay)), float(rng.uniform(0, 180)), 0, 360, 1, -1)
    else:
        cv2.rectangle(stamp, (cx - int(ax), cy - int(ay)), (cx + int(ax), cy + int(ay)), 1, -1)
    colour = rng.random(3).astype(np.float32)
    if rng.random() < 0.5:
        fill = np.broadcast_to(colour, image.shape)
    else:
        low = rng.random((max(2, size // 16), max(2, size // 16), 3)).astype(np.float32)
        fill = 0.5 * cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC) + 0.5 * colour
    inside = stamp.astype(bool)
    image[inside] = np.clip(fill[inside], 0.0, 1.0)


def photometric(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, cfg: AugmentSection) -> np.ndarray:
    """Sim-to-real image noise on a float32 [0, 1] image: colour, gamma, grayscale, occluder, blur, noise, JPEG."""
    size = image.shape[0]
    image = _colour(image, rng, cfg)
    if rng.random() < cfg.grayscale:
        image = np.repeat(image.mean(axis=2, keepdims=True), 3, axis=2)
    if rng.random() < cfg.occluder:
        _occlude(image, mask, rng)
    if rng.random() < cfg.blur:
        sigma = rng.uniform(0.3, cfg.blur_sigma) * size / 256.0
        image = cv2.GaussianBlur(image, (0, 0), sigmaX=max(sigma, 0.1))
    if rng.random() < cfg.noise:
        image = image + rng.normal(0.0, rng.uniform(0.0, cfg.noise_std), size=image.shape).astype(np.float32)
    image = np.clip(image, 0.0, 1.0)
    if rng.random() < cfg.jpeg:
        quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
        as_u8 = np.round(image * 255.0).astype(np.uint8)
        ok, data = cv2.imencode(".jpg", as_u8, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED).astype(np.float32) / 255.0
    return np.ascontiguousarray(image, dtype=np.float32)


def jitter_landmarks(points: np.ndarray, size: int, rng: np.random.Generator, cfg: AugmentSection) -> np.ndarray:
    """Landmark crop points N×3 (crop pixels of a ``size``² crop) moved like a live detector's error: one small
    similarity of the whole face about its centroid plus independent noise per point; z is scaled with the face.

    The spreads are given for a 256² crop and scale with ``size``. Returns a new array; ``points`` is unchanged.
    """
    unit = size / 256.0
    angle = math.radians(rng.normal(0.0, cfg.prior_rotate_deg))
    zoom = 1.0 + rng.normal(0.0, cfg.prior_scale)
    shift = rng.normal(0.0, cfg.prior_shift_px * unit, size=2)
    noise = rng.normal(0.0, cfg.prior_point_px * unit, size=(len(points), 2))
    centre = points[:, :2].mean(axis=0)
    cos, sin = math.cos(angle) * zoom, math.sin(angle) * zoom
    linear = np.array([[cos, -sin], [sin, cos]])
    out = np.array(points, dtype=np.float64, copy=True)
    out[:, :2] = (points[:, :2] - centre) @ linear.T + centre + shift + noise
    out[:, 2] = points[:, 2] * zoom
    return out
