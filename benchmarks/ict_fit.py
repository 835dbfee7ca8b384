"""The ICT-FaceKit fit against MediaPipe's mesh as coarse faces (issue 13): accuracy by set, yaw and open mouth; cost.

Both coarse faces are drawn from the same stored MediaPipe landmarks of each crop (``facenormals data prior``),
exactly as the prior models and ``facenormals eval --baseline`` see them, and scored with the paper's metric
(per-image mean angular error over the mask). Timings are CPU time of one thread per face (``time.process_time``),
so a busy machine inflates them less than wall time.

    python -m facenormals.benchmarks.ict_fit --data /work/datasets/val_james --data /work/datasets/val_ict_v2 \\
        --json benchmarks/results/ict_fit.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

from tqdm import tqdm

from facenormals import ict_fit, mesh_prior, prior
from facenormals.atomic import write_text_atomic
from facenormals.dataset import load_sample, scan_dataset
from facenormals.metrics import MetricAccumulator
from facenormals.timing import median_ms

SOURCES = ("mediapipe-mesh", "ict-fit", "ict-blend")
YAW_BINS = ((0, 15), (15, 30), (30, 45), (45, 90))
OPEN_MOUTH = 0.3  # jawOpen weight of the rendered face


def _sample_params(root: Path, name: str) -> dict:
    path = root / "params" / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _groups(params: dict) -> list[str]:
    groups = ["all"]
    if "yaw_deg" in params:
        yaw = abs(float(params["yaw_deg"]))
        groups += [f"|yaw| {lo}–{hi}°" for lo, hi in YAW_BINS if lo <= yaw < hi]
    if params.get("expressions", {}).get("jawOpen", 0.0) >= OPEN_MOUTH:
        groups.append(f"jawOpen ≥ {OPEN_MOUTH}")
    return groups


def score_set(root: Path) -> dict[str, dict[str, dict[str, float]]]:
    """{group: {source: {"n", "mean_deg", "pct_below_20"}}} over the samples whose landmarks MediaPipe found."""
    acc: dict[tuple[str, str], MetricAccumulator] = defaultdict(MetricAccumulator)
    for files in tqdm(scan_dataset(root), desc=root.name, unit="img", leave=False):
        landmarks = mesh_prior.read_stored_landmarks(root, files.name)
        if landmarks is None or files.normals is None:
            continue
        sample = load_sample(files)
        points = mesh_prior.landmarks_in_crop(landmarks, sample.image.shape, prior.IDENTITY)
        groups = _groups(_sample_params(root, files.name))
        for source in SOURCES:
            normals, _, _ = prior.coarse_prior(points, sample.image.shape[0], source)
            for group in groups:
                acc[(group, source)].add(normals, sample.normals, sample.mask)
    out: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for (group, source), a in acc.items():
        m = a.result()
        out[group][source] = {"n": m.n_images, "mean_deg": round(m.mean_deg, 3), "pct_below_20": round(m.pct_below_20, 2)}
    return dict(out)


def cpu_ms(fn, repeats: int = 20) -> float:
    """Median CPU time of one call, milliseconds."""
    return median_ms(fn, repeats, clock=time.process_time)


def timings(root: Path, size: int = 256) -> dict[str, float]:
    """Per-face cost of each stage on one real crop's landmarks."""
    files = next(f for f in scan_dataset(root) if mesh_prior.read_stored_landmarks(root, f.name) is not None)
    landmarks = mesh_prior.read_stored_landmarks(root, files.name)
    points = mesh_prior.landmarks_in_crop(landmarks, (size, size), prior.IDENTITY)
    face = ict_fit.load_ict_face()
    fit = ict_fit.fit_landmarks(points, face)
    draw = min(size, prior.ICT_DRAW_PX)  # the prior draws the face at this size, then resizes it to the crop
    posed = prior.resize_crop_points(fit.crop_points(face), size, draw)
    return {
        "fit_cold_ms": cpu_ms(lambda: ict_fit.fit_landmarks(points, face)),
        "fit_warm_ms": cpu_ms(lambda: ict_fit.fit_landmarks(points, face, previous=fit)),
        "pose_vertices_ms": cpu_ms(lambda: fit.crop_points(face)),
        f"rasterize_{draw}px_ms": cpu_ms(lambda: mesh_prior.rasterize_mesh_normals(posed, face.triangles, draw)),
        "ict_prior_total_cold_ms": cpu_ms(lambda: prior.coarse_prior(points, size, "ict-fit")),
        "ict_prior_total_warm_ms": cpu_ms(lambda: prior.coarse_prior(points, size, "ict-fit", previous=fit)),
        "mesh_prior_total_ms": cpu_ms(lambda: prior.coarse_prior(points, size, "mediapipe-mesh")),
        "blend_prior_total_warm_ms": cpu_ms(lambda: prior.coarse_prior(points, size, "ict-blend", previous=fit)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, action="append", required=True, help="dataset folder with stored priors")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    report = {"sets": {root.name: score_set(root) for root in args.data}, "timing_cpu": timings(args.data[0])}
    for name, groups in report["sets"].items():
        print(f"\n{name}: mean angular error (°) · % < 20°")
        for group, by_source in groups.items():
            cells = "  ".join(f"{s} {v['mean_deg']:.2f} · {v['pct_below_20']:.1f} %" for s, v in by_source.items())
            print(f"  {group:<16} n={next(iter(by_source.values()))['n']:<4} {cells}")
    print("\nper-face CPU ms:", {k: round(v, 2) for k, v in report["timing_cpu"].items()})
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
