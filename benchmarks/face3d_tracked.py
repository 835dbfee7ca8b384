"""A tracked face's 3-D refinement on a real clip (issue 20): CPU ms per face and frame, and what the bounded warm
solve costs in accuracy.

The frames of a source (default: the embedded ``sample`` clip, a real photo moving) go through the realtime
engine once (default model, ORT CPU, one thread); then :class:`facenormals.realtime.face3d_tracks.FaceTracks3D`
with ``--view 3d``'s settings runs over the results, each ``update`` timed with ``time.process_time`` (one thread):
the fit where the model gave none, the coarse depth, the refinement (the first frame of a track cold, then at most
``WARM_MAX_ITERATIONS`` CG iterations from the last frame's detail) and the view's every-2nd-pixel mesh. ``lag``:
the mean angle between the tracked surface's normals and a full solve of the same frame (not timed).

    python -m facenormals.benchmarks.face3d_tracked --frames 90 --json benchmarks/results/face3d_tracked.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from facenormals import face3d
from facenormals.atomic import write_text_atomic
from facenormals.conventions import angular_error_deg


def engine_results(spec: str, frames: int) -> list:
    from facenormals.engine import FrameEngine
    from facenormals.export.prepare import create_backend
    from facenormals.faces import create_detector
    from facenormals.realtime.sources.base import open_source

    backend = create_backend("ort-cpu", None, threads=1)
    detector = create_detector(1)
    engine = FrameEngine(backend, detector)
    try:
        with open_source(spec, **({"frames": frames} if spec == "sample" else {})) as source:
            return [engine.process(frame) for frame, _ in zip(source, range(frames), strict=False)]
    finally:
        detector.close()


def lag_deg(face: face3d.Face3D, normals: np.ndarray, mask: np.ndarray) -> float:
    full = face3d.refine(face.coarse, normals, mask)
    ok = face.refined.region & full.region
    ok &= (np.linalg.norm(full.normals, axis=-1) > 0.5) & (np.linalg.norm(face.refined.normals, axis=-1) > 0.5)
    return float(angular_error_deg(face.refined.normals[ok], full.normals[ok]).mean())


def measure(results: list) -> dict:
    from facenormals.realtime.face3d_tracks import FaceTracks3D
    from facenormals.realtime.view3d import MESH_STEP

    torch.set_num_threads(1)
    tracks = FaceTracks3D(mesh_step=MESH_STEP, with_coarse_mesh=False)
    rows = []
    for result in results:
        start = time.process_time()
        faces = tracks.update(result)
        ms = 1000 * (time.process_time() - start)
        for k, face in faces:
            normals = np.ascontiguousarray(result.crop_normals[k].transpose(1, 2, 0))
            rows.append({"frame": result.frame.id, "ms": ms / len(faces), "iterations": face.refined.iterations,
                         "calibrated": face.coarse.calibrated,
                         "lag_deg": lag_deg(face, normals, result.crops[k].mask)})
    tracked = rows[1:]  # the first frame of the track is a cold solve

    def stat(key: str, q: float) -> float:
        return float(np.percentile([r[key] for r in tracked], q))

    return {"faces": len(rows), "lambda": face3d.FACE_FUSION.position_weight,
            "warm_max_iterations": face3d.WARM_MAX_ITERATIONS, "first_ms": rows[0]["ms"],
            "first_iterations": rows[0]["iterations"],
            "tracked_ms": {"p50": stat("ms", 50), "p90": stat("ms", 90)},
            "tracked_iterations": {"p50": stat("iterations", 50), "p90": stat("iterations", 90)},
            "lag_deg": {"p50": stat("lag_deg", 50), "p90": stat("lag_deg", 90)}, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", default="sample")
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = {"source": args.source, **measure(engine_results(args.source, args.frames))}
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}, indent=1))
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
