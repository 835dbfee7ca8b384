"""``facenormals run --calibration FILE``: any source, seen through a calibration file's colour camera.

Sources without factory calibration (webcams, videos, image folders) otherwise get a 60° pinhole guess, and the
depth features (normals from depth, fusion) need the real one. The wrapper:

* checks the file was made for this colour resolution (a mismatch names both sizes and the file);
* undistorts each colour frame (and its aligned depth, nearest-neighbour so no depth is invented) when the file
  has distortion coefficients, with maps built once — the frames then match the distortion-free intrinsics;
* stamps the file's colour intrinsics on every frame, and its depth scale where the source gives none.

Depth from a source is already aligned to colour (RealSense ``rs.align``, the Kinect SDK, ``rgbd:DIR`` with its
own ``intrinsics.json``): it is not reprojected again.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from facenormals.calibration.calibfile import Calibration
from facenormals.camera import Intrinsics
from facenormals.realtime.sources.base import Capture, Source, SourceError, SourceInfo


class UndistortMaps:
    """Remap tables from a distorted colour image to the same camera without distortion (same K, same size)."""

    def __init__(self, intrinsics: Intrinsics) -> None:
        size = (intrinsics.width, intrinsics.height)
        matrix, coefficients = intrinsics.matrix(), np.asarray(intrinsics.distortion, np.float64)
        self.map_x, self.map_y = cv2.initUndistortRectifyMap(matrix, coefficients, None, matrix, size, cv2.CV_32FC1)

    def colour(self, rgb: np.ndarray) -> np.ndarray:
        return cv2.remap(rgb, self.map_x, self.map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)

    def depth(self, depth: np.ndarray) -> np.ndarray:
        # nearest: blending a face pixel with the wall behind it would invent a depth that exists nowhere
        return cv2.remap(depth, self.map_x, self.map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)


def has_distortion(intrinsics: Intrinsics) -> bool:
    return any(abs(c) > 0.0 for c in intrinsics.distortion)


class CalibratedSource(Source):
    """Wraps ``inner``; frames carry ``calibration``'s colour intrinsics (distortion removed)."""

    def __init__(self, inner: Source, calibration: Calibration) -> None:
        super().__init__()
        colour = calibration.colour
        if inner.size != (colour.width, colour.height):
            raise SourceError(f"{calibration.source or 'calibration file'}: made for {colour.width}×{colour.height} "
                              f"colour images, but {inner.info.name} delivers {inner.size[0]}×{inner.size[1]}")
        self.inner, self.calibration = inner, calibration
        self.live = inner.live
        self._maps = UndistortMaps(colour) if has_distortion(colour) else None
        self._intrinsics = dataclasses.replace(colour, distortion=())

    @property
    def info(self) -> SourceInfo:
        return dataclasses.replace(self.inner.info, intrinsics=self._intrinsics)

    def _read(self) -> Capture | None:
        capture = self.inner._read()
        if capture is None:
            return None
        rgb, depth = capture.rgb, capture.depth
        if self._maps is not None:
            rgb = self._maps.colour(rgb)
            depth = self._maps.depth(depth) if depth is not None else None
        scale = capture.depth_scale_m
        if depth is not None and scale is None:
            scale = self.calibration.depth_scale_m
        return capture._replace(rgb=rgb, depth=depth, depth_scale_m=scale, intrinsics=self._intrinsics)

    def stop(self) -> None:
        self.inner.stop()
        super().stop()

    def _release(self) -> None:
        self.inner.close()
