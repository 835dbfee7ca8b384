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
    """One captured frame. ``timings`` collects per-stage milliseconds as it travels."""

    id: int
    t_capture_ns: int
    rgb: np.ndarray
    depth: np.ndarray | None = None
    depth_scale_m: float | None = None
    intrinsics: Intrinsics | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def has_depth(self) -> bool:
        return self.depth is not None
