"""Depth fusion benchmark on synthetic RGB-D: rendered faces, sensor-like depth noise, predicted normals.

    python -m facenormals.benchmarks.fusion --data /work/datasets/val_ict --count 40

For each rendered face crop (256², ``depth/`` in mm, ``params/NAME.json`` with the render camera):

1. **Sensor**: the clean depth is sampled on the sensor's coarser grid (RealSense D435-like: f ≈ 383 px at
   640×480, so 0.74× the crop's f ≈ 520), corrupted by :func:`facenormals.realtime.sources.depth_noise.add_sensor_noise`
   (σ ∝ z², disparity quantisation, holes at grazing angles and edges, occlusion shadows, flying pixels), and
   brought back to the crop grid (nearest: what depth-to-colour alignment gives).
2. **Predicted normals**: from the shipped default model (``facenormals.zoo``) when present, else
   the ground truth perturbed like a network's output (``--normals perturbed``): fine detail blurred (σ 1 px),
   a low-frequency rotation field (3° global + 2° RMS smooth), and 1.5° per-pixel noise. The report says which.
3. **Fusion** (:func:`facenormals.fusion.fuse`), cold start; then a second "frame" (new sensor noise)
   warm-started from the first and reusing its rotation field through the realtime route, the fusion stage
   (:class:`facenormals.fusion_stage.FusionStage`, the crop as track 0 of a frame the size of the crop); then
   sequence mode (``--sequence N``): N frames of the still face, each with new noise, carrying the measurement
   history (``previous=result.measurement``).

Reported over the facial mask: mean angular error of raw-depth normals, predicted normals and fused normals,
depth RMSE of raw and fused depth (on pixels where the sensor gave depth, and fused over the whole mask), and
time per 256² crop (preparation + solve, median; wall clock and CPU time of this process — on a shared machine
the CPU time is the steadier figure). Timings depend on machine load: rerun to compare.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from facenormals.camera import Intrinsics
from facenormals.conventions import angular_error_deg, normalize
from facenormals.dataset import SampleKind, load_sample, scan_dataset
from facenormals.depth import (
    NOISE_MODELS,
    drop_outliers,
    gaussian_filter_depth,
    joint_bilateral_depth,
    median_filter_depth,
    normals_from_depth,
    plane_fit_depth,
)
from facenormals.fusion import SOLVERS, FusionConfig, fuse, fuse_many, prepare, rotate_by_vector
from facenormals.fusion_stage import FusionStage
from facenormals.zoo import WEIGHTS_DIR, default_model_name


def sensor_scale(intr: Intrinsics, profile_name: str) -> float:
    """Sensor pixels per crop pixel (≤ 1): the sensor's focal length over the crop's."""
    from facenormals.realtime.sources.depth_noise import PROFILES

    profile = PROFILES[profile_name]
    return min(1.0, profile.focal_baseline_px_m / profile.baseline_m / intr.fx)


def sensor_noise(clean_m: np.ndarray, intr: Intrinsics, rng: np.random.Generator, profile_name: str) -> np.ndarray:
    """Clean crop depth (metres, 0 = none) → what a sensor aligned to this crop would report (NaN = hole)."""
    from facenormals.realtime.sources.depth_noise import PROFILES, add_sensor_noise

    profile = PROFILES[profile_name]
    if profile.min_range_m > 0.4:  # Kinect v1 stops at 0.5 m; the renders sit at ~0.47 m: keep its noise, lift the limit
        profile = dataclasses.replace(profile, min_range_m=0.3)
    scale = sensor_scale(intr, profile_name)
    size = (max(8, round(intr.width * scale)), max(8, round(intr.height * scale)))
    sensor = Intrinsics(size[0], size[1], intr.fx * size[0] / intr.width, intr.fy * size[1] / intr.height,
                        (intr.cx + 0.5) * size[0] / intr.width - 0.5, (intr.cy + 0.5) * size[1] / intr.height - 0.5)
    coarse = cv2.resize(clean_m, size, interpolation=cv2.INTER_NEAREST)
    noisy = add_sensor_noise(coarse, sensor, rng, profile)
    back = cv2.resize(noisy, (intr.width, intr.height), interpolation=cv2.INTER_NEAREST)
    return np.where(back > 0, back, np.nan).astype(np.float32)


def perturb_normals(normals: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Ground truth made to look like a network's output: blurred detail, low-frequency bias, pixel noise."""
    blurred = normalize(cv2.GaussianBlur(normals, (0, 0), 1.0))
    field = np.stack([cv2.GaussianBlur(rng.standard_normal(mask.shape).astype(np.float32), (0, 0), 24.0)
                      for _ in range(3)], axis=-1)
    field *= np.radians(2.0) / max(float(np.sqrt((field[mask] ** 2).sum(axis=1).mean())), 1e-9)
    axis = normalize(rng.standard_normal(3).astype(np.float32))
    omega = field + axis * np.radians(3.0)
    noise = np.stack([cv2.GaussianBlur(rng.standard_normal(mask.shape).astype(np.float32), (0, 0), 0.7)
                      for _ in range(3)], axis=-1)
    noise *= np.radians(1.5) / max(float(np.sqrt((noise[mask] ** 2).sum(axis=1).mean())), 1e-9)
    out = normalize(rotate_by_vector(blurred, omega + noise))
    return np.where(mask[..., None], out, 0.0).astype(np.float32)


