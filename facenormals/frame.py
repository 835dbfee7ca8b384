"""What travels through the realtime pipeline: frames from sources, with ids and capture timestamps.

Convention: ``rgb`` is RGB uint8 H×W×3 (never BGR); ``depth`` is uint16 H×W aligned to ``rgb``
(0 = missing) with ``depth_scale_m`` metres per unit; intrinsics are pinhole in pixels of ``rgb``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from facenormals.camera import Intrinsics


@dataclass(frozen=True)
class Frame:
    """One captured frame. ``timings`` collects per-stage milliseconds as it travels.

    Two clocks: ``t_capture_ns`` is when the frame reached this process (``time.monotonic_ns``; latency is measured
    from it); ``t_media_ns`` is the stream's own time of the frame where it has one (a file's frame time), None for
    cameras. Motion filters and trackers read :attr:`t_stream_ns`, so a file gives the same results however fast
    this machine reads it.
    """

    id: int
    t_capture_ns: int
    rgb: np.ndarray
    depth: np.ndarray | None = None
    depth_scale_m: float | None = None
    intrinsics: Intrinsics | None = None
    timings: dict[str, float] = field(default_factory=dict)
    t_media_ns: int | None = None

    @property
    def t_stream_ns(self) -> int:
        """The time motion is measured in: the file's clock where there is one, else the capture clock."""
        return self.t_capture_ns if self.t_media_ns is None else self.t_media_ns

    @property
    def has_depth(self) -> bool:
        return self.depth is not None
