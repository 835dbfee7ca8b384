"""Latency of the MediaPipe mesh prior: landmarks → crop points → rasterised normals, and MediaPipe itself.

    python -m facenormals.benchmarks.mesh_prior [--size 256] [--runs 300] [--model-runs 20]

Uses skimage's astronaut photo (public domain, NASA). Prints medians and 90th percentiles in ms; the first
call (numba compile or cache load) is reported separately and excluded. With ``--model-runs`` > 0 it also
times the fast image→normal path in torch with and without the prior channels (the network's share of the
prior's latency cost; untrained weights, which time the same as trained ones).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from facenormals import mesh_prior
from facenormals.geometry import face_crop
from facenormals.timing import timed_ms


def time_ms(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    samples = timed_ms(fn, runs, warmup=0)
    return float(np.median(samples)), float(np.percentile(samples, 90))


def model_rows(crop: object, points: np.ndarray, triangles: np.ndarray, size: int,
               runs: int) -> list[tuple[str, tuple[float, float]]]:
    import torch

    from facenormals.model import create_model, with_prior

    torch.set_num_threads(2)
    image = torch.from_numpy(crop.to_tensor_array()[None])
    normals, coverage = mesh_prior.rasterize_mesh_normals(points, triangles, size)
    x = with_prior(image, torch.from_numpy(normals.transpose(2, 0, 1)[None]),
                   torch.from_numpy(coverage[None, None].astype(np.float32)))
    rows = []
    for label, prior, inputs in (("fast RGB", "none", image), ("fast prior (residual)", "residual", x)):
        path = create_model("fast", "full", **({"prior": prior} if prior != "none" else {})).image_to_normal_path.eval()
        with torch.inference_mode():
            path(inputs)  # warm-up
            rows.append((f"torch image→normal, {label}, 1×{inputs.shape[1]}×{size}²",
                         time_ms(lambda p=path, i=inputs: p(i), runs)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="crop side in pixels")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--model-runs", type=int, default=20, help="torch forward passes per model (0: skip)")
    args = parser.parse_args(argv)

    from skimage.data import astronaut

    image = astronaut()
    with mesh_prior.create_face_mesh() as face_mesh:
        found = face_mesh.find(image)
        if not found:
            raise SystemExit("MediaPipe found no face on the astronaut photo")
        landmarks, frame_xy = found[0].normalised.astype(np.float64), found[0].points
        crop = face_crop(image, frame_xy, size=args.size)
        triangles = mesh_prior.mesh_triangles(close_holes=True)
        points = mesh_prior.landmarks_in_crop(landmarks, image.shape, crop.matrix)

        start = time.perf_counter()
        normals, coverage = mesh_prior.rasterize_mesh_normals(points, triangles, args.size)
        first = (time.perf_counter() - start) * 1e3
        rows = [
            ("landmarks_in_crop", time_ms(lambda: mesh_prior.landmarks_in_crop(landmarks, image.shape, crop.matrix),
                                          args.runs)),
            ("rasterize_mesh_normals", time_ms(lambda: mesh_prior.rasterize_mesh_normals(points, triangles, args.size),
                                               args.runs)),
            ("fill_prior (mesh normals extended to the crop)",
             time_ms(lambda n=normals, c=coverage: mesh_prior.fill_prior(n, c), args.runs)),
            ("mesh_normals_from_landmarks (both)",
             time_ms(lambda: mesh_prior.mesh_normals_from_landmarks(landmarks, image.shape, crop.matrix, args.size),
                     args.runs)),
            ("MediaPipe FaceMesh static, on the crop (context)",
             time_ms(lambda: face_mesh.find(crop.image), max(args.runs // 10, 5))),
        ]
    if args.model_runs > 0:
        rows += model_rows(crop, points, triangles, args.size, args.model_runs)
    print(f"mesh prior at {args.size}², {len(triangles)} triangles; first call (numba compile/cache load) {first:.0f} ms")
    print("| step | median ms | p90 ms |\n|---|---|---|")
    for name, (median, p90) in rows:
        print(f"| {name} | {median:.2f} | {p90:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