def model_normals(model_path: Path):
    """One crop (S×S×3 uint8) → the model's normals (S×S×3), via the evaluation's predictor (prior models get
    MediaPipe's mesh on the crop there)."""
    from facenormals.training.evaluation import load_predictor

    predictor = load_predictor(model_path)

    def predict(image_rgb: np.ndarray) -> np.ndarray:
        return predictor(image_rgb.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)[0].transpose(1, 2, 0)

    return predict


def read_camera(root: Path, name: str, shape: tuple[int, int]) -> Intrinsics | None:
    """The render's pinhole camera in crop pixels; None for other cameras (weak-perspective renders)."""
    params = json.loads((root / "params" / f"{name}.json").read_text())
    cam = params["camera"]
    if cam.get("type") != "pinhole":
        return None
    return Intrinsics(shape[1], shape[0], float(cam["focal"]), float(cam["focal"]), float(cam["cx"]), float(cam["cy"]))


def mean_error(normals: np.ndarray, truth: np.ndarray, where: np.ndarray) -> float:
    return float(angular_error_deg(normals[where], truth[where]).mean()) if where.any() else float("nan")


def rmse_mm(depth: np.ndarray, truth: np.ndarray, where: np.ndarray) -> float:
    return float(np.sqrt(np.mean((depth[where] - truth[where]) ** 2)) * 1000) if where.any() else float("nan")


FLYING_M = 0.01  # a sensor pixel further than this from the true depth counts as a flying pixel / outlier
IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # the benchmark's crops are the frames: frame → crop is 1:1


def depth_only_methods(raw: np.ndarray, image: np.ndarray, intr: Intrinsics, sensor_px: float,
                       gauss_sigmas: list[float], bilateral_sigma: float, bilateral_colour: float):
    """The depth-only filters a user already has, each as (depth, normals, valid, CPU seconds).

    Normals by central differences of the filtered depth (:func:`normals_from_depth`) for every method but the
    plane fit, whose normal is its fitted plane's. Gaussian, joint bilateral and plane fit first drop pixels more
    than 1 cm from their 5×5 median (flying pixels; included in their time); σ are in sensor pixels.
    """
    out = {}

    def timed(name: str, run) -> None:
        c0 = time.process_time()
        depth, normals, ok = run()
        out[name] = (depth, normals, ok, time.process_time() - c0)

    def with_cd(depth: np.ndarray):
        normals, ok = normals_from_depth(depth, intr)
        return depth, normals, ok & np.isfinite(depth)

    timed("raw depth", lambda: with_cd(raw))
    timed("median 5×5", lambda: with_cd(median_filter_depth(raw, 5)))
    timed("plane fit 5×5 (its plane's normal)", lambda: plane_fit_depth(drop_outliers(raw, FLYING_M), intr, 5))
    for sigma in gauss_sigmas:
        timed(f"Gaussian σ {sigma:g} px", lambda s=sigma: with_cd(gaussian_filter_depth(drop_outliers(raw, FLYING_M),
                                                                                          s * sensor_px)))
    timed(f"joint bilateral σ {bilateral_sigma:g} px / {bilateral_colour:g} grey",
          lambda: with_cd(joint_bilateral_depth(drop_outliers(raw, FLYING_M), image, bilateral_sigma * sensor_px,
                                                bilateral_colour)))
    return out


