"""Data-engine throughput: ICT samples per second at 256² (render + post-processing + PNG writes).

    python -m facenormals.benchmarks.render_throughput [--count 60] [--workers 1 2] [--kind paired] [--v4] [--bare]

Samples are rendered as `facenormals data render` renders them: photo/video backgrounds and the James texture
transfer from ../shared/data when present (scripts/make_datasets.sh). ``--bare``: procedural backgrounds only and
no texture transfer (the setting of the figures before 2026-12-03). ``--v4``: the settings of ict_paired_v4
(identity scale 1–1.6 with the fold bound, 2 mm detail, 30 % of the faces at |yaw| 40–90°).

Prints one line per worker count: end-to-end samples/s of `facenormals data render` (setup excluded), plus the
in-process per-stage time of one worker. The machine's load average is printed too: on a shared machine the
figures are lower bounds.
"""

from __future__ import annotations

import argparse
import os
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
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--kind", choices=("paired", "normal-only"), default="paired")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--v4", action="store_true", help="ict_paired_v4's identity, detail and yaw settings")
    parser.add_argument("--bare", action="store_true", help="procedural backgrounds only, no texture transfer")
    args = parser.parse_args()

    from facenormals.training.data.jobs import run_parallel

    label = f"{args.kind}{' v4' if args.v4 else ''}{' bare' if args.bare else ''} {args.size}²"
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    cpu, wall = _cpu_per_sample(args.kind, args.size, min(args.count, 30), args.v4, args.bare)
    print(f"{label}: one process: {cpu * 1000:.0f} ms CPU / {wall * 1000:.0f} ms wall per sample "
          f"→ {2 / cpu:.1f} samples/s on 2 idle cores (CPU-bound estimate)")
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as tmp:
            job = _job(Path(tmp), args.kind, args.size, args.v4, args.bare)
            stamps: list[float] = []
            start = time.perf_counter()
            report = run_parallel(job, range(args.count), workers, "timed",
                                  on_result=lambda _i, _s, st=stamps: st.append(time.perf_counter()))
            # steady state: from the first finished sample to the last (worker start-up and model load excluded)
            skip = min(workers, len(stamps) - 2)
            steady = (len(stamps) - 1 - skip) / (stamps[-1] - stamps[skip])
            total = time.perf_counter() - start
        print(f"{label}: {workers} worker(s): {steady:.1f} samples/s steady state, "
              f"{report.written / total:.1f} samples/s including start-up ({report.written} in {total:.1f} s, "
              f"PNG writes included; load average {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
