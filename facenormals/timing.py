"""Repeated timing of a call, for the reported speed figures (benchmarks, INT8 calibration, the GPU check).

>>> len(timed_ms(lambda: None, runs=3))
3
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def timed_ms(fn: Callable[[], object], runs: int, clock: Callable[[], float] = time.perf_counter,
             warmup: int = 1) -> list[float]:
    """Milliseconds of ``runs`` calls of ``fn`` after ``warmup`` untimed ones (``clock``: wall or process time)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = clock()
        fn()
        times.append((clock() - start) * 1e3)
    return times


def median_ms(fn: Callable[[], object], runs: int = 10, clock: Callable[[], float] = time.perf_counter,
              warmup: int = 1) -> float:
    return float(np.median(timed_ms(fn, runs, clock, warmup)))
