"""Data-engine throughput: ICT samples per second at 256² (render + post-processing + PNG writes).

    python -m facenormals.benchmarks.render_throughput [--count 60] [--workers 1 2] [--kind paired] [--v4] [--bare]

Samples are rendered as `facenormals data render` renders them: photo/video backgrounds and the James texture
transfer from ../shared/data when present (scripts/make_datasets.sh). ``--bare``: procedural backgrounds only and
no texture transfer (the setting of the figures before 2026-12-03). ``--v4``: the settings of ict_paired_v4
(identity scale 1–1.6 with the fold bound, 2 mm detail, 30 % of the faces at |yaw| 40–90°).

Prints the CPU and wall time per sample of one in-process worker, then one line per worker count: steady-state
samples/s of `facenormals data render`'s workers (start-up excluded) and, for several workers, their CPU per
sample (a second, shorter run cancels the start-up out): on a shared machine the wall figures are lower bounds
and the CPU figure says what idle cores would give. The load average is printed too.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # as in the data engine's workers: one BLAS thread per process


V4 = {"identity_scale": (1.0, 1.6), "detail_mm": 2.0}
V4_POSE = {"yaw_range": (0.6981317007977318, 1.5707963267948966), "profile_fraction": 0.3}  # 40–90°


def _job(out: Path, kind: str, size: int, v4: bool, bare: bool = False):
    from facenormals.training.data.cli import DEFAULT_SHARED, _default_backgrounds
    from facenormals.training.data.render_job import RenderJob
    from facenormals.training.data.synth import RenderSettings

    settings = RenderSettings(size=size, kind=kind, **(V4_POSE if v4 else {}))
    james = DEFAULT_SHARED / "data" / "james"
    scene = {} if bare else {"backgrounds": _default_backgrounds(),
                             "james_dir": james if (james / "james.obj").is_file() else None}
    return RenderJob(out=out, source="ict", seed=0, kind=kind, settings=settings, **scene, **(V4 if v4 else {}))


def _cpu_per_sample(kind: str, size: int, count: int, v4: bool = False, bare: bool = False) -> tuple[float, float]:
    """(CPU seconds, wall seconds) per sample of one in-process worker, PNG writes included.

    CPU time is far less sensitive than wall time to other jobs sharing the cores: 2 / CPU-seconds is the
    throughput two idle cores would give.
    """
    with tempfile.TemporaryDirectory() as tmp:
        job = _job(Path(tmp), kind, size, v4, bare)
        job.setup()
        job.run(0)  # first call pays lazy imports
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for index in range(1, count + 1):
            job.run(index)
        return (time.process_time() - cpu0) / count, (time.perf_counter() - wall0) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2],
                        help="worker counts to time (none: only the in-process CPU figure)")
    parser.add_argument("--kind", choices=("paired", "normal-only"), default="paired")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--v4", action="store_true", help="ict_paired_v4's identity, detail and yaw settings")
    parser.add_argument("--bare", action="store_true", help="procedural backgrounds only, no texture transfer")
    args = parser.parse_args()

    label = f"{args.kind}{' v4' if args.v4 else ''}{' bare' if args.bare else ''} {args.size}²"
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    cpu, wall = _cpu_per_sample(args.kind, args.size, min(args.count, 30), args.v4, args.bare)
    print(f"{label}: one process: {cpu * 1000:.0f} ms CPU / {wall * 1000:.0f} ms wall per sample "
          f"→ {2 / cpu:.1f} samples/s on 2 idle cores (CPU-bound estimate)")
    for workers in args.workers:
        stamps, written, total, children_cpu = _timed_run(args, workers, args.count)
        # steady state: from the first finished sample to the last (worker start-up and model load excluded)
        skip = min(workers, len(stamps) - 2)
        steady = (len(stamps) - 1 - skip) / (stamps[-1] - stamps[skip])
        line = (f"{label}: {workers} worker(s): {steady:.1f} samples/s steady state, {written / total:.1f} samples/s "
                f"including start-up ({written} in {total:.1f} s, PNG writes included; load average "
                f"{os.getloadavg()[0]:.2f})")
        if workers > 1:
            # the workers' CPU per sample, start-up cancelled out by a shorter run: less sensitive to other jobs
            # than wall time, and it includes what two workers cost each other (shared caches, memory bandwidth)
            short = max(args.count // 4, workers * 2)
            _s, short_written, _t, short_cpu = _timed_run(args, workers, short)
            per_sample = (children_cpu - short_cpu) / max(written - short_written, 1)
            line += (f"; workers' CPU {per_sample * 1000:.0f} ms per sample → {workers / per_sample:.1f} samples/s "
                     f"on {workers} idle cores")
        print(line)


def _timed_run(args: argparse.Namespace, workers: int, count: int) -> tuple[list[float], int, float, float]:
    """One ``run_parallel`` of ``count`` samples: (finish times, written, wall seconds, CPU seconds of the
    worker processes, start-up included; 0 for one worker, which runs in this process)."""
    from facenormals.training.data.jobs import run_parallel

    with tempfile.TemporaryDirectory() as tmp:
        job = _job(Path(tmp), args.kind, args.size, args.v4, args.bare)
        stamps: list[float] = []
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        report = run_parallel(job, range(count), workers, "timed",
                              on_result=lambda _i, _s, st=stamps: st.append(time.perf_counter()))
        total = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the pool's workers, joined by now
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return stamps, report.written, total, cpu

if __name__ == "__main__":
    main()
