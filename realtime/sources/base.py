"""The Source interface every frame producer implements, and ``open_source`` which builds one from a spec string.

A source is a context manager that yields :class:`~facenormals.frame.Frame` objects with increasing ids and
``t_capture_ns`` stamped with ``time.monotonic_ns()`` right after the frame left the device or file; file sources
also give ``t_media_ns``, the frame's time in the file (its stamp where the reader has one, else index / nominal
rate), which motion filters follow.
End of stream ends the iterator; a device that cannot be read raises :class:`SourceError`.

``live`` tells the pipeline how to queue: live sources (cameras) keep only the newest frame and count the dropped
ones; file sources never drop, the consumer sets the pace.

Specs (``facenormals run --source SPEC``)::

    webcam[:N]                 OpenCV camera N (default 0)
    stream:URL                 network stream through OpenCV (reconnects like a webcam)
    video:PATH | PATH.mp4      video file (.mp4 .avi .mov .mkv .webm .m4v .mpg .wmv)
    images:DIR                 sorted image folder
    realsense[:SERIAL]         Intel RealSense live, depth aligned to colour
    realsense:FILE.bag|.db3    RealSense recording (also a bare .bag/.db3 path)
    kinect[:N] | kinect:F.mkv  Azure Kinect live or recording (extra 'kinect')
    rgbd:DIR                   colour/depth PNG folder, or the TUM RGB-D layout
    sample | sample-rgbd       the embedded clip (no download)
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from facenormals.camera import Intrinsics
from facenormals.depth import MAX_DEPTH_M, SATURATED  # one definition of an implausible reading
from facenormals.frame import Frame

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
REALSENSE_SUFFIXES = (".bag", ".db3")


class SourceError(RuntimeError):
    """A source cannot be opened or read: names the device or file and what went wrong."""


@dataclass(frozen=True)
class SourceInfo:
    """What a consumer may want to know before the first frame (window size, writer FPS, depth features)."""

    name: str
    width: int
    height: int
    fps: float | None  # nominal rate; None when unknown
    has_depth: bool
    live: bool
    intrinsics: Intrinsics | None = None
    frame_count: int | None = None  # known length of a file source


class Capture(NamedTuple):
    """One frame as a source's reader produces it, before the base class stamps id and time."""

    rgb: np.ndarray
    depth: np.ndarray | None = None
    depth_scale_m: float | None = None
    intrinsics: Intrinsics | None = None
    t_capture_ns: int | None = None  # set by sources that read a frame ahead (the first one, in __init__)
    t_media_ns: int | None = None  # the file's own time of the frame, where the reader knows it better than id/fps


