"""``kinect[:N]`` Azure Kinect live and ``kinect:FILE.mkv`` playback through pyk4a (optional extra ``kinect``; needs
Microsoft's Azure Kinect Sensor SDK, which pyk4a loads).

Depth comes from the SDK's own ``transformed_depth`` (depth reprojected into the colour camera with the device's
factory calibration), uint16 millimetres, so ``depth_scale_m = 0.001``; intrinsics and distortion are the colour
camera's from that calibration. Recordings with MJPG colour are decoded with OpenCV.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facenormals.camera import Intrinsics
from facenormals.realtime.sources.base import Capture, Source, SourceError, SourceInfo

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'facenormals[kinect]' (and Microsoft's Azure Kinect Sensor SDK)"
KINECT_DEPTH_SCALE_M = 0.001
RESOLUTIONS = {720: "RES_720P", 1080: "RES_1080P", 1440: "RES_1440P", 1536: "RES_1536P", 2160: "RES_2160P", 3072: "RES_3072P"}


def import_pyk4a() -> Any:
    try:
        import pyk4a
    except ImportError as err:  # ModuleNotFoundError, or the SDK's shared library missing
        raise SourceError(f"Azure Kinect support needs pyk4a: {INSTALL_HINT} ({err})") from err
    return pyk4a


def _colour_intrinsics(pyk4a: Any, calibration: Any, width: int, height: int) -> Intrinsics:
    matrix = np.asarray(calibration.get_camera_matrix(pyk4a.CalibrationType.COLOR), dtype=np.float64)
    coeffs = np.asarray(calibration.get_distortion_coefficients(pyk4a.CalibrationType.COLOR), dtype=np.float64).ravel()
    return Intrinsics(width, height, matrix[0, 0], matrix[1, 1], matrix[0, 2], matrix[1, 2], tuple(float(c) for c in coeffs))


class KinectSource(Source):
    """An Azure Kinect (``device`` index) or an Azure Kinect ``.mkv`` recording (``file``)."""

    def __init__(
        self,
        *,
        device: int = 0,
        file: str | Path | None = None,
        resolution: int = 720,
        fps: int = 30,
        depth_mode: str = "NFOV_UNBINNED",
        timeout_ms: int = 2000,
    ) -> None:
        super().__init__()
        self._device: Any = None
        self._playback: Any = None
        self.k4a = import_pyk4a()
        self.file = Path(file) if file is not None else None
        self.timeout_ms = timeout_ms
        if self.file is not None:
            if not self.file.is_file():
                raise SourceError(f"{self.file}: Azure Kinect recording not found")
            self._open_playback()
        else:
            self._open_device(device, resolution, fps, depth_mode)

    def _open_playback(self) -> None:
        k4a = self.k4a
        playback = k4a.PyK4APlayback(self.file)
        try:
            playback.open()
        except Exception as err:  # pyk4a raises K4AException with no detail
            raise SourceError(f"{self.file}: not a readable Azure Kinect recording ({err})") from err
        self._playback = playback
        config = playback.configuration
        self._colour_format = config["color_format"]
        fps_enum = config.get("camera_fps")
        fps = {"FPS_5": 5.0, "FPS_15": 15.0, "FPS_30": 30.0}.get(getattr(fps_enum, "name", ""))
        self._calibration = playback.calibration
        first = self._next_capture()  # size from the first frame (and an early error for colour-less files)
        if first is None:
            raise SourceError(f"{self.file}: no frame with colour")
        self._pending: Capture | None = first
        self.live = False
        self._describe(f"kinect:{self.file}", first.rgb.shape, fps, first.depth is not None)

    def _open_device(self, device: int, resolution: int, fps: int, depth_mode: str) -> None:
        k4a = self.k4a
        if resolution not in RESOLUTIONS:
            raise SourceError(f"kinect: resolution {resolution} not one of {sorted(RESOLUTIONS)}")
        if k4a.connected_device_count() <= device:
            raise SourceError(f"kinect: no Azure Kinect at index {device} ({k4a.connected_device_count()} connected)")
        config = k4a.Config(
            color_resolution=getattr(k4a.ColorResolution, RESOLUTIONS[resolution]),
            color_format=k4a.ImageFormat.COLOR_BGRA32,
            depth_mode=getattr(k4a.DepthMode, depth_mode),
            camera_fps=getattr(k4a.FPS, f"FPS_{fps}"),
            synchronized_images_only=True,
        )
        self._device = k4a.PyK4A(config=config, device_id=device)
        try:
            self._device.start()
        except Exception as err:
            self._device = None
            raise SourceError(f"kinect:{device}: cannot start ({err})") from err
        self._colour_format = k4a.ImageFormat.COLOR_BGRA32
        self._calibration = self._device.calibration
        self._pending = None
        self.live = True
        width = resolution * 4 // 3 if resolution in (1536, 3072) else resolution * 16 // 9
        self._describe(f"kinect:{device}", (resolution, width), float(fps), True)

    def _describe(self, name: str, shape: tuple[int, ...], fps: float | None, has_depth: bool) -> None:
        height, width = shape[:2]
        self._intrinsics = _colour_intrinsics(self.k4a, self._calibration, width, height)
        self._info = SourceInfo(name, width, height, fps, has_depth, self.live, self._intrinsics)

    @property
    def info(self) -> SourceInfo:
        return self._info

    def _next_capture(self) -> Capture | None:
        while True:
            try:
                capture = self._playback.get_next_capture()
            except EOFError:
                return None
            converted = self._convert(capture)
            if converted is not None:
                return converted  # captures without colour (depth-only at the start of a file) are skipped

    def _convert(self, capture: Any) -> Capture | None:
        colour = capture.color
        if colour is None:
            return None
        if self._colour_format == self.k4a.ImageFormat.COLOR_MJPG:
            bgr = cv2.imdecode(np.asarray(colour, dtype=np.uint8).ravel(), cv2.IMREAD_COLOR)
            if bgr is None:
                log.warning("kinect: undecodable MJPG colour frame skipped")
                return None
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        elif self._colour_format == self.k4a.ImageFormat.COLOR_BGRA32:
            rgb = cv2.cvtColor(colour, cv2.COLOR_BGRA2RGB)
        else:
            raise SourceError(f"kinect: colour format {self._colour_format} not supported (BGRA32 or MJPG)")
        depth = capture.transformed_depth if capture.depth is not None else None
        depth = np.array(depth, dtype=np.uint16, copy=True) if depth is not None else None
        return Capture(rgb=rgb, depth=depth, depth_scale_m=KINECT_DEPTH_SCALE_M if depth is not None else None)

    def _read(self) -> Capture | None:
        if self._pending is not None:
            capture, self._pending = self._pending, None
            return capture
        if self._playback is not None:
            return self._next_capture()
        while not self._stop_requested.is_set():
            try:
                converted = self._convert(self._device.get_capture(timeout=self.timeout_ms))
            except Exception as err:
                raise SourceError(f"{self._info.name}: capture failed ({err})") from err
            if converted is not None:
                return converted
        return None

    def _release(self) -> None:
        if self._device is not None:
            self._device.stop()
            self._device = None
        if self._playback is not None:
            self._playback.close()
            self._playback = None
