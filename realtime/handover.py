"""When a live run's detect thread takes its next frame: just in time for the backend, never to throw the work away.

A live loop (camera, or a file replayed at its frame rate) keeps only the newest frame. If detection ran on every
frame as it arrived, on a machine slower than the camera a detected and cropped frame (with its ICT prior, ~10 ms
of CPU) would often be replaced by a newer one before the backend got to it, and detection would compete with the
backend's threads for the whole inference. :class:`JustInTime` instead lets the detect thread start when

* no detected batch is waiting for the backend (at most one frame between detection and inference), and
* the backend is idle, or its running call could end within one detection: the shortest recent inference against
  the shortest recent detection (shortest: a detection that overlaps inference is slowed by it, so an average would
  start the next one ever earlier; and an average inference, inflated by a slow one, would start detection late
  and leave the backend waiting for its batch on a quiet machine),

so the batch is ready as the backend frees up, from the newest frame. Frames are then dropped only before any
work on them. When the machine keeps up with the camera nothing waits: each frame finds the backend idle.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

_POLL_S = 0.1  # safety net only: waits are woken by notify; this bounds how late a stop request is seen


class Stopped(Exception):
    """The stop event was set while the detect thread waited for its turn."""


class JustInTime:
    """The hand-over between the detect and infer threads of a live run (see the module docstring).

    Detect thread: :meth:`wait_turn` before taking a frame, then :meth:`detected` (or :meth:`skipped` for a frame
    that gave no batch). Infer thread: :meth:`inference_started` on taking a batch, :meth:`inference_done` after
    the backend returned. ``clock``: seconds, monotonic (injectable for tests); ``window``: recent detections and
    inferences the shortest is taken over.
    """

    def __init__(self, stop: threading.Event, clock: Callable[[], float] = time.monotonic, window: int = 30) -> None:
        self._stop, self._clock = stop, clock
        self._cond = threading.Condition()
        self._pending = False  # a frame is being detected, or its batch waits for the backend
        self._busy_until: float | None = None  # expected end of the running backend call; None: idle
        self._detections: collections.deque[float] = collections.deque(maxlen=window)
        self._inferences: collections.deque[float] = collections.deque(maxlen=window)
        self.detect_s = 0.0  # the shortest recent detection (seconds): the lead
        self.infer_s = 0.0  # the shortest recent inference (seconds)

    def start_time(self) -> float | None:
        """When the detect thread may start (clock seconds; None: not before the pending batch is taken)."""
        with self._cond:
            return self._start_locked()

    def wait_turn(self) -> None:
        """Block until the detect thread may take the next frame (:class:`Stopped` on a stop request)."""
        with self._cond:
            while True:
                if self._stop.is_set():
                    raise Stopped
                start = self._start_locked()
                now = self._clock()
                if start is not None and now >= start:
                    self._pending = True
                    return
                self._cond.wait(_POLL_S if start is None else min(start - now, _POLL_S))

    def _start_locked(self) -> float | None:
        if self._pending:
            return None
        return float("-inf") if self._busy_until is None else self._busy_until - self.detect_s

    def detected(self, seconds: float) -> None:
        """The frame's batch is on its way to the backend; detection plus crop took ``seconds``."""
        with self._cond:
            self._detections.append(seconds)
            self.detect_s = min(self._detections)

    def skipped(self) -> None:
        """The frame gave no batch (unreadable): the detect thread may take the next one."""
        with self._cond:
            self._pending = False
            self._cond.notify_all()

    def inference_started(self, network: bool = True) -> None:
        """``network``: the backend runs (False: every face reuses an earlier inference, ~1 ms; not waited for)."""
        with self._cond:
            self._pending = False
            self._busy_until = self._clock() + (self.infer_s if network else 0.0)
            self._cond.notify_all()

    def inference_done(self, seconds: float, network: bool = True) -> None:
        """Only calls that ran the backend count towards the shortest recent inference."""
        with self._cond:
            self._busy_until = None
            if network:
                self._inferences.append(seconds)
                self.infer_s = min(self._inferences)
            self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()
