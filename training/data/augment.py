"""Camera and image-pipeline effects applied after shading, and backgrounds (cut from real photos or procedural).

Images here are float32 H×W×3 in [0, 1]; "linear" means scene radiance, otherwise display (sRGB-like) values.
"""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np

from facenormals.fileio import DataError, read_rgb

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def tone_map(linear: np.ndarray, face: np.ndarray, rng: np.random.Generator,
             albedo_lum: float = 0.18) -> tuple[np.ndarray, dict]:
    """Auto-exposure on the face, white balance, then a gamma curve.

    The exposure undoes most of the lighting's brightness but only part of the skin's (``albedo_lum``, mean
    face albedo luminance), as metering on a whole frame does: dark skin stays darker than light skin.
    ``linear`` is an H×W×3 image or only its lit pixels (N×3), ``face`` the matching H×W or N mask: black pixels
    stay black, so both give the same values.
    """
    lum = linear[face].mean(axis=1) if face.any() else linear.reshape(-1, 3).mean(axis=1)
    if lum.size == 0:  # no lit pixel at all: as a black image meters
        lum = np.zeros(1, np.float32)
    target = rng.uniform(0.45, 1.0) * (max(albedo_lum, 1e-3) / 0.18) ** 0.6
    exposure = min(target, 1.0) / max(float(np.percentile(lum, 97)), 1e-4)
    balance = rng.uniform(0.92, 1.08, 3).astype(np.float32)
    gamma = rng.uniform(2.0, 2.5)
    out = np.clip(linear * exposure * balance, 0, 1) ** (1 / gamma)
    return out.astype(np.float32), {"exposure": round(float(exposure), 4), "gamma": round(float(gamma), 3)}


def degrade(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Blur, sensor noise, JPEG: display-space image in [0, 1] → uint8 RGB."""
    params: dict = {}
    if rng.random() < 0.35:
        sigma = rng.uniform(0.3, 1.3)
        image = cv2.GaussianBlur(image, (0, 0), sigma)
        params["blur_sigma"] = round(float(sigma), 3)
    if rng.random() < 0.8:
        sigma = rng.uniform(0.002, 0.03)
        noise = rng.standard_normal(image.shape).astype(np.float32) * sigma
        noise += rng.standard_normal((*image.shape[:2], 1)).astype(np.float32) * sigma  # luma-correlated part
        image = image + noise * np.sqrt(np.clip(image, 0.02, 1))
        params["noise_sigma"] = round(float(sigma), 4)
    out = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)
    if rng.random() < 0.6:
        quality = int(rng.integers(35, 96))
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            out = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            params["jpeg_quality"] = quality
    return out, params


class Backgrounds:
    """Random background patches: crops of real photos / video frames when given, procedural ones otherwise."""

    def __init__(self, sources: list[Path] | None = None, max_video_frames: int = 24, p_procedural: float = 0.3):
        self.images: list[np.ndarray] = []
        self.p_procedural = p_procedural
        for src in sources or []:
            self.images.extend(_load_images(Path(src), max_video_frames))

    def sample(self, size: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        if not self.images or rng.random() < self.p_procedural:
            return procedural_background(size, rng), "procedural"
        img = self.images[int(rng.integers(len(self.images)))]
        h, w = img.shape[:2]
        side = int(rng.uniform(0.15, 0.8) * min(h, w))
        side = max(side, min(h, w, 32))
        y = int(rng.integers(0, h - side + 1))
        x = int(rng.integers(0, w - side + 1))
        patch = img[y:y + side, x:x + side]
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        patch = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA if side > size else cv2.INTER_LINEAR)
        patch = patch.astype(np.float32) / 255.0
        if rng.random() < 0.5:  # defocused background, as behind a face in focus
            patch = cv2.GaussianBlur(patch, (0, 0), rng.uniform(1.0, 6.0))
        return np.clip(patch * rng.uniform(0.6, 1.2), 0, 1), "photo"


def _load_images(src: Path, max_video_frames: int) -> list[np.ndarray]:
    if src.is_dir():
        out = []
        for path in sorted(src.iterdir()):
            if path.suffix.lower() in PHOTO_SUFFIXES + VIDEO_SUFFIXES:
                out.extend(_load_images(path, max_video_frames))
        return out
    if src.suffix.lower() in VIDEO_SUFFIXES:
        cap = cv2.VideoCapture(str(src))
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or 1
        step = max(1, total // max_video_frames)
        frames, index = [], 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if index % step == 0:
                frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            index += 1
        cap.release()
        return frames
    try:
        return [read_rgb(src)]
    except DataError:
        return []


def procedural_background(size: int, rng: np.random.Generator) -> np.ndarray:
    """A plausible out-of-focus backdrop: a colour gradient, soft blobs and a little texture."""
    grey = rng.uniform(0.05, 0.85)
    base = np.clip(grey + rng.normal(0, 0.12, 3), 0, 1).astype(np.float32)  # walls: mostly muted colours
    other = np.clip(base * rng.uniform(0.5, 1.5) + rng.normal(0, 0.08, 3), 0, 1).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = _unit_grid(size)
    t = np.clip((np.cos(angle) * (xs - 0.5) + np.sin(angle) * (ys - 0.5)) + 0.5, 0, 1)[..., None]
    img = base * (1 - t) + other * t
    small = max(4, size // 16)
    blobs = rng.uniform(0, 1, (small, small, 1)).astype(np.float32)  # brightness blobs, no rainbow
    blobs = cv2.resize(blobs, (size, size), interpolation=cv2.INTER_CUBIC)
    blobs = cv2.GaussianBlur(blobs, (0, 0), size / 24)[..., None]  # defocused, no grid pattern
    img = img * (0.65 + 0.7 * np.clip(blobs, 0, 1))
    if rng.random() < 0.5:  # edges of furniture/windows: a few soft rectangles
        for _ in range(int(rng.integers(1, 4))):
            x0, y0 = rng.integers(0, size, 2)
            x1, y1 = x0 + rng.integers(size // 8, size), y0 + rng.integers(size // 8, size)
            shade = np.clip(img.mean((0, 1)) * rng.uniform(0.4, 1.6) + rng.normal(0, 0.05, 3), 0, 1)
            cv2.rectangle(img, (int(x0), int(y0)), (int(x1), int(y1)), shade.tolist(), -1)
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(1.0, 4.0))
    img += rng.normal(0, 0.01, img.shape).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _unit_grid(size: int) -> np.ndarray:
    """(ys, xs) pixel grid / size, float32: a per-process constant of procedural_background (read-only)."""
    grid = np.mgrid[0:size, 0:size].astype(np.float32) / size
    grid.flags.writeable = False
    return grid


def composite(foreground: np.ndarray, coverage: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Anti-aliased composite: coverage blurred by ~½ pixel; the foreground is extended under the soft edge."""
    alpha = cv2.GaussianBlur(coverage.astype(np.float32), (0, 0), 0.6)[..., None]
    grown = cv2.dilate(foreground, np.ones((3, 3), np.uint8))
    fg = np.where(coverage[..., None], foreground, grown)
    return (fg * alpha + background * (1 - alpha)).astype(np.float32)


def skin_detail(shape: tuple[int, int], rng: np.random.Generator, strength: float) -> np.ndarray:
    """Per-pixel multiplicative albedo noise (pores, fine texture) smoothed to 1–2 pixels."""
    noise = rng.standard_normal(shape).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), rng.uniform(0.6, 1.2))
    noise /= max(float(noise.std()), 1e-6)
    return (1.0 + strength * noise)[..., None]
