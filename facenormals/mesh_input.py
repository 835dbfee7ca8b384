"""Steadier face-mesh landmarks under changing light (issue 16): what the mesh sees, and its mirror image.

MediaPipe's landmarks move with the light (0.2–0.5 px on the sample clip's two lighting extremes; 1.7 px mean on
ICT renders lit from the left, right, above, front, dim and flat), and every coarse face built on them follows:
most of the output's lighting sensitivity was the landmarks' (README "Realtime", issue 16). Two cheap remedies,
applied to the face mesh's input only — the network always sees the frame itself:

* :func:`flatten_light` scales the frame by mid-grey over its heavily blurred luminance (σ = 1/4 of the larger
  side, computed at 1/8 scale), so a change of exposure or gain, or a smooth light gradient across the frame,
  barely reaches the mesh. ~0.5 CPU ms on 640×480.
* :func:`average_with_mirror`: the mesh also runs on the mirrored frame, and each landmark is averaged with its
  mirror partner's (:func:`mirror_index`, the left ↔ right correspondence of MediaPipe's 478 points). The model's
  light- and noise-dependent errors differ between the two views and partly cancel. One more face-mesh pass
  (~5.5 CPU ms on 640×480): :class:`facenormals.faces.FaceMesh` does it for still images, not in video by default.

The landmark convention is :mod:`facenormals.faces`' (normalised = pixel-centre position ÷ size): pixel x of the
mirrored frame is ``width − 1 − x``, so normalised x maps to ``(width − 1) / width − x``.
"""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numba
import numpy as np

MIRROR_ASSET = Path(__file__).resolve().parent / "assets" / "face_mesh_mirror.npy"
FLAT_SIGMA = 0.25  # blur σ as a share of the frame's larger side: far coarser than the face's features (1/16
# and 1/8 flattened a face that fills the frame into worse landmarks on ICT renders)
FLAT_DOWN = 8  # the luminance is blurred at 1/8 scale (the cost is then mostly the final multiply)
FLAT_FLOOR = 4.0  # grey levels added to the blurred luminance: black regions are not amplified into noise
FLAT_LEVEL = 128.0  # the blurred luminance is brought to mid-grey (the frame's own mean kept the sample's gain
# change: lighting pairs 0.81° vs 0.67° at σ 1/16)
MATCH_SHARE = 0.25  # a mirrored face matches a face when their centres are closer than this share of its size


