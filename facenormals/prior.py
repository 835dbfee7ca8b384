"""The coarse-face prior of a prior model: which coarse face, drawn how, fed as which channels.

A prior model (``ModelCfg.prior`` ≠ "none") takes 4 channels after the RGB: the normals of a coarse face
extended over the whole crop, and that face's coverage. Two coarse faces exist, both built from the same
MediaPipe landmarks (``ModelCfg.prior_source``, stored in checkpoints and ONNX metadata):

* ``"mediapipe-mesh"``: MediaPipe's own 468-point mesh, smooth-shaded (:mod:`facenormals.mesh_prior`);
  the prior of the models trained before issue 13.
* ``"ict-fit"``: an ICT-FaceKit face fitted to the landmarks (:mod:`facenormals.ict_fit`), drawn at
  :data:`ICT_DRAW_PX`² at most, smoothed with a Gaussian of :data:`ICT_SMOOTH_PX` (in 256² pixels) and resized
  to the crop: the fit's high-frequency detail is ICT's, not the person's. The smoothed face was ~1° closer to
  real scans than the sharp one; drawn at 128² rather than 256² it is 0.04–0.19° closer again on all three
  validation sets (real scan, ICT, profiles; session 4) and ~3.5 ms cheaper per face.
* ``"ict-blend"``: the two above averaged per pixel (the ICT fit's share :func:`blend_ict_weight`, by the fitted
  yaw), both drawn at the ICT face's size and resized once, with the ICT face's coverage. Two coarse faces with
  different errors average to a better one (issue 13 item 3): on all three validation sets the blend is closer to
  the truth than either alone, most on profiles, where the fit alone is worse than the mesh (README "Coarse face").

All three are also the parameter-free baselines ``facenormals eval --baseline mediapipe-mesh|ict-fit|ict-blend``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path

import cv2
import numba
import numpy as np

from facenormals import ict_fit, mesh_prior
from facenormals.dataset import Sample, load_sample, scan_dataset
from facenormals.geometry import normalise_rows
from facenormals.model_config import PRIOR_SOURCES

ICT_SMOOTH_PX = 3.0  # Gaussian σ on a 256² crop
ICT_DRAW_PX = 128  # the fitted face is drawn at most this size, then resized to the crop
# "ict-blend": the ICT fit's share on faces the fit turns less than BLEND_TURN_DEG[0], and beyond BLEND_TURN_DEG[1],
# where the fit's outline guesses slide and MediaPipe's own depth is worth more (README "Coarse face", session 41)
BLEND_ICT_WEIGHT = 0.8
BLEND_PROFILE_ICT_WEIGHT = 0.5
BLEND_TURN_DEG = (38.0, 50.0)
IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def blend_ict_weight(yaw_deg: float) -> float:
    """The ICT fit's share of "ict-blend" for a face fitted at this yaw (degrees, either side): ``BLEND_ICT_WEIGHT``
    up to ``BLEND_TURN_DEG[0]``, ``BLEND_PROFILE_ICT_WEIGHT`` from ``BLEND_TURN_DEG[1]``, a smoothstep between (no
    kink as a tracked face turns)."""
    start, end = BLEND_TURN_DEG
    t = min(max((abs(yaw_deg) - start) / (end - start), 0.0), 1.0)
    return BLEND_ICT_WEIGHT + (BLEND_PROFILE_ICT_WEIGHT - BLEND_ICT_WEIGHT) * t * t * (3.0 - 2.0 * t)


def check_source(source: str) -> str:
    if source not in PRIOR_SOURCES:
        raise ValueError(f"unknown prior source {source!r}; choose one of {list(PRIOR_SOURCES)}")
    return source


def _unit(normals: np.ndarray) -> np.ndarray:
    """H×W×3 float32 normals (C-contiguous, as OpenCV returns them) scaled to unit length in place (zero stays zero)."""
    normalise_rows(normals.reshape(-1, 3), 1e-6)
    return normals


def _smooth(normals: np.ndarray, sigma: float) -> np.ndarray:
    return _unit(cv2.GaussianBlur(normals, (0, 0), sigma))


def coarse_prior(points: np.ndarray, size: int, source: str,
                 previous: ict_fit.IctFit | None = None) -> tuple[np.ndarray, np.ndarray, ict_fit.IctFit | None]:
    """Landmark crop points (N×3, our frame) → (normals S×S×3 over the whole crop, coverage S×S, the ICT fit or None).

    What a prior model sees and what the baseline of ``source`` predicts. ``previous``: a tracked face's last
    fit (warm start; the ICT sources only).
    """
    normals, coverage, fit = _drawn_prior(points, size, source, previous)
    return (*_to_crop(normals, coverage, size), fit)


def _drawn_prior(points: np.ndarray, size: int, source: str,
                 previous: ict_fit.IctFit | None) -> tuple[np.ndarray, np.ndarray, ict_fit.IctFit | None]:
    """:func:`coarse_prior` before the resize to the crop: (normals, coverage) as drawn, the ICT fit or None."""
    if check_source(source) == "mediapipe-mesh":
        normals, coverage = mesh_prior.rasterize_mesh_normals(points, mesh_prior.mesh_triangles(close_holes=True), size)
        return mesh_prior.fill_prior(normals, coverage), coverage, None
    fit = ict_fit.fit_landmarks(points, ict_fit.load_ict_face(), previous=previous)
    return (*_ict_source_drawn(fit, points, size, source), fit)


def _ict_source_drawn(fit: ict_fit.IctFit, points: np.ndarray, size: int, source: str) -> tuple[np.ndarray, np.ndarray]:
    """An ICT source's coarse face of a given fit, as drawn (at most :data:`ICT_DRAW_PX`²): the fit alone, or blended
    with MediaPipe's mesh of the same landmark crop ``points``."""
    draw = min(size, ICT_DRAW_PX)
    normals, coverage = draw_ict(fit, ict_fit.load_ict_face(), size, draw)
    if source == "ict-blend" and coverage.any():
        normals = _blend_mesh(normals, points, size, draw, blend_ict_weight(fit.euler_deg()[0]))
    return normals, coverage


