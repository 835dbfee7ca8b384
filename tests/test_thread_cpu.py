"""Per-thread CPU accounting of the benchmark (realtime/thread_cpu.py), on real threads of this process."""

from __future__ import annotations

import itertools
import sys
import threading
import time

import numpy as np
import pytest

from facenormals.realtime.thread_cpu import ThreadCpu

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/task")


def _busy(stop: threading.Event, ready: threading.Event) -> None:
    a = np.random.default_rng(0).random((64, 64))
    ready.set()
    while not stop.is_set():
        a = np.tanh(a @ a.T / 64.0)


def test_threads_started_inside_mark_are_named_and_their_cpu_counted():
    probe = ThreadCpu()
    assert probe.available
    stop, ready = threading.Event(), threading.Event()
    with probe.mark("worker pool"):
        worker = threading.Thread(target=_busy, args=(stop, ready), name="not-a-pipeline-name", daemon=True)
        worker.start()
    ready.wait()
    probe.start(0)
    # work on the worker for a fixed amount of its own CPU time, measured by the probe itself (no clock)
    for frames in itertools.count(1):
        probe.sample(frames)
        if probe.ms_per_frame().get("worker pool", 0.0) * frames >= 20.0:
            break
        assert frames < 10_000, "the busy worker got no CPU"
        time.sleep(0.002)  # let the worker run (on a loaded machine this loop simply takes longer)
    stop.set()
    worker.join()
    figures = probe.ms_per_frame()
    assert figures["worker pool"] > 0.0
    assert list(figures) == sorted(figures, key=lambda role: -figures[role])  # largest first
    probe.sample(frames + 1)  # the ended worker keeps the CPU of its last sample
    assert probe.ms_per_frame()["worker pool"] * (frames + 1) >= 20.0


def test_no_figures_before_two_samples():
    probe = ThreadCpu()
    assert probe.ms_per_frame() == {}
    probe.start(0)
    assert probe.ms_per_frame() == {}