def flatten_light(rgb: np.ndarray) -> np.ndarray:
    """The RGB uint8 frame × mid-grey ÷ its blurred luminance (uint8, same shape): local brightness ~128 everywhere.

    >>> ramp = np.linspace(0.5, 1.0, 160, dtype=np.float32)[None, :, None]  # light falling off to the left
    >>> photo = (np.indices((120, 160)).sum(axis=0) % 7 * 20 + 60).astype(np.float32)[..., None].repeat(3, axis=2)
    >>> dim, bright = (photo * ramp * 0.5).astype(np.uint8), (photo * ramp).astype(np.uint8)
    >>> [int(bright[:, a:a + 40, 0].mean()) for a in (0, 120)]  # left and right quarters
    [66, 112]
    >>> [int(flatten_light(bright)[:, a:a + 40, 0].mean()) for a in (0, 120)]  # most of the ramp is gone
    [109, 131]
    >>> [int(flatten_light(dim)[:, a:a + 40, 0].mean()) for a in (0, 120)]  # and the gain
    [103, 127]
    """
    height, width = rgb.shape[:2]
    if height % FLAT_DOWN == 0 and width % FLAT_DOWN == 0:  # 640×480, 1280×720, 1920×1080: whole 8×8 blocks
        small = np.empty((height // FLAT_DOWN, width // FLAT_DOWN, 3), dtype=np.uint8)
        _block_mean(np.ascontiguousarray(rgb), FLAT_DOWN, small)
    else:
        small = cv2.resize(rgb, (max(width // FLAT_DOWN, 1), max(height // FLAT_DOWN, 1)), interpolation=cv2.INTER_AREA)
    luminance = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)
    blurred = cv2.GaussianBlur(luminance, (0, 0), max(width, height) * FLAT_SIGMA / FLAT_DOWN) + FLAT_FLOOR
    gain = cv2.resize(FLAT_LEVEL / blurred, (width, height), interpolation=cv2.INTER_LINEAR)
    out = np.empty((height, width, 3), dtype=np.uint8)
    _apply_gain(np.ascontiguousarray(rgb), np.ascontiguousarray(gain), out)
    return out


@numba.njit(cache=True, nogil=True)
def _block_mean(rgb: np.ndarray, k: int, out: np.ndarray) -> None:  # pragma: no cover - JIT
    """out = each k×k block's mean per channel, rounded half to even: ``cv2.resize(rgb, (w / k, h / k),
    interpolation=cv2.INTER_AREA)`` for sizes that are multiples of k (OpenCV's integer-scale area path: the block's
    integer sum × float32(1 / k²), cvRound), bit-identical, ~0.14 instead of ~0.23 ms for 640×480 (the k source rows
    summed element-wise first, which LLVM vectorises)."""
    width = rgb.shape[1] * 3
    scale = np.float32(1.0) / np.float32(k * k)
    rows = np.empty(width, dtype=np.int32)
    for i in range(out.shape[0]):
        src = rgb[i * k].reshape(width)
        for x in range(width):
            rows[x] = src[x]
        for a in range(1, k):
            src = rgb[i * k + a].reshape(width)
            for x in range(width):
                rows[x] += src[x]
        dst = out[i].reshape(out.shape[1] * 3)
        for j in range(out.shape[1]):
            for c in range(3):
                total = 0
                for b in range(k):
                    total += rows[(j * k + b) * 3 + c]
                dst[j * 3 + c] = np.uint8(min(max(np.rint(np.float32(total) * scale), np.float32(0.0)), np.float32(255.0)))


@numba.njit(cache=True, nogil=True)
def _apply_gain(rgb: np.ndarray, gain: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - JIT
    """out = rgb × gain per pixel, rounded half to even and saturated to uint8: what ``cv2.multiply(rgb,
    cv2.merge((gain,) * 3), dtype=cv2.CV_8U)`` computes (float32 product, cvRound), bit-identical, without the
    3-channel float gain image (~0.15 instead of ~0.4 ms on 640×480). C-contiguous H×W×3 ``rgb`` and ``out``."""
    height, width = gain.shape
    src, dst, flat_gain = rgb.reshape(height * width * 3), out.reshape(height * width * 3), gain.reshape(height * width)
    for p in range(height * width):  # flat indices: LLVM vectorises this form (~7× the nested loops' speed)
        g = flat_gain[p]
        for c in range(3):
            v = np.rint(np.float32(src[3 * p + c]) * g)
            dst[3 * p + c] = np.uint8(np.int32(min(max(v, np.float32(0.0)), np.float32(255.0))))


@functools.cache
def mirror_index() -> np.ndarray:
    """For each of the 478 landmarks, its mirror partner's index (int64; an involution; midline points map to
    themselves). Derived by :func:`derive_mirror_index` on renders of the symmetric ICT head; stored as an asset."""
    index = np.load(MIRROR_ASSET, allow_pickle=False).astype(np.int64)
    index.setflags(write=False)
    return index


def from_mirrored(normalised: np.ndarray, width: int) -> np.ndarray:
    """Landmarks found on the mirrored frame (normalised N×3) as landmarks of the frame: partners swapped, x flipped.

    >>> points = np.zeros((478, 3), np.float32)
    >>> points[:, 0] = 0.25
    >>> round(float(from_mirrored(points, 100)[0, 0]), 4)  # pixel 25 of the mirror is pixel 100 − 1 − 25 = 74
    0.74
    """
    out = np.array(normalised[mirror_index()[:len(normalised)]], dtype=np.float32)
    out[:, 0] = np.float32((width - 1) / width) - out[:, 0]
    return out


def average_with_mirror(found: list[np.ndarray], mirrored: list[np.ndarray], width: int,
                        height: int) -> list[np.ndarray]:
    """Each face's landmarks (normalised N×3) averaged with the matching face of the mirrored frame's; a face
    without a match (the mirror pass missed it) keeps its own landmarks. Faces stay in ``found``'s order."""
    scale = np.array([width, height], np.float32)
    candidates = [from_mirrored(points, width) for points in mirrored]
    centres = [points[:, :2].mean(axis=0) * scale for points in candidates]
    used: set[int] = set()
    out = []
    for points in found:
        pixels = points[:, :2] * scale
        size = float(np.ptp(pixels, axis=0).max())
        centre = pixels.mean(axis=0)
        distances = [np.inf if k in used else float(np.linalg.norm(c - centre)) for k, c in enumerate(centres)]
        best = int(np.argmin(distances)) if distances else -1
        if best >= 0 and distances[best] < MATCH_SHARE * size:
            used.add(best)
            out.append((points + candidates[best]) * np.float32(0.5))
        else:
            out.append(points)
    return out


def derive_mirror_index(images: list[np.ndarray]) -> np.ndarray:
    """The mirror partner of each landmark from frontal views of a left–right symmetric face (RGB uint8): MediaPipe
    (plain, still mode) on each image and on its mirror image, the mirror's points flipped back; partner ``j`` of
    landmark ``i`` is the one-to-one assignment (Hungarian) that puts the flipped points on the image's points
    with the least total distance over all images."""
    from scipy.optimize import linear_sum_assignment

    from facenormals.faces import NUM_LANDMARKS, FaceMesh

    cost = np.zeros((NUM_LANDMARKS, NUM_LANDMARKS))
    with FaceMesh(steady=False) as face_mesh:
        for rgb in images:
            direct, flipped = face_mesh.find(rgb), face_mesh.find(np.ascontiguousarray(rgb[:, ::-1]))
            if not direct or not flipped:
                raise ValueError("MediaPipe found no face in an image (or its mirror) given to derive_mirror_index")
            back = flipped[0].points.astype(np.float64)
            back[:, 0] = rgb.shape[1] - 1 - back[:, 0]
            cost += np.linalg.norm(direct[0].points[:, None].astype(np.float64) - back[None], axis=2)
    rows, cols = linear_sum_assignment(cost)  # flipped-back point cols[k] lies on the image's point rows[k]
    index = np.empty(NUM_LANDMARKS, np.int64)
    index[cols] = rows  # the mirror's landmark j sits where the frame's landmark index[j] is
    return index
