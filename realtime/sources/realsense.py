"""``realsense[:SERIAL]`` live and ``realsense:FILE.bag|.db3`` playback through pyrealsense2's pipeline.

Colour and depth come from one ``rs.pipeline``; depth is aligned to colour with ``rs.align(rs.stream.color)``, so the
frame's intrinsics are the colour camera's and the depth scale is the device's (``depth_units``), both read from the
device or the recording. Frames are copied out of the SDK at once: its frame pools are finite, and a frame held by
another thread stalls the camera.

Playback: ``real_time=False`` (default) reads every recorded frame as fast as the consumer takes them (set before
streaming starts, so the first frames are kept too); ``real_time=True`` plays at the recorded pace and, like a camera,
drops what the consumer misses (``live``). The pipeline hands out framesets that may repeat the previous colour
frame when its syncer could not pair two frames; a repeated colour frame is skipped, so every colour frame comes out
once. The SDK's syncer keeps the very last frameset of a file to itself (it waits for a successor that never comes).

Live cameras that stop delivering (USB reset, cable) are restarted with exponential backoff.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from facenormals.camera import Intrinsics
from facenormals.realtime.sources.base import Capture, Source, SourceError, SourceInfo
from facenormals.realtime.sources.reconnect import Backoff, ReconnectStats

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'facenormals[rgbd]'"


def import_pyrealsense2() -> Any:
    """``import pyrealsense2``; when the system lacks libusb-1.0, load the copy that ``libusb-package`` ships first."""
    try:
        import pyrealsense2 as rs

        return rs
    except ModuleNotFoundError as err:
        raise SourceError(f"RealSense support needs pyrealsense2: {INSTALL_HINT}") from err
    except ImportError as err:
        if "libusb" not in str(err):
            raise SourceError(f"pyrealsense2 failed to load ({err})") from err
    try:
        import libusb_package
    except ModuleNotFoundError as err:
        raise SourceError(f"pyrealsense2 needs libusb-1.0: apt-get install libusb-1.0-0, or {INSTALL_HINT}") from err
    library = libusb_package.find_library("usb-1.0") or libusb_package.get_library_path()
    if library is None:
        raise SourceError("libusb-package ships no libusb-1.0 for this platform: apt-get install libusb-1.0-0")
    ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)  # global, so pyrealsense2's NEEDED entry resolves to it
    import pyrealsense2 as rs

    return rs


def intrinsics_from_rs(rs: Any, intr: Any) -> Intrinsics:
    """``rs.intrinsics`` → our Intrinsics (Brown-Conrady coefficients are OpenCV's k1 k2 p1 p2 k3)."""
    coeffs = tuple(float(c) for c in intr.coeffs) if intr.model != rs.distortion.none else ()
    if coeffs and not any(coeffs):
        coeffs = ()
    return Intrinsics(int(intr.width), int(intr.height), float(intr.fx), float(intr.fy), float(intr.ppx), float(intr.ppy), coeffs)


class RealSenseSource(Source):
    """An Intel RealSense camera (``serial``, or the first one found) or a ``.bag``/``.db3`` recording (``file``)."""

    def __init__(
        self,
        *,
        serial: str | None = None,
        file: str | Path | None = None,
        width: int = 640,
        height: int = 480,
        fps: int = 30,
        depth: bool = True,
        real_time: bool = False,
        timeout_ms: int = 5000,
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__()
        if serial is not None and file is not None:
            raise SourceError("realsense: give a serial number or a file, not both")
        self.rs = import_pyrealsense2()
        self.file = Path(file) if file is not None else None
        self.serial = serial
        self.timeout_ms = timeout_ms
        self.backoff = backoff or Backoff()
        self.reconnect_stats = ReconnectStats()
        self._request = (width, height, fps, depth)
        self._stop_wait = threading.Event()
        self.live = self.file is None or real_time
        if self.file is not None:
            if not self.file.is_file():
                raise SourceError(f"{self.file}: RealSense recording not found")
            self.name = f"realsense:{self.file}"
        else:
            self.serial = self._pick_device(serial)
            self.name = f"realsense:{self.serial}"
        self._real_time = real_time
        self._pipe = self.rs.pipeline()
        self._started = False
        self._start()
        self._last_colour: int | None = None

    # -- setup ----------------------------------------------------------------------------------------------------
    def _pick_device(self, serial: str | None) -> str:
        devices = self.rs.context().query_devices()
        serials = [d.get_info(self.rs.camera_info.serial_number) for d in devices]
        if not serials:
            raise SourceError("realsense: no RealSense camera connected (plug one in, or play a recording: realsense:FILE.bag)")
        if serial is None:
            return serials[0]
        if serial not in serials:
            raise SourceError(f"realsense: no camera with serial {serial}; connected: {', '.join(serials)}")
        return serial

    def _config(self) -> Any:
        rs, cfg = self.rs, self.rs.config()
        if self.file is not None:
            cfg.enable_device_from_file(str(self.file), repeat_playback=False)
            return cfg
        width, height, fps, depth = self._request
        cfg.enable_device(self.serial)
        cfg.enable_stream(rs.stream.color, width, height, rs.format.rgb8, fps)
        if depth:
            cfg.enable_stream(rs.stream.depth, width, height, rs.format.z16, fps)
        return cfg

    def _start(self) -> None:
        rs, cfg = self.rs, self._config()
        try:
            if self.file is not None:
                # resolve() caches the playback device that start() then uses: set its pace before any frame flows.
                cfg.resolve(rs.pipeline_wrapper(self._pipe)).get_device().as_playback().set_real_time(self._real_time)
            profile = self._pipe.start(cfg)
        except RuntimeError as err:
            raise SourceError(f"{self.name}: cannot start streaming ({err})") from err
        self._started = True
        try:
            self._describe(profile)
        except SourceError:
            self._stop_pipe()
            raise

    def _describe(self, profile: Any) -> None:
        rs = self.rs
        streams = {s.stream_type(): s for s in profile.get_streams()}
        if rs.stream.color not in streams:
            raise SourceError(f"{self.name}: no colour stream (streams: {', '.join(str(s) for s in streams)})")
        colour = streams[rs.stream.color].as_video_stream_profile()
        self._colour_format = colour.format()
        if self._colour_format not in (rs.format.rgb8, rs.format.bgr8, rs.format.rgba8, rs.format.bgra8):
            raise SourceError(f"{self.name}: colour format {self._colour_format} not supported (rgb8/bgr8/rgba8/bgra8)")
        self._has_depth = rs.stream.depth in streams and self._request[3]
        self._depth_scale = float(profile.get_device().first_depth_sensor().get_depth_scale()) if self._has_depth else None
        self._align = rs.align(rs.stream.color) if self._has_depth else None
        self._info = SourceInfo(
            name=self.name,
            width=colour.width(),
            height=colour.height(),
            fps=float(colour.fps()),
            has_depth=bool(self._has_depth),
            live=self.live,
            intrinsics=intrinsics_from_rs(rs, colour.get_intrinsics()),
        )
        self._playback = profile.get_device().as_playback() if self.file is not None else None

    @property
    def info(self) -> SourceInfo:
        return self._info

    @property
    def depth_scale_m(self) -> float | None:
        return self._depth_scale

    # -- reading --------------------------------------------------------------------------------------------------
    def _read(self) -> Capture | None:
        while True:
            frameset = self._wait()
            if frameset is None:
                return None
            capture = self._copy_out(frameset)
            if capture is not None:
                return capture

    def _wait(self) -> Any | None:
        while not self._stop_requested.is_set():
            ok, frameset = self._pipe.try_wait_for_frames(self.timeout_ms if self._playback is None else 500)
            if ok:
                return frameset
            if self._playback is not None:
                if self._playback.current_status() == self.rs.playback_status.stopped:
                    return None
                continue  # still playing: the reader is just slow
            self._restart()
        return None

    def _restart(self) -> None:
        stats = self.reconnect_stats
        stats.failures += 1
        log.warning("%s: no frames for %d ms (failure %d); restarting", self.name, self.timeout_ms, stats.failures)
        self._stop_pipe()
        for delay in self.backoff.delays():
            stats.waits_s.append(delay)
            if self._stop_wait.wait(delay):
                return
            stats.attempts += 1
            try:
                self._pipe = self.rs.pipeline()
                self._start()
                self._last_colour = None
                stats.reconnects += 1
                log.info("%s: streaming again after %d attempt(s)", self.name, stats.attempts)
                return
            except SourceError as err:
                log.warning("%s: restart attempt %d failed: %s", self.name, stats.attempts, err)
        raise SourceError(f"{self.name}: lost; {stats.attempts} restart attempts failed")

    def _copy_out(self, frameset: Any) -> Capture | None:
        colour = frameset.get_color_frame()
        if not colour:
            return None
        number = colour.get_frame_number()
        if self._last_colour is not None and number <= self._last_colour:
            # the pipeline repeated the previous colour frame to complete a set, or (real-time playback on a loaded
            # machine) handed back an older one; a restart resets this, as live cameras renumber from 0
            return None
        self._last_colour = number
        depth_image = None
        if self._align is not None:
            aligned = self._align.process(frameset)
            colour = aligned.get_color_frame()
            depth = aligned.get_depth_frame()
            depth_image = np.asanyarray(depth.get_data()).copy() if depth else None
        rgb = self._to_rgb(np.asanyarray(colour.get_data()))
        return Capture(rgb=rgb, depth=depth_image, depth_scale_m=self._depth_scale if depth_image is not None else None)

    def _to_rgb(self, image: np.ndarray) -> np.ndarray:
        fmt, rs = self._colour_format, self.rs
        if fmt == rs.format.rgb8:
            return image.copy()
        if fmt == rs.format.rgba8:
            return image[..., :3].copy()
        return np.ascontiguousarray(image[..., 2::-1])  # bgr8 / bgra8

    def stop(self) -> None:
        super().stop()
        self._stop_wait.set()

    def _stop_pipe(self) -> None:
        if self._started:
            self._started = False
            try:
                self._pipe.stop()
            except RuntimeError as err:  # already stopped by the SDK after a device loss
                log.debug("%s: pipeline stop: %s", self.name, err)

    def _release(self) -> None:
        self._stop_wait.set()
        self._stop_pipe()
