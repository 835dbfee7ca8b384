"""Reconnect with exponential backoff for OpenCV captures that fail mid-stream (unplugged webcam, dropped RTSP link).

A failed read closes the capture, then reopens it after 0.25 s, 0.5 s, 1 s, … (capped), up to ``max_attempts``.
Every failure and attempt is counted and logged; when the attempts run out the stream raises :class:`SourceError`
rather than ending, so a lost camera is never mistaken for a finished recording. ``stop()`` interrupts a wait.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np

from facenormals.realtime.sources.base import SourceError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backoff:
    """Delays before each reconnect attempt: ``initial_s · factor^k``, at most ``max_delay_s``; ``max_attempts``
    None retries forever.

    >>> list(Backoff(initial_s=0.25, factor=2.0, max_delay_s=1.0, max_attempts=5).delays())
    [0.25, 0.5, 1.0, 1.0, 1.0]
    """

    initial_s: float = 0.25
    factor: float = 2.0
    max_delay_s: float = 4.0
    max_attempts: int | None = 8

    def delays(self) -> Iterator[float]:
        delay, attempt = self.initial_s, 0
        while self.max_attempts is None or attempt < self.max_attempts:
            yield min(delay, self.max_delay_s)
            delay *= self.factor
            attempt += 1


@dataclass
class ReconnectStats:
    failures: int = 0  # reads that failed on an open capture
    attempts: int = 0  # reopen attempts
    reconnects: int = 0  # attempts that delivered a frame again
    waits_s: list[float] = field(default_factory=list)  # the backoff delays actually waited


class ReconnectingCapture:
    """A ``cv2.VideoCapture`` made by ``opener`` that is reopened with :class:`Backoff` whenever a read fails.

    ``opener`` must return a capture (opened or not); it is called again for every attempt, so it can reapply
    the requested size, FPS and codec. ``read`` returns BGR frames as OpenCV delivers them.
    """

    def __init__(self, opener: Callable[[], cv2.VideoCapture], describe: str, backoff: Backoff | None = None) -> None:
        self.opener, self.describe = opener, describe
        self.backoff = backoff or Backoff()
        self.stats = ReconnectStats()
        self._stop = threading.Event()
        self._cap: cv2.VideoCapture | None = opener()
        if not self._cap.isOpened():
            self._release_cap()
            raise SourceError(f"{describe}: cannot open")

    def read_first(self) -> np.ndarray:
        """The first frame, without reconnecting: a device that opens but delivers nothing fails at once."""
        assert self._cap is not None
        ok, frame = self._cap.read()
        if not ok or frame is None:
            self.release()
            raise SourceError(f"{self.describe}: opened but delivered no frame")
        return frame

    def read(self) -> np.ndarray | None:
        """Next frame; reconnects on failure. None only after ``stop()``; SourceError once reconnecting gives up."""
        if self._cap is not None:
            ok, frame = self._cap.read()
            if ok and frame is not None:
                return frame
        if self._stop.is_set():
            return None
        self.stats.failures += 1
        log.warning("%s: read failed (failure %d); reconnecting", self.describe, self.stats.failures)
        return self._reconnect()

    def _reconnect(self) -> np.ndarray | None:
        self._release_cap()
        for delay in self.backoff.delays():
            self.stats.waits_s.append(delay)
            if self._stop.wait(delay):
                return None
            self.stats.attempts += 1
            cap = self.opener()
            ok, frame = cap.read() if cap.isOpened() else (False, None)
            if ok and frame is not None:
                self._cap = cap
                self.stats.reconnects += 1
                log.info("%s: reconnected after %d attempt(s)", self.describe, self.stats.attempts)
                return frame
            cap.release()
            log.warning("%s: reconnect attempt %d failed; next in ≤ %.2f s", self.describe, self.stats.attempts,
                        min(delay * self.backoff.factor, self.backoff.max_delay_s))
        raise SourceError(f"{self.describe}: lost; {self.stats.attempts} reconnect attempts failed")

    def stop(self) -> None:
        """Interrupt a backoff wait (from any thread); the next ``read`` returns None instead of reconnecting."""
        self._stop.set()

    def get(self, prop: int) -> float:
        return self._cap.get(prop) if self._cap is not None else 0.0

    def _release_cap(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def release(self) -> None:
        self.stop()
        self._release_cap()