def fitted_prior(fit: ict_fit.IctFit, points: np.ndarray, size: int, source: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`coarse_prior` of an ICT source for a fit made elsewhere (other fit settings, a fit with a swapped
    identity): (normals S×S×3 over the crop, coverage S×S); ``points``: the landmark crop points the blend's mesh is
    drawn from."""
    if check_source(source) == "mediapipe-mesh":
        raise ValueError("fitted_prior draws an ICT source ('ict-fit' or 'ict-blend'), not 'mediapipe-mesh'")
    return _to_crop(*_ict_source_drawn(fit, points, size, source), size)


def draw_ict(fit: ict_fit.IctFit, face: ict_fit.IctFace, size: int, draw: int) -> tuple[np.ndarray, np.ndarray]:
    """A posed ICT face on a size² crop drawn at ``draw``²: (normals extended over the crop and smoothed, coverage)."""
    normals, coverage, _ = mesh_prior.rasterize_checked(resize_crop_points(fit.crop_points(face), size, draw),
                                                       _ict_triangles(face), draw)
    if not coverage.any():
        return normals, coverage
    return _smooth(mesh_prior.fill_prior(normals, coverage), ICT_SMOOTH_PX * draw / 256.0), coverage


@lru_cache(maxsize=4)
def _ict_triangles(face: ict_fit.IctFace) -> np.ndarray:
    """The ICT face's triangles checked once and kept as int32 (read-only) for :func:`mesh_prior.rasterize_checked`."""
    return _frozen(mesh_prior.checked_triangles(face.triangles, len(face.neutral), np.int32))


@lru_cache(maxsize=1)
def _mesh_triangles() -> np.ndarray:
    """MediaPipe's closed mesh, checked once, int32 (read-only), for :func:`mesh_prior.rasterize_checked`."""
    return _frozen(mesh_prior.checked_triangles(mesh_prior.mesh_triangles(close_holes=True), mesh_prior.NUM_MESH_POINTS,
                                                 np.int32))


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)  # cached and shared by every frame
    return array


def _blend_mesh(fitted: np.ndarray, points: np.ndarray, size: int, draw: int, weight: float) -> np.ndarray:
    """"ict-blend": the drawn ICT normals averaged per pixel with MediaPipe's mesh drawn at the same size, ``weight``
    on the fit (the mesh drawn at ``draw``² and blended before the one resize costs a quarter of drawing it at the
    crop's size).

    In place on ``fitted`` (C-contiguous float32), one pass: the mesh's extension (``fill_prior``), the weighted sum
    and the renormalisation fused (:func:`_blend_filled`), bit-identical to those three steps in numpy."""
    mesh, covered, _ = mesh_prior.rasterize_checked(resize_crop_points(points, size, draw), _mesh_triangles(), draw)
    if covered.any() and not covered.all():
        labels = mesh_prior.nearest_labels(covered)
    else:  # no mesh: its extension is zero; all mesh: itself (each pixel its own label)
        labels = np.arange(covered.size, dtype=np.int32).reshape(covered.shape)
    _blend_filled(fitted, mesh, covered, labels, np.float32(weight), np.float32(1.0 - weight), np.float32(1e-6))
    return fitted