class Source(ABC):
    """Base class: subclasses implement ``_read`` (one frame or None at the end) and ``_release``."""

    live: bool = False

    def __init__(self) -> None:
        self._next_id = 0
        self.invalid_depth_frames = 0  # frames where out-of-range depth was set to 0 (missing)
        self._closed = False
        self._stop_requested = threading.Event()

    # -- metadata ---------------------------------------------------------------------------------------------
    @property
    @abstractmethod
    def info(self) -> SourceInfo: ...

    @property
    def fps(self) -> float | None:
        return self.info.fps

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the colour frames."""
        return self.info.width, self.info.height

    @property
    def has_depth(self) -> bool:
        return self.info.has_depth

    @property
    def intrinsics(self) -> Intrinsics | None:
        return self.info.intrinsics

    # -- reading ----------------------------------------------------------------------------------------------
    @abstractmethod
    def _read(self) -> Capture | None:
        """Block until the next frame; None at the end of the stream. Arrays must be owned copies."""

    def _release(self) -> None:  # noqa: B027 - optional hook, most sources hold something to release
        """Free the device or file handle; called once by ``close``."""

    def frames(self) -> Iterator[Frame]:
        """Frames until the end of the stream (or ``close``)."""
        while not self._closed and not self._stop_requested.is_set():
            capture = self._read()
            t_capture_ns = time.monotonic_ns()
            if capture is None:
                return
            yield self._stamp(capture, capture.t_capture_ns or t_capture_ns)

    def _media_time_ns(self, capture: Capture) -> int | None:
        """The frame's time on the file's clock: the reader's, else frame index / nominal rate; None for cameras
        (their capture time is their clock) and files without a rate."""
        if capture.t_media_ns is not None or self.live:
            return capture.t_media_ns
        fps = self.info.fps
        return round(self._next_id * 1e9 / fps) if fps else None

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def _stamp(self, capture: Capture, t_capture_ns: int) -> Frame:
        depth = capture.depth
        if depth is not None and capture.depth_scale_m:
            depth = self._drop_implausible_depth(depth, capture.depth_scale_m)
        frame = Frame(
            id=self._next_id,
            t_capture_ns=t_capture_ns,
            t_media_ns=self._media_time_ns(capture),
            rgb=capture.rgb,
            depth=depth,
            depth_scale_m=capture.depth_scale_m,
            intrinsics=capture.intrinsics if capture.intrinsics is not None else self.info.intrinsics,
        )
        self._next_id += 1
        return frame

    def _drop_implausible_depth(self, depth: np.ndarray, scale_m: float) -> np.ndarray:
        """Saturated (65535) or farther than :data:`MAX_DEPTH_M` readings become 0 (missing), counted and logged once:
        fused as metres they would put the face at 65 m without a word."""
        limit = min(SATURATED, int(np.ceil(MAX_DEPTH_M / scale_m)))
        bad = depth >= limit
        if not bad.any():
            return depth
        if self.invalid_depth_frames == 0:
            log.warning("%s: frame %d has %d depth pixels beyond %.0f m or saturated (%d); treated as missing",
                        self.info.name, self._next_id, int(bad.sum()), MAX_DEPTH_M, SATURATED)
        self.invalid_depth_frames += 1
        depth = depth.copy()
        depth[bad] = 0
        return depth

    def stop(self) -> None:
        """Ask the stream to end after the current frame; safe from any thread (``close`` is not: call it from the
        reading thread, or after it has finished)."""
        self._stop_requested.set()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._release()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A source dropped without close() still frees its device (cameras stay locked otherwise).
        with contextlib.suppress(Exception):  # interpreter shutdown: nothing useful to report
            self.close()

    def __repr__(self) -> str:
        info = self.info
        depth = "+depth" if info.has_depth else ""
        return f"<{type(self).__name__} {info.name} {info.width}x{info.height}{depth} live={info.live}>"


def pinhole_from_fov(width: int, height: int, hfov_deg: float = 60.0) -> Intrinsics:
    """Square-pixel pinhole intrinsics with the principal point at the image centre, from a horizontal field of view.

    >>> k = pinhole_from_fov(640, 480, 90.0)
    >>> round(k.fx, 3), k.cx, k.cy
    (320.0, 319.5, 239.5)
    """
    focal = (width / 2.0) / np.tan(np.radians(hfov_deg) / 2.0)
    return Intrinsics(width, height, float(focal), float(focal), (width - 1) / 2.0, (height - 1) / 2.0)


# -- spec parsing ---------------------------------------------------------------------------------------------
KINDS = ("webcam", "stream", "video", "images", "realsense", "kinect", "rgbd", "sample", "sample-rgbd")


@dataclass(frozen=True)
class SourceSpec:
    kind: str
    arg: str | None  # device index/serial, path or URL; None for the default device


def parse_spec(spec: str) -> SourceSpec:
    """Split ``KIND[:ARG]``; a bare path with a video or RealSense suffix is accepted too.

    >>> parse_spec("webcam:1")
    SourceSpec(kind='webcam', arg='1')
    >>> parse_spec("clip.MP4")
    SourceSpec(kind='video', arg='clip.MP4')
    >>> parse_spec("realsense")
    SourceSpec(kind='realsense', arg=None)
    """
    spec = spec.strip()
    kind, sep, arg = spec.partition(":")
    if kind in KINDS:
        if sep and not arg:
            raise SourceError(f"source spec {spec!r}: nothing after ':'")
        return SourceSpec(kind, arg or None)
    suffix = Path(spec).suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return SourceSpec("video", spec)
    if suffix in REALSENSE_SUFFIXES:
        return SourceSpec("realsense", spec)
    raise SourceError(
        f"unknown source {spec!r}: use one of {', '.join(KINDS)} (as KIND or KIND:ARG), or a video/.bag/.db3 file path"
    )


def open_source(spec: str, **options: Any) -> Source:
    """Open the source a spec names; ``options`` go to that source's constructor (e.g. width, height, fps,
    real_time, frames). Unknown options raise :class:`SourceError` listing the accepted ones."""
    parsed = parse_spec(spec)
    factory, positional = _factory(parsed)
    _check_options(parsed.kind, factory, options)
    return factory(*positional, **options)


def _factory(spec: SourceSpec) -> tuple[Any, tuple[Any, ...]]:
    # Imports are local: each kind pulls in its own (sometimes optional) SDK only when used.
    kind, arg = spec.kind, spec.arg
    if kind == "webcam":
        from facenormals.realtime.sources.webcam import WebcamSource

        if arg is not None and not arg.isdigit():
            raise SourceError(f"webcam:{arg}: expected a camera index (webcam:0); use stream:URL for network streams")
        return WebcamSource, (int(arg or 0),)
    if kind == "stream":
        from facenormals.realtime.sources.webcam import WebcamSource

        if arg is None:
            raise SourceError("stream needs a URL: stream:rtsp://host/path")
        return WebcamSource, (arg,)
    if kind == "video":
        from facenormals.realtime.sources.video import VideoSource

        if arg is None:
            raise SourceError("video needs a path: video:PATH")
        return VideoSource, (arg,)
    if kind == "images":
        from facenormals.realtime.sources.images import ImageFolderSource

        if arg is None:
            raise SourceError("images needs a folder: images:DIR")
        return ImageFolderSource, (arg,)
    if kind == "realsense":
        from facenormals.realtime.sources.realsense import RealSenseSource

        if arg is None:
            return RealSenseSource, ()  # first camera, or serial=/file= given as options
        if Path(arg).suffix.lower() in REALSENSE_SUFFIXES:
            return _with_kw(RealSenseSource, file=arg), ()
        return _with_kw(RealSenseSource, serial=arg), ()
    if kind == "kinect":
        from facenormals.realtime.sources.kinect import KinectSource

        if arg is None:
            return KinectSource, ()
        if arg.isdigit():
            return _with_kw(KinectSource, device=int(arg)), ()
        return _with_kw(KinectSource, file=arg), ()
    if kind == "rgbd":
        from facenormals.realtime.sources.rgbd_folder import RGBDFolderSource

        if arg is None:
            raise SourceError("rgbd needs a folder: rgbd:DIR")
        return RGBDFolderSource, (arg,)
    if kind in ("sample", "sample-rgbd"):
        if arg is not None:
            raise SourceError(f"{kind} takes no argument (got {arg!r}); pass frames=N as an option")
        from facenormals.realtime.sources.sample import SampleRGBDSource, SampleSource

        return (SampleRGBDSource if kind == "sample-rgbd" else SampleSource), ()
    raise SourceError(f"unknown source kind {kind!r}")  # unreachable: parse_spec checks KINDS


class _with_kw:
    """A constructor with some keywords bound, that still exposes the target's signature for option checking."""

    def __init__(self, target: Any, **bound: Any) -> None:
        self.target, self.bound = target, bound

    def __call__(self, *args: Any, **kwargs: Any) -> Source:
        return self.target(*args, **self.bound, **kwargs)


def _check_options(kind: str, factory: Any, options: dict[str, Any]) -> None:
    target = factory.target if isinstance(factory, _with_kw) else factory
    bound = set(factory.bound) if isinstance(factory, _with_kw) else set()
    params = inspect.signature(target.__init__).parameters
    accepted = sorted(
        name for name, p in params.items() if p.kind == inspect.Parameter.KEYWORD_ONLY and name not in bound
    )
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise SourceError(f"{kind} source does not take option(s) {', '.join(unknown)}; it accepts: {', '.join(accepted)}")
