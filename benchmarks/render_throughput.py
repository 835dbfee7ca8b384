"""Data-engine throughput: ICT samples per second at 256² (render + post-processing + PNG writes).

    python -m facenormals.benchmarks.render_throughput [--count 60] [--workers 1 2] [--kind paired]

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

import numpy as np


def _stage_times(count: int, size: int) -> dict[str, float]:
    from facenormals.conventions import normalize
    from facenormals.training.data.jobs import sample_rng
    from facenormals.training.data.renderer import rasterize, vertex_normals
    from facenormals.training.data.sources import IctSource
    from facenormals.training.data.synth import RenderSettings, render

    source = IctSource()
    times: dict[str, list[float]] = {"face sample (shape + albedo)": [], "full render (paired)": [],
                                     "rasterise only": []}
    for i in range(count):
        rng = sample_rng(0, i)
        t0 = time.perf_counter()
        mesh = source.sample(rng)
        t1 = time.perf_counter()
        render(mesh, RenderSettings(size=size), rng, None)
        t2 = time.perf_counter()
        v = mesh.vertices + np.array([0, 0, -60], np.float32)
        focal = 3.5 * size  # the face fills the crop, as in the paper's crop
        xy = np.stack([size / 2 + focal * v[:, 0] / -v[:, 2], size / 2 - focal * v[:, 1] / -v[:, 2]], 1)
        t3 = time.perf_counter()
        frags = rasterize(xy, -v[:, 2], mesh.faces, (size, size))
        normalize(frags.interpolate_vertices(vertex_normals(mesh.vertices, mesh.faces), mesh.faces))
        t4 = time.perf_counter()
        times["face sample (shape + albedo)"].append(t1 - t0)
        times["full render (paired)"].append(t2 - t1)
        times["rasterise only"].append(t4 - t3)
    return {k: float(np.median(v)) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--kind", choices=("paired", "normal-only"), default="paired")
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()

    from facenormals.training.data.jobs import run_parallel
    from facenormals.training.data.render_job import RenderJob
    from facenormals.training.data.synth import RenderSettings

    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    for stage, seconds in _stage_times(10, args.size).items():
        print(f"  1 process, median {stage}: {seconds * 1000:.1f} ms")
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as tmp:
            job = RenderJob(out=Path(tmp), source="ict", seed=0, kind=args.kind,
                            settings=RenderSettings(size=args.size, kind=args.kind))
            stamps: list[float] = []
            start = time.perf_counter()
            report = run_parallel(job, range(args.count), workers, "timed",
                                  on_result=lambda _i, _s, st=stamps: st.append(time.perf_counter()))
            # steady state: from the first finished sample to the last (worker start-up and model load excluded)
            skip = min(workers, len(stamps) - 2)
            steady = (len(stamps) - 1 - skip) / (stamps[-1] - stamps[skip])
            total = time.perf_counter() - start
        print(f"{args.kind} {args.size}²: {workers} worker(s): {steady:.1f} samples/s steady state, "
              f"{report.written / total:.1f} samples/s including start-up ({report.written} in {total:.1f} s, "
              f"PNG writes included; load average {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