@numba.njit(cache=True, nogil=True)
def _blend_filled(fitted: np.ndarray, mesh: np.ndarray, covered: np.ndarray, labels: np.ndarray, w_fit: np.float32,
                  w_mesh: np.float32, floor: np.float32) -> None:  # pragma: no cover - JIT
    """fitted ← unit(fitted·w_fit + w_mesh·fill(mesh)), fill as :func:`facenormals.mesh_prior.fill_prior` (each
    pixel the normal of the covered pixel it is labelled with; none covered: zero). The float32 operations of
    ``fitted *= w; fitted += (1 − w) * fill; _unit(fitted)`` in their order (bit-identical)."""
    table = mesh_prior.label_table(mesh, covered, labels)
    height, width = labels.shape
    for i in range(height):
        for j in range(width):
            label = labels[i, j]
            x = fitted[i, j, 0] * w_fit + w_mesh * table[label, 0]
            y = fitted[i, j, 1] * w_fit + w_mesh * table[label, 1]
            z = fitted[i, j, 2] * w_fit + w_mesh * table[label, 2]
            d = max(np.sqrt(x * x + y * y + z * z), floor)
            fitted[i, j, 0], fitted[i, j, 1], fitted[i, j, 2] = x / d, y / d, z / d


def _to_crop(normals: np.ndarray, coverage: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Drawn normals and coverage resized to the crop (empty: the no-face prior): :func:`_to_crop_into`, read back
    as an S×S×3 array and a boolean mask."""
    row = np.empty((4, size, size), dtype=np.float32)
    _to_crop_into(normals, coverage, size, row)
    return np.ascontiguousarray(row[:3].transpose(1, 2, 0)), row[3] > 0.5


def _to_crop_into(normals: np.ndarray, coverage: np.ndarray, size: int, out: np.ndarray) -> None:
    """Drawn normals and coverage resized to the crop, written straight into a 4×S×S network input row (normals
    channel-first, then coverage; no face: zeros): the renormalisation, the transpose and the coverage threshold in one
    pass (:func:`_unit_into_chw`)."""
    if not coverage.any():
        out[:] = 0.0
    elif normals.shape[0] == size:
        out[:3] = normals.transpose(2, 0, 1)
        out[3] = coverage
    else:
        _unit_into_chw(cv2.resize(normals, (size, size), interpolation=cv2.INTER_LINEAR),
                       cv2.resize(coverage.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR),
                       out, np.float32(1e-6))


@numba.njit(cache=True, nogil=True)
def _unit_into_chw(normals: np.ndarray, coverage: np.ndarray, out: np.ndarray,
                   floor: np.float32) -> None:  # pragma: no cover - JIT
    """out[:3] ← the H×W×3 ``normals`` scaled to unit length (as ``normalise_rows``), channel-first; out[3] ←
    ``coverage`` > 0.5 as 0/1. Bit-identical to ``_unit``, ``out[:3] = n.transpose(2, 0, 1)`` and ``out[3] = c > 0.5``."""
    half, one, zero = np.float32(0.5), np.float32(1.0), np.float32(0.0)
    for i in range(normals.shape[0]):
        for j in range(normals.shape[1]):
            x, y, z = normals[i, j, 0], normals[i, j, 1], normals[i, j, 2]
            d = max(np.sqrt(x * x + y * y + z * z), floor)
            out[0, i, j], out[1, i, j], out[2, i, j] = x / d, y / d, z / d
            out[3, i, j] = one if coverage[i, j] > half else zero


def resize_crop_points(points: np.ndarray, size: int, new_size: int) -> np.ndarray:
    """Crop points (N×3, our frame: column x, row −y) of a size² crop in the pixels of the same crop resized to
    new_size² (pixel centres map as in ``cv2.resize``); depth scales with the pixels."""
    if new_size == size:
        return points
    ratio = new_size / size
    out = np.asarray(points, dtype=np.float64) * ratio
    out += np.array([0.5 * (ratio - 1.0), 0.5 * (1.0 - ratio), 0.0])  # in place: one array fewer
    return out


def prior_input(landmarks_px: np.ndarray, depth_px: np.ndarray | None, crop_matrix: np.ndarray, size: int,
                source: str, out: np.ndarray | None = None,
                previous: ict_fit.IctFit | None = None) -> tuple[np.ndarray, ict_fit.IctFit | None]:
    """A prior model's 4 extra input channels (normals, coverage) for one crop: (4×S×S float32, the ICT fit or None).

    From a detector's frame-pixel landmarks and MediaPipe depth (the realtime loop, the Python API); no depth
    (no mesh) gives the fallback: zeros, coverage 0. ``out``: write into this 4×S×S array instead;
    ``previous``: the same tracked face's last fit (a warm start).
    """
    out = np.empty((4, size, size), dtype=np.float32) if out is None else out
    if depth_px is None:
        out[:] = 0.0
        return out, None
    points = mesh_prior.crop_points_from_pixels(landmarks_px, depth_px, crop_matrix)
    normals, coverage, fit = _drawn_prior(points, size, source, previous)
    _to_crop_into(normals, coverage, size, out)  # what coarse_prior gives, written into ``out`` in one pass
    return out, fit


def stored_crop_points(root: str | Path, name: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """A sample's stored landmarks (``facenormals data prior``) as crop points (N×3) on its own image of ``shape``;
    None when MediaPipe found no face."""
    landmarks = mesh_prior.read_stored_landmarks(root, name)
    return None if landmarks is None else mesh_prior.landmarks_in_crop(landmarks, shape, IDENTITY)


def paired_with_stored_points(root: str | Path) -> Iterator[tuple[str, Sample, np.ndarray]]:
    """A set's samples with ground-truth normals and stored landmarks: (name, sample, crop points N×3)."""
    for files in scan_dataset(root):
        if files.normals is None:
            continue
        sample = load_sample(files)
        points = stored_crop_points(root, files.name, sample.image.shape)
        if points is not None:
            yield files.name, sample, points


def stored_prior(root: str | Path, name: str, shape: tuple[int, ...], source: str,
                 move_points: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(normals, coverage) of a sample's stored landmarks on its own square image of ``shape``; empty if none.

    ``move_points``: applied to the landmark crop points (N×3) before the coarse face is built (training's jitter).
    """
    if shape[0] != shape[1]:
        raise ValueError(f"sample '{name}' in {root}: the prior needs a square crop, got {shape[:2]}")
    points = stored_crop_points(root, name, shape)
    if points is None:
        return mesh_prior.empty_prior(shape[0])
    if move_points is not None:
        points = move_points(points)
    normals, coverage, _ = coarse_prior(points, shape[0], source)
    return normals, coverage


def prior_for_crop(crop_rgb_uint8: np.ndarray, face_mesh: object, source: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """Run MediaPipe (static mode) on a square RGB crop → (normals S×S×3 over the crop, coverage, found)."""
    landmarks = mesh_prior.crop_landmarks(crop_rgb_uint8, face_mesh)
    size = crop_rgb_uint8.shape[0]
    if landmarks is None:
        return (*mesh_prior.empty_prior(size), False)
    normals, coverage, _ = coarse_prior(mesh_prior.landmarks_in_crop(landmarks, crop_rgb_uint8.shape, IDENTITY),
                                        size, source)
    return normals, coverage, True


def prior_channels(images: np.ndarray, face_mesh: object, source: str) -> np.ndarray:
    """A prior model's extra input for a batch of crops: N×3×S×S float RGB in [0, 1] → N×4×S×S float32."""
    out = np.zeros((images.shape[0], 4, *images.shape[2:]), dtype=np.float32)
    for i, image in enumerate(images):
        rgb = np.clip(np.round(image.transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)
        normals, coverage, _ = prior_for_crop(rgb, face_mesh, source)
        out[i, :3] = normals.transpose(2, 0, 1)
        out[i, 3] = coverage
    return out


def network_inputs(images: np.ndarray, in_chans: int, source: str | None) -> np.ndarray:
    """N×3×S×S RGB crops → what a model takes: unchanged for RGB models (3 channels, ``source`` None); for prior
    models (7) each crop's coarse-face channels appended (:func:`prior_channels`, MediaPipe on each crop)."""
    if in_chans == 3:
        return images
    if in_chans != 7 or source is None:
        raise ValueError(f"the model takes {in_chans} input channels (prior {source!r}); expected 3 (RGB) or 7 "
                         "(RGB + a coarse-face prior)")
    with mesh_prior.create_face_mesh() as face_mesh:
        return np.concatenate([images, prior_channels(images, face_mesh, source)], axis=1)


def source_of(in_chans: int, declared: str | None) -> str | None:
    """A model's prior source from its channel count and metadata: None for RGB models; models exported before
    issue 13 declare none and were all trained on MediaPipe's mesh."""
    if in_chans == 3:
        return None
    return check_source(declared or "mediapipe-mesh")