def frame_classes(params: dict, coverage: float) -> list[str]:
    classes = ["turned" if abs(float(params.get("yaw_deg", 0.0))) >= 20.0 else "frontal"]
    if coverage < 0.95:
        classes.append("holes")
    return classes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("/work/datasets/val_ict_v2"),
                        help="paired dataset with depth/ and params/")
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--profile", choices=("realsense", "kinect"), default="realsense")
    parser.add_argument("--normals", choices=("auto", "model", "perturbed"), default="auto")
    parser.add_argument("--model", type=Path, help="checkpoint (default: the shipped default model)")
    parser.add_argument("--solver", choices=SOLVERS, default="auto")
    parser.add_argument("--position-weight", type=float, default=FusionConfig.position_weight)
    parser.add_argument("--bias-sigma", type=float, default=FusionConfig.bias_sigma_px)
    parser.add_argument("--jump", type=float, default=FusionConfig.jump_m)
    parser.add_argument("--no-bias-correction", action="store_true")
    parser.add_argument("--noise-model", action="store_true", help="per-pixel λ from the sensor's σ_z(z), not one λ")
    parser.add_argument("--presmooth", type=float, default=FusionConfig.presmooth_px, help="sensor pixels")
    parser.add_argument("--normal-sigma", type=float, default=FusionConfig.normal_sigma_deg)
    parser.add_argument("--crossover", type=float, default=FusionConfig.crossover_px,
                        help="multi-scale split σ, sensor pixels (0: only the low-frequency bias correction)")
    parser.add_argument("--crossover-deg", type=float, default=FusionConfig.crossover_deg,
                        help="> 0 with --noise-model: the split where the depth's normals reach this precision")
    parser.add_argument("--detail", type=float, default=FusionConfig.detail_deg, help="largest believed detail, degrees")
    parser.add_argument("--tolerance", type=float, default=FusionConfig.tolerance)
    parser.add_argument("--levels", type=int, default=FusionConfig.levels, help="CG coarse-to-fine levels")
    parser.add_argument("--gauss-sigma", default="1.5,2.5", help="Gaussian baselines' σ, sensor pixels (comma list)")
    parser.add_argument("--bilateral-sigma", type=float, default=2.5, help="joint bilateral σ_space, sensor pixels")
    parser.add_argument("--bilateral-colour", type=float, default=20.0, help="joint bilateral σ_colour, grey levels")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch/OpenCV threads (1: the fusion is memory-bound on 256² maps; the other core runs the network)")
    parser.add_argument("--sequence", type=int, default=5,
                        help="frames of a still face (new noise each) for sequence mode; 0 = skip")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)

    samples = [s for s in scan_dataset(args.data) if s.kind == SampleKind.PAIRED and s.depth is not None]
    if not samples:
        raise SystemExit(f"{args.data}: no paired samples with depth/")
    if args.model is None:
        args.model = WEIGHTS_DIR / f"{default_model_name()}.safetensors"
    use_model = args.normals == "model" or (args.normals == "auto" and args.model.is_file())
    predict = model_normals(args.model) if use_model else None
    source = f"model {args.model.name}" if use_model else "ground truth perturbed (no shipped model)"
    base_config = FusionConfig(solver=args.solver, position_weight=args.position_weight, bias_sigma_px=args.bias_sigma,
                               tolerance=args.tolerance, levels=args.levels, jump_m=args.jump,
                               correct_bias=not args.no_bias_correction, presmooth_px=args.presmooth,
                               normal_sigma_deg=args.normal_sigma, crossover_px=args.crossover,
                               crossover_deg=args.crossover_deg, detail_deg=args.detail,
                               noise=NOISE_MODELS[args.profile] if args.noise_model else None)
    gauss_sigmas = [float(x) for x in args.gauss_sigma.split(",") if x]
    rng = np.random.default_rng(args.seed)
    rows: list[dict] = []
    progress = tqdm(total=args.count, desc="fusion", unit="crop")
    for files in samples:
        if len(rows) == args.count:
            break
        sample = load_sample(files)
        truth, mask = sample.normals, sample.mask
        clean = sample.depth_mm.astype(np.float32) / 1000.0
        intr = read_camera(args.data, files.name, clean.shape)
        if intr is None:
            continue  # weak-perspective render: no metric depth camera to simulate a sensor with
        params = json.loads((args.data / "params" / f"{files.name}.json").read_text())
        progress.update()
        truth_depth = np.where(clean > 0, clean, np.nan)
        mask = mask & (clean > 0) & (np.linalg.norm(truth, axis=2) > 0.5)
        pred = predict(sample.image) if predict else perturb_normals(truth, mask, rng)
        sensor_px = 1.0 / sensor_scale(intr, args.profile)
        config = dataclasses.replace(base_config, depth_pixel_px=sensor_px)
        raw = sensor_noise(clean, intr, rng, args.profile)

        methods = depth_only_methods(raw, sample.image, intr, sensor_px, gauss_sigmas, args.bilateral_sigma,
                                     args.bilateral_colour)
        c0, t0 = time.process_time(), time.perf_counter()
        crop = prepare(raw, pred, mask, intr, config)
        t1 = time.perf_counter()
        (fused,) = fuse_many([crop], config)
        c2, t2 = time.process_time(), time.perf_counter()
        fused_ok = fused.region & np.any(fused.normals != 0, axis=2)
        methods["fused"] = (fused.depth_m, fused.normals, fused_ok, c2 - c0)
        if not args.noise_model:  # the same fusion with the per-pixel λ of the profile's noise model, for comparison
            c5 = time.process_time()
            alt = fuse(raw, pred, mask, intr, dataclasses.replace(config, noise=NOISE_MODELS[args.profile]))
            methods["fused, λ_p from σ_z(z)"] = (alt.depth_m, alt.normals, alt.region & np.any(alt.normals != 0, axis=2),
                                                  time.process_time() - c5)
        # the next frame: new noise, warm-started through the realtime route (the fusion stage, this face as track 0)
        raw2 = sensor_noise(clean, intr, rng, args.profile)
        stage = FusionStage(config, device="cpu")
        stage.remember(0, fused, IDENTITY)
        c3, t3 = time.process_time(), time.perf_counter()
        warm = stage.fuse(raw2, intr, [(0, IDENTITY, pred, mask)]).faces[0]
        c4, t4 = time.process_time(), time.perf_counter()

        sequence_deg = []  # sequence mode: a still face, new noise each frame, the measurement history carried
        result = fused
        for _ in range(1, args.sequence):
            result = fuse(sensor_noise(clean, intr, rng, args.profile), pred, mask, intr, config, init=result.depth_m,
                          previous=result.measurement)
            sequence_deg.append(mean_error(result.normals, truth, mask & np.any(result.normals != 0, axis=2)))

        seen = mask & np.isfinite(raw)
        with np.errstate(invalid="ignore"):
            flying = seen & ~(np.abs(raw - truth_depth) <= FLYING_M)
        common = mask.copy()
        for _, _, ok, _ in methods.values():
            common &= ok
        coverage_raw = float(seen.sum() / max(mask.sum(), 1))
        per_method = {}
        for name, (depth, normals, ok, seconds) in methods.items():
            own = mask & ok
            has = np.isfinite(depth)
            errors = np.abs(depth - truth_depth)
            per_method[name] = {
                "normals_deg": mean_error(normals, truth, own),
                "normals_common_deg": mean_error(normals, truth, common),
                "coverage": float(own.sum() / max(mask.sum(), 1)),
                "rmse_seen_mm": rmse_mm(depth, truth_depth, seen & has),
                "rmse_no_flying_mm": rmse_mm(depth, truth_depth, seen & ~flying & has),
                "medae_mm": float(np.median(errors[seen & has]) * 1000) if (seen & has).any() else float("nan"),
                "cpu_ms": seconds * 1000,
            }
        rows.append({
            "name": files.name,
            "classes": frame_classes(params, coverage_raw),
            "methods": per_method,
            "pred_normals_deg": mean_error(pred, truth, mask),
            "corrected_normals_deg": mean_error(fused.corrected_normals, truth, mask & fused.region),
            "fused_rmse_all_mm": rmse_mm(fused.depth_m, truth_depth, mask & np.isfinite(fused.depth_m)),
            "coverage_raw": coverage_raw,
            "flying_fraction": float(flying.sum() / max(seen.sum(), 1)),
            "prepare_ms": (t1 - t0) * 1000,
            "solve_ms": (t2 - t1) * 1000,
            "total_ms": (t2 - t0) * 1000,
            "cpu_ms": (c2 - c0) * 1000,
            "warm_cpu_ms": (c4 - c3) * 1000,
            "iterations": fused.iterations,
            "warm_total_ms": (t4 - t3) * 1000,
            "warm_iterations": warm.iterations,
            "warm_fused_normals_deg": mean_error(warm.normals, truth, mask & np.any(warm.normals != 0, axis=2)),
            "fused_own_deg": per_method["fused"]["normals_deg"],
            "sequence_last_deg": sequence_deg[-1] if sequence_deg else float("nan"),
        })
    progress.close()

    names = list(rows[0]["methods"])
    table = {name: {key: (float(statistics.median(r["methods"][name][key] for r in rows)) if key.endswith("_ms")
                          else float(np.nanmean([r["methods"][name][key] for r in rows])))
                    for key in rows[0]["methods"][name]} for name in names}
    scalar_keys = [k for k in rows[0] if isinstance(rows[0][k], (int, float))]
    summary = {k: (float(statistics.median(r[k] for r in rows)) if k.endswith("_ms") or "iterations" in k
                   else float(np.nanmean([r[k] for r in rows]))) for k in scalar_keys}
    filters = [n for n in names if not n.startswith("fused") and n != "raw depth"]
    best = min(filters, key=lambda n: table[n]["normals_common_deg"])
    classes = sorted({c for r in rows for c in r["classes"]})
    by_class = {}
    for cls in ["all", *classes]:
        subset = [r for r in rows if cls == "all" or cls in r["classes"]]
        by_class[cls] = {
            "frames": len(subset),
            "best_filter_deg": float(np.mean([r["methods"][best]["normals_common_deg"] for r in subset])),
            "fused_deg": float(np.mean([r["methods"]["fused"]["normals_common_deg"] for r in subset])),
            "fused_worse_frames": sum(r["methods"]["fused"]["normals_common_deg"]
                                      > min(r["methods"][n]["normals_common_deg"] for n in filters) for r in subset),
        }
    print(f"\n{len(rows)} crops of {args.data.name}, {args.profile}-like noise, predicted normals: {source}, "
          f"solver {fused.solver}, λ={base_config.position_weight} per sensor pixel"
          f"{'' if base_config.noise is None else ' at the reference noise (σ_z(z) of the profile per pixel)'}, "
          f"split σ={base_config.crossover_px} sensor px, presmooth {base_config.presmooth_px}, "
          f"bias σ={base_config.bias_sigma_px}, threads {args.threads}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"flying pixels (> {FLYING_M * 100:g} cm off the truth): {summary['flying_fraction']:.1%} of the sensor's pixels; "
          f"normals by central differences of each depth map (plane fit: its plane); errors over the facial mask")
    print("\n| method | normals: mean error (°), own pixels | coverage | mean error (°), pixels all methods cover "
          "| depth RMSE (mm), sensor pixels | RMSE without flying pixels | median abs. error (mm) | CPU ms |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        m = table[name]
        label = f"**{name}**" if name.startswith("fused") else name
        print(f"| {label} | {m['normals_deg']:.2f} | {m['coverage']:.1%} | {m['normals_common_deg']:.2f} | "
              f"{m['rmse_seen_mm']:.2f} | {m['rmse_no_flying_mm']:.2f} | {m['medae_mm']:.2f} | {m['cpu_ms']:.1f} |")
    print(f"| predicted normals (the network) | {summary['pred_normals_deg']:.2f} | 100% | | | | | |")
    print(f"| predicted, bias-corrected against the depth | {summary['corrected_normals_deg']:.2f} | | | | | | |")
    print(f"| fused, warm-started next frame | {summary['warm_fused_normals_deg']:.2f} | | | | | | "
          f"{summary['warm_cpu_ms']:.1f} |")
    print(f"\nfused depth RMSE over the whole mask (holes filled): {summary['fused_rmse_all_mm']:.2f} mm")
    if args.sequence > 1:
        gain = 1 - summary["sequence_last_deg"] / summary["fused_own_deg"]
        print(f"sequence mode, still face, frame {args.sequence} of {args.sequence} (measurement history, weight "
              f"{base_config.history_weight:g}): fused normals {summary['sequence_last_deg']:.2f}° vs one frame "
              f"{summary['fused_own_deg']:.2f}° (own pixels; {gain:.1%} lower)")
    print(f"\n| frames | n | best filter ({best}) (°) | fused (°) | frames where fused is worse than every filter's best |")
    print("|---|---|---|---|---|")
    for cls, c in by_class.items():
        print(f"| {cls} | {c['frames']} | {c['best_filter_deg']:.2f} | {c['fused_deg']:.2f} | {c['fused_worse_frames']} |")
    print(f"\nfusion per 256² crop (median): prepare {summary['prepare_ms']:.1f} + solve {summary['solve_ms']:.1f} = "
          f"{summary['total_ms']:.1f} ms wall, {summary['cpu_ms']:.1f} ms CPU, {summary['iterations']:.0f} CG iterations; "
          f"warm {summary['warm_total_ms']:.1f} ms wall / {summary['warm_iterations']:.0f} iterations")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "methods": table, "classes": by_class, "best_filter": best,
                                         "normals": source, "solver": fused.solver, "profile": args.profile,
                                         "config": dataclasses.asdict(base_config) | {"noise": str(base_config.noise)},
                                         "rows": rows}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
