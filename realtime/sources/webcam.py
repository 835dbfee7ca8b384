"""``webcam[:N]`` (and ``stream:URL``): a live OpenCV capture at the requested size/FPS, MJPG when the camera offers it,
reconnecting with backoff (:mod:`~facenormals.realtime.sources.reconnect`) when it fails mid-stream."""

from __future__ import annotations

import logging
import sys
import time

import cv2

from facenormals.realtime.sources.base import Capture, Source, SourceError, SourceInfo
from facenormals.realtime.sources.reconnect import Backoff, ReconnectingCapture, ReconnectStats

log = logging.getLogger(__name__)

STALE_FIRST_FRAME_NS = 1_000_000_000


def _backend(device: int | str) -> int:
    if isinstance(device, str):
        return cv2.CAP_ANY  # a URL or file: FFmpeg decides
    if sys.platform.startswith("linux"):
        return cv2.CAP_V4L2
    if sys.platform == "win32":
        return cv2.CAP_DSHOW  # MSMF opens slowly and ignores MJPG requests on many cameras
    return cv2.CAP_ANY


def webcam_available(index: int = 0) -> bool:
    """Whether camera ``index`` opens and delivers a frame (used to fall back to the sample without a camera)."""
    cap = cv2.VideoCapture(index, _backend(index))
    try:
        return bool(cap.isOpened() and cap.read()[0])
    finally:
        cap.release()


class WebcamSource(Source):
    """A live camera (index) or stream (URL). Frames are RGB; the driver buffer is kept at one frame so a slow
    consumer gets the newest image, and the pipeline's latest-frame queue drops the rest (``live = True``).

    ``reconnects``/``failures`` count the mid-stream losses; the first frame is read in ``__init__`` so a camera
    that opens but streams nothing fails early, and the device is released on any failure there.
    """

    live = True

    def __init__(
        self,
        device: int | str = 0,
        *,
        width: int | None = 640,
        height: int | None = 480,
        fps: float | None = 30.0,
        mjpg: bool = True,
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__()
        self.device = device
        self.requested = (width, height, fps)
        self.mjpg = mjpg
        name = f"webcam:{device}" if isinstance(device, int) else f"stream:{device}"
        self._capture = ReconnectingCapture(self._open, name, backoff)
        try:
            first = self._capture.read_first()
        except SourceError:
            self._closed = True  # read_first released the device
            raise
        t_first = time.monotonic_ns()
        self._pending: Capture | None = Capture(rgb=cv2.cvtColor(first, cv2.COLOR_BGR2RGB), t_capture_ns=t_first)
        got_fps = self._capture.get(cv2.CAP_PROP_FPS)
        self._info = SourceInfo(
            name=name,
            width=first.shape[1],
            height=first.shape[0],
            fps=got_fps if got_fps > 0 else fps,
            has_depth=False,
            live=True,
        )
        if width and height and (first.shape[1], first.shape[0]) != (width, height):
            log.warning("%s: asked for %dx%d, the camera gives %dx%d", name, width, height, first.shape[1], first.shape[0])

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(self.device, _backend(self.device))
        if not cap.isOpened() or isinstance(self.device, str):
            return cap
        width, height, fps = self.requested
        if self.mjpg:  # before the size: V4L2 picks the mode from the format, and YUYV caps most cameras at low FPS
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
        if width and height:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if fps:
            cap.set(cv2.CAP_PROP_FPS, fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap

    @property
    def info(self) -> SourceInfo:
        return self._info

    @property
    def reconnect_stats(self) -> ReconnectStats:
        return self._capture.stats

    @property
    def reconnects(self) -> int:
        return self._capture.stats.reconnects

    @property
    def failures(self) -> int:
        return self._capture.stats.failures

    def _read(self) -> Capture | None:
        if self._pending is not None:
            capture, self._pending = self._pending, None
            assert capture.t_capture_ns is not None
            if time.monotonic_ns() - capture.t_capture_ns < STALE_FIRST_FRAME_NS:
                return capture
            # the consumer started long after opening (model load): a live source hands out now, not then
        bgr = self._capture.read()
        return None if bgr is None else Capture(rgb=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))

    def stop(self) -> None:
        """Thread-safe: also interrupts a reconnect wait so the reading thread ends its stream."""
        super().stop()
        self._capture.stop()

    def _release(self) -> None:
        self._capture.release()
