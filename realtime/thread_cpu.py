"""Where a frame's CPU goes: CPU time per thread of this process, grouped by what each thread does.

The stage timings are wall-clock milliseconds on one thread each; ``cpu_ms_per_frame`` counts every thread of the
process. The difference is work no stage timing sees: the inference backend's worker threads (ONNX Runtime's
intra-op pool), MediaPipe's graph threads, and contention. :class:`ThreadCpu` reads each thread's CPU time from
Linux's ``/proc/self/task/TID/schedstat`` (nanoseconds; ``stat``'s clock ticks are too coarse for a frame) and
names the threads: the pipeline's own by their Python names, the threads that appeared while the backend was
built as its workers (``mark``), MediaPipe's by their kernel name, the rest "other". Elsewhere than Linux it reports nothing.

>>> probe = ThreadCpu()
>>> probe.available == bool(_read_all())
True
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

_TASKS = "/proc/self/task"


def _read_all() -> dict[int, int]:
    """CPU nanoseconds of every live thread of this process, by native thread id ({} where /proc is missing)."""
    try:
        tids = os.listdir(_TASKS)
    except OSError:
        return {}
    out = {}
    for tid in tids:
        try:
            with open(f"{_TASKS}/{tid}/schedstat") as f:
                out[int(tid)] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):  # the thread ended meanwhile, or no schedstat in this kernel
            continue
    return out


def _comm(tid: int) -> str:
    try:
        with open(f"{_TASKS}/{tid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


class ThreadCpu:
    """CPU time per thread between :meth:`start` and the last :meth:`sample`, grouped into named roles.

    ``mark(role)`` (a context manager) names the threads created inside it (e.g. the backend's worker pool).
    Threads that end before the last sample keep the CPU seen at their last sample: sample often enough (the
    benchmark samples every few frames and normalises by the frames between the two samples).
    """

    def __init__(self) -> None:
        self.available = bool(_read_all())
        self._roles: dict[int, str] = {}
        self._python_names: dict[int, str] = {}  # the pipeline's threads, noted while they run
        self._comms: dict[int, str] = {}  # the kernel's name of every other thread, noted while it runs
        self._start: dict[int, int] | None = None
        self._last: dict[int, int] = {}
        self.start_frames = self.last_frames = 0

    @contextmanager
    def mark(self, role: str) -> Iterator[None]:
        before = set(_read_all())
        try:
            yield
        finally:
            for tid in set(_read_all()) - before:
                self._roles.setdefault(tid, role)

    def start(self, frames_done: int) -> None:
        self._start = _read_all()
        self._last = dict(self._start)
        self.start_frames = self.last_frames = frames_done
        self._note_names()

    def sample(self, frames_done: int) -> None:
        if self._start is None:
            return
        for tid, ns in _read_all().items():
            self._last[tid] = max(ns, self._last.get(tid, 0))
        self.last_frames = frames_done
        self._note_names()

    def _note_names(self) -> None:
        """Names of the threads alive now (one that ends before the figures are asked for keeps its name)."""
        self._python_names.update({t.native_id: t.name for t in threading.enumerate() if t.native_id is not None})
        for tid in self._last.keys() - self._comms.keys():
            self._comms[tid] = _comm(tid)

    def _role(self, tid: int, python_names: dict[int, str]) -> str:
        if tid in self._roles:
            return self._roles[tid]
        if tid in python_names:
            name = python_names[tid]
            return "main (paste, render, sinks)" if name == "MainThread" else name.removeprefix("facenormals-")
        return "MediaPipe" if self._comms.get(tid, "").startswith("mediapipe") else "other"

    def ms_per_frame(self) -> dict[str, float]:
        """Milliseconds of CPU per frame by role, largest first ({} before two samples or without /proc).

        Exact (not rounded): a caller multiplying back by the frames must get the CPU it measured; reports round.
        """
        frames = self.last_frames - self.start_frames
        if self._start is None or frames <= 0:
            return {}
        python_names = self._python_names
        totals: dict[str, float] = defaultdict(float)
        for tid, ns in self._last.items():
            totals[self._role(tid, python_names)] += (ns - self._start.get(tid, 0)) * 1e-6 / frames
        return dict(sorted(totals.items(), key=lambda item: -item[1]))
