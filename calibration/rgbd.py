"""Depth-to-colour extrinsics and depth scale from board views seen by both cameras.

Input: for each view NAME, a colour image, the depth camera's own (infrared) image, and its raw depth map
(uint16 sensor units), all from the same instant. Layout of a board folder::

    colour/NAME.png    ir/NAME.png    depth/NAME.png

The extrinsics come from ``cv2.stereoCalibrate`` with both intrinsics fixed (depth camera = camera 1,
colour = camera 2, so ``X_colour = R · X_depth + t``; OpenCV frame, metres). The depth scale compares the
raw depth inside the board with the board plane's distance from ``solvePnP`` in the depth camera:
``scale = median(z_plane / raw)``. Factory calibration from a RealSense/Kinect needs none of this
(:mod:`facenormals.calibration.calibfile`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facenormals.calibration.calibfile import Calibration
from facenormals.calibration.camera import (
    IMAGE_SUFFIXES,
    Board,
    BoardError,
    calibrate_views,
    detect,
    read_gray,
)
from facenormals.camera import Intrinsics
from facenormals.fileio import read_depth_mm


@dataclass(frozen=True)
class RgbdViews:
    colour: dict[str, tuple[np.ndarray, np.ndarray]]
    ir: dict[str, tuple[np.ndarray, np.ndarray]]
    depth_raw: dict[str, np.ndarray]
    colour_size: tuple[int, int]
    ir_size: tuple[int, int]
    rejected: list[str]


def find_rgbd_views(board: Board, folder: str | Path) -> RgbdViews:
    """Detect the board in ``colour/`` and ``ir/``; views where either misses it are rejected."""
    folder = Path(folder)
    for sub in ("colour", "ir", "depth"):
        if not (folder / sub).is_dir():
            raise BoardError(f"{folder}: missing {sub}/ (expected colour/, ir/, depth/ with matching names)")
    names = sorted(p.stem for p in (folder / "colour").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not names:
        raise BoardError(f"{folder / 'colour'}: no images")
    colour, ir, depth, rejected = {}, {}, {}, []
    sizes: dict[str, tuple[int, int]] = {}
    for name in names:
        paths = {sub: _find(folder / sub, name) for sub in ("colour", "ir", "depth")}
        if any(p is None for p in paths.values()):
            missing = [sub for sub, p in paths.items() if p is None]
            raise BoardError(f"{folder}: view {name!r} has no {', '.join(missing)} image")
        grays = {sub: read_gray(paths[sub]) for sub in ("colour", "ir")}
        for sub, gray in grays.items():
            size = (gray.shape[1], gray.shape[0])
            if sizes.setdefault(sub, size) != size:
                raise BoardError(f"{paths[sub]}: {size[0]}×{size[1]} differs from the other {sub} images")
        raw = read_depth_mm(paths["depth"])
        if (raw.shape[1], raw.shape[0]) != sizes["ir"]:
            raise BoardError(f"{paths['depth']}: depth is {raw.shape[1]}×{raw.shape[0]} but the ir image is "
                             f"{sizes['ir'][0]}×{sizes['ir'][1]}: depth must be in the ir camera's pixels")
        found_c, found_i = detect(board, grays["colour"]), detect(board, grays["ir"])
        if found_c is None or found_i is None:
            rejected.append(name)
            continue
        colour[name], ir[name], depth[name] = found_c, found_i, raw
    return RgbdViews(colour, ir, depth, sizes["colour"], sizes["ir"], rejected)


def _find(folder: Path, stem: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return None


def _common_points(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]):
    """Board points seen in both images (ChArUco views can see different corners)."""
    keys_a = {tuple(np.round(p, 3)): i for i, p in enumerate(a[0])}
    pairs = [(keys_a[tuple(np.round(p, 3))], j) for j, p in enumerate(b[0]) if tuple(np.round(p, 3)) in keys_a]
    ia, ib = (np.array(v, dtype=np.int64) for v in zip(*pairs, strict=True)) if pairs else (np.zeros(0, int),) * 2
    return a[0][ia], a[1][ia], b[1][ib]


def _matrix(intr: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    return intr.matrix(), np.array(intr.distortion or (0.0,) * 5, dtype=np.float64)


def depth_scale_from_view(board_obj: np.ndarray, ir_points: np.ndarray, raw: np.ndarray, ir: Intrinsics) -> float | None:
    """median(z_plane / raw) over the board's hull in one view; None when the board shows no valid depth."""
    matrix, dist = _matrix(ir)
    ok, rvec, tvec = cv2.solvePnP(board_obj, ir_points, matrix, dist)
    if not ok:
        return None
    rotation, _ = cv2.Rodrigues(rvec)
    normal, point = rotation[:, 2], tvec.ravel() / 1000.0  # board plane in the depth camera, metres
    hull = np.zeros(raw.shape, np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.round(ir_points).astype(np.int32)), 1)
    hull = cv2.erode(hull, np.ones((5, 5), np.uint8)).astype(bool) & (raw > 0)
    if hull.sum() < 20:
        return None
    v, u = np.nonzero(hull)
    rays = cv2.undistortPoints(np.stack([u, v], 1).astype(np.float64)[:, None], matrix, dist).reshape(-1, 2)
    rays = np.hstack([rays, np.ones((len(rays), 1))])
    z = (normal @ point) / (rays @ normal)  # ray (x, y, 1)·z meets the plane
    return float(np.median(z / raw[v, u]))


def calibrate_rgbd(board: Board, views: RgbdViews, colour: Intrinsics | None = None,
                   ir: Intrinsics | None = None) -> Calibration:
    """Extrinsics and depth scale from the board views; intrinsics are calibrated from them unless given."""
    names = sorted(views.colour)
    if len(names) < 3:
        raise BoardError(f"need the board seen by both cameras in at least 3 views, found {len(names)}"
                         + (f" (rejected: {', '.join(views.rejected)})" if views.rejected else ""))
    quality: dict = {"views": names, "rejected": views.rejected}
    if colour is None:
        result = calibrate_views(board, views.colour, views.colour_size)
        colour, quality["colour_rms_px"] = result.intrinsics, result.rms_px
    if ir is None:
        result = calibrate_views(board, views.ir, views.ir_size)
        ir, quality["depth_rms_px"] = result.intrinsics, result.rms_px
    obj, img_ir, img_colour = [], [], []
    for name in names:
        o, i, c = _common_points(views.ir[name], views.colour[name])
        if len(o) >= 6:
            obj.append(o)
            img_ir.append(i)
            img_colour.append(c)
    if len(obj) < 3:
        raise BoardError("fewer than 3 views share enough board corners between the two cameras")
    k_ir, d_ir = _matrix(ir)
    k_c, d_c = _matrix(colour)
    rms, *_, rotation, translation, _, _ = cv2.stereoCalibrate(
        obj, img_ir, img_colour, k_ir, d_ir, k_c, d_c, views.colour_size, flags=cv2.CALIB_FIX_INTRINSIC,
        criteria=(cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 100, 1e-10))
    scales = {n: depth_scale_from_view(*views.ir[n], views.depth_raw[n], ir) for n in names}
    usable = [s for s in scales.values() if s is not None and np.isfinite(s) and s > 0]
    if not usable:
        raise BoardError("no view shows valid depth on the board: cannot measure the depth scale")
    quality.update(stereo_rms_px=float(rms), depth_scale_per_view={n: s for n, s in scales.items() if s is not None})
    return Calibration(colour, ir, np.asarray(rotation, np.float64), np.asarray(translation, np.float64).ravel() / 1000.0,
                       float(np.median(usable)), "board", quality)
