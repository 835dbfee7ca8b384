"""A 3-D face from RGB alone (issue 20): the refined face's normals and depth against exact rendered geometry.

For each rendered ICT face (a dataset folder with ``depth/`` in mm and ``params/`` with the pinhole camera, e.g.
``val_ict_v2``): the ICT face fitted to the stored MediaPipe landmarks (``facenormals data prior``), its depth over
the crop (:func:`facenormals.face3d.coarse_depth`, weak perspective), the shipped network's normals, and the
refinement of the first by the second (:data:`facenormals.face3d.FACE_FUSION`, the fitted face's rims trusted
:data:`facenormals.face3d.RIM_WEIGHT`; ``--sweep``'s ``unweighted``: plain least squares). Scored on the pixels where the
ground truth has normals and depth, the fitted face covers, and the landmark hull is (what the engine refines):

* normals: mean angular error of the fitted face's (its depth's normals), the network's and the refined surface's;
  ``mediapipe_deg``: MediaPipe's own face mesh (the 468 landmarks' triangles, eyes and mouth closed, smooth-shaded
  as the mesh prior draws it) on the scored pixels it covers (``mediapipe_pct`` of them);
* depth: RMSE (mm) of the fitted and the refined depth after the best scale and offset onto the ground truth's
  (the fit is weak perspective and its distance unknown, so both are free).
* calibrated (``calibrated_*``, the render's own pinhole as a calibration file would give it): the same with the
  head's distance from the focal length; ``calibrated_distance_mm`` is the median signed depth error with no
  alignment at all (how far off the head is placed), ``calibrated_*_offset_mm`` the RMSE after the best offset
  only (the scale is metric, not fitted).
* ``*_vs_integrated_deg``: the same normals against the ground truth's normals *integrated into one surface*
  (:data:`TRUTH_INTEGRATION`), i.e. the best surface's normals; ``integrated_truth_deg`` is how far that surface's
  normals are from the rendered normal maps themselves — the part of the maps no surface has.
* where the error is (``network_*`` / ``refined_*``, the shipped normals and their refined surface's): ``*_rim_deg``
  on the pixels within 2 px of where even the integrated ground truth is > 5° off the maps (``rim_pct`` of the
  scored pixels: eyelid rims, nostrils, lips — defined by the ground truth alone) and ``*_smooth_deg`` on the rest;
  ``*_border_deg`` / ``*_interior_deg`` in and inside the 12 px border band; ``*_rotation_deg`` / ``*_low_deg`` /
  ``*_detail_deg``, the split of ``facenormals eval --diagnose`` (σ = 4 px: head pose, shape, detail).

Timing: CPU time of one thread (``torch.set_num_threads(1)``, ``time.process_time``) per face, cold (coarse to
fine), warm (started from the same face's refined depth and bias rotation: nothing moved) and moving (the detail
shifted by a pixel on this coarse depth, at most ``WARM_MAX_ITERATIONS``: a tracked face in video);
``view_ms``: what ``--view 3d`` adds on top of the warm refinement (the grid mesh of every 2nd pixel and its
z-buffer rendering at 480², turned 25°).

    python -m facenormals.benchmarks.face3d --data /work/datasets/val_ict_v2 --limit 40 --json benchmarks/results/face3d.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from facenormals import face3d, ict_fit, mesh_prior, prior
from facenormals.atomic import write_text_atomic
from facenormals.conventions import angular_error_deg
from facenormals.dataset import load_sample, scan_dataset
from facenormals.depth import normals_from_depth
from facenormals.geometry import hull_mask
from training.diagnose import BAND_SIGMAS, border_band, decompose

RIM_DEG = 5.0  # the integrated ground truth this far off the maps: a surface cannot have those normals there
RIM_PX = 2  # ... and this many pixels around (the solve spreads what it cannot fit)
DIAGNOSE_SIGMA_PX = 4.0  # eval --diagnose's low-pass at 256²

# The ground truth's own normals integrated into one surface (λ → 0: the fitted depth only anchors it), to a tight
# tolerance: the rendered normal maps are interpolated vertex normals, not exactly any surface's (eyelids, nostrils).
TRUTH_INTEGRATION = dataclasses.replace(face3d.FACE_FUSION, position_weight=1e-5, tolerance=1e-9, max_iterations=5000)


def best_affine_rmse_mm(ours_m: np.ndarray, truth_mm: np.ndarray, where: np.ndarray) -> float:
    """RMSE (mm) of ``a · ours + b`` fitted by least squares onto the ground-truth depth over ``where``."""
    x = ours_m[where].astype(np.float64)
    y = truth_mm[where].astype(np.float64)
    design = np.stack([x, np.ones_like(x)], axis=1)
    coeffs, *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(np.sqrt(np.mean((design @ coeffs - y) ** 2)))


def offset_rmse_mm(ours_m: np.ndarray, truth_mm: np.ndarray, where: np.ndarray) -> float:
    """RMSE (mm) after the best constant offset only (metric depth: the scale is not fitted)."""
    error = ours_m[where].astype(np.float64) * 1000 - truth_mm[where]
    return float(np.sqrt(np.mean((error - error.mean()) ** 2)))


def error_by_region(normals: np.ndarray, truth: np.ndarray, where: np.ndarray, rim: np.ndarray) -> dict[str, float]:
    """Mean angular error on the rim / the rest, border band / interior, and eval --diagnose's three parts."""
    error = angular_error_deg(normals, truth)
    band = border_band(where, BAND_SIGMAS * DIAGNOSE_SIGMA_PX)
    split = decompose(normals, truth, where, sigma=DIAGNOSE_SIGMA_PX)

    def mean(region: np.ndarray) -> float:
        return float(error[region].mean()) if region.any() else float("nan")

    return {"rim_deg": mean(where & rim), "smooth_deg": mean(where & ~rim), "border_deg": mean(band),
            "interior_deg": mean(where & ~band), "rotation_deg": split.parts["rotation_deg"],
            "low_deg": split.parts["low_freq_deg"], "detail_deg": split.parts["detail_deg"]}


def view_ms(result: face3d.fusion.FusionResult, coarse: face3d.CoarseDepth) -> float:
    """CPU ms of what ``--view 3d`` draws for one face: the every-2nd-pixel mesh and its 480² rendering."""
    from facenormals.realtime.render import light_from_angles
    from facenormals.realtime.view3d import MESH_STEP, render_mesh, turn_matrix

    start = time.process_time()
    mesh = face3d.depth_to_mesh(result.depth_m, coarse, result.region, step=MESH_STEP, normals=result.normals)
    render_mesh(mesh, turn_matrix(25.0, 0.0), light_from_angles(-30.0, 25.0), 480)
    return 1000 * (time.process_time() - start)


def evaluate(root: Path, limit: int, configs: dict[str, face3d.fusion.FusionConfig], model: str | None,
             skip: int = 0, rim_weights: dict[str, float] | None = None) -> dict:
    """``rim_weights``: a configuration's ``face3d.refine(rim_weight=)`` where not :data:`face3d.RIM_WEIGHT`."""
    from facenormals.benchmarks.fusion import read_camera
    from facenormals.export.prepare import create_backend

    torch.set_num_threads(1)
    backend = create_backend("torch", model)
    face = ict_fit.load_ict_face()
    rows = []
    samples = [s for s in scan_dataset(root) if s.depth is not None and s.image is not None][skip:skip + limit]
    for files in samples:
        landmarks = mesh_prior.read_stored_landmarks(root, files.name)
        if landmarks is None:
            continue
        sample = load_sample(files)
        size = sample.image.shape[0]
        points = mesh_prior.landmarks_in_crop(landmarks, sample.image.shape, prior.IDENTITY)
        fit = ict_fit.fit_landmarks(points, face)
        rgb = sample.image.transpose(2, 0, 1)[None].astype(np.float32) / 255.0
        inputs = rgb
        if backend.prior_source is not None:  # from the model's metadata, not its channel count
            normals_p, coverage_p = prior.stored_prior(root, files.name, sample.image.shape, backend.prior_source)
            inputs = np.concatenate([rgb, normals_p.transpose(2, 0, 1)[None], coverage_p[None, None]], axis=1)
        network = np.ascontiguousarray(backend(inputs.astype(np.float32))[0].transpose(1, 2, 0))
        hull = hull_mask(points[:, :2] * [1, -1], (size, size))
        truth_ok = sample.mask & (np.linalg.norm(sample.normals, axis=-1) > 0.5) & (sample.depth_mm > 0)
        start = time.process_time()
        coarse = face3d.coarse_depth(fit, size, face)
        coarse_ms = 1000 * (time.process_time() - start)
        coarse_normals, _ = normals_from_depth(coarse.depth_m, coarse.intrinsics)
        row = {"name": files.name, "coverage": float(coarse.coverage.mean()), "coarse_depth_ms": coarse_ms}
        refined = {}
        for label, config in configs.items():
            trust = (rim_weights or {}).get(label, face3d.RIM_WEIGHT)
            start = time.process_time()
            result = face3d.refine(coarse, network, hull, config, rim_weight=trust)
            cold = 1000 * (time.process_time() - start)
            start = time.process_time()
            face3d.refine(coarse, network, hull, config, init=result.depth_m, rotation=result.bias_rotation,
                          rim_weight=trust)
            warm = 1000 * (time.process_time() - start)
            # a tracked face that moved a pixel: this coarse depth plus the detail shifted, the bounded warm solve
            moved = coarse.depth_m + np.roll(result.depth_m - coarse.depth_m, 1, axis=1)
            start = time.process_time()
            face3d.refine(coarse, network, hull, dataclasses.replace(config, max_iterations=face3d.WARM_MAX_ITERATIONS),
                          init=moved, rotation=result.bias_rotation, rim_weight=trust)
            row[f"{label}_moving_ms"] = 1000 * (time.process_time() - start)
            refined[label] = result
            row[f"{label}_cold_ms"], row[f"{label}_warm_ms"] = cold, warm
            row[f"{label}_iterations"] = result.iterations
        camera = read_camera(root, files.name, sample.image.shape[:2])
        calibrated = {}
        if camera is not None:  # in crop pixels: the render is its own crop
            coarse_cal = face3d.coarse_depth(fit, size, face, intrinsics=camera)
            start = time.process_time()
            calibrated["coarse"] = coarse_cal
            calibrated["refined"] = face3d.refine(coarse_cal, network, hull)
            row["calibrated_cold_ms"] = 1000 * (time.process_time() - start)
            row["calibrated_iterations"] = calibrated["refined"].iterations
        row["view_ms"] = view_ms(refined["refined"], coarse) if "refined" in refined else float("nan")
        # plain least squares: the rendered maps' rims are what this surface is scored against
        integrated = face3d.refine(coarse, sample.normals.astype(np.float32), hull, TRUTH_INTEGRATION, rim_weight=1.0)
        where = truth_ok & coarse.coverage & hull
        for result in [*refined.values(), *([calibrated["refined"]] if calibrated else [])]:
            where &= result.region & (np.linalg.norm(result.normals, axis=-1) > 0.5)
        if calibrated:
            where &= calibrated["coarse"].coverage
        # one pixel in from the region's border: one-sided differences there are not the surface's
        where &= integrated.region & (np.linalg.norm(integrated.normals, axis=-1) > 0.5)
        where &= np.pad(where[1:-1, 1:-1] & where[:-2, 1:-1] & where[2:, 1:-1] & where[1:-1, :-2] & where[1:-1, 2:],
                        1, constant_values=False)
        truth = sample.normals
        row["pixels"] = int(where.sum())
        row["fitted_deg"] = float(angular_error_deg(coarse_normals[where], truth[where]).mean())
        row["network_deg"] = float(angular_error_deg(network[where], truth[where]).mean())
        mp_normals, mp_coverage = mesh_prior.mesh_normals_from_landmarks(landmarks, sample.image.shape, prior.IDENTITY,
                                                                         size)
        row["mediapipe_pct"] = 100.0 * float((where & mp_coverage).sum() / where.sum())
        row["mediapipe_deg"] = float(angular_error_deg(mp_normals[where & mp_coverage], truth[where & mp_coverage]).mean())
        row["fitted_depth_mm"] = best_affine_rmse_mm(coarse.depth_m, sample.depth_mm, where)
        for label, result in refined.items():
            row[f"{label}_deg"] = float(angular_error_deg(result.normals[where], truth[where]).mean())
            row[f"{label}_depth_mm"] = best_affine_rmse_mm(result.depth_m, sample.depth_mm, where)
        # against the best surface's normals: the ground truth's normals integrated (what no surface can beat)
        surface = integrated.normals
        row["integrated_truth_deg"] = float(angular_error_deg(surface[where], truth[where]).mean())
        row["network_vs_integrated_deg"] = float(angular_error_deg(network[where], surface[where]).mean())
        for label, result in refined.items():
            row[f"{label}_vs_integrated_deg"] = float(angular_error_deg(result.normals[where], surface[where]).mean())
        rim = cv2.dilate((where & (angular_error_deg(surface, truth) > RIM_DEG)).astype(np.uint8),
                         np.ones((2 * RIM_PX + 1,) * 2, np.uint8)).astype(bool)
        row["rim_pct"] = 100.0 * float((rim & where).sum() / where.sum())
        for label, normals in (("network", network), *((("refined", refined["refined"].normals),)
                                                       if "refined" in refined else ())):
            for key, value in error_by_region(normals, truth, where, rim).items():
                row[f"{label}_{key}"] = value
        if calibrated:
            coarse_cal, refined_cal = calibrated["coarse"], calibrated["refined"]
            cal_normals, _ = normals_from_depth(coarse_cal.depth_m, coarse_cal.intrinsics)
            row["calibrated_distance_mm"] = float(np.median(coarse_cal.depth_m[where] * 1000 - sample.depth_mm[where]))
            for label, depth_m, normals in (("fitted", coarse_cal.depth_m, cal_normals),
                                            ("refined", refined_cal.depth_m, refined_cal.normals)):
                row[f"calibrated_{label}_deg"] = float(angular_error_deg(normals[where], truth[where]).mean())
                row[f"calibrated_{label}_depth_mm"] = best_affine_rmse_mm(depth_m, sample.depth_mm, where)
                row[f"calibrated_{label}_offset_mm"] = offset_rmse_mm(depth_m, sample.depth_mm, where)
        rows.append(row)
        print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    keys = [k for k in rows[0] if k != "name"]

    def over_rows(reduce) -> dict[str, float]:
        return {k: float(reduce([r[k] for r in rows if k in r])) for k in keys}

    return {"data": str(root), "faces": len(rows), "model": backend.name, "mean": over_rows(np.mean),
            "median": over_rows(np.median), "p90": over_rows(lambda v: np.percentile(v, 90)), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("/work/datasets/val_ict_v2"))
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--skip", type=int, default=0,
                        help="leave out the first N faces (--skip 40: a held-out set for knobs chosen on the first 40)")
    parser.add_argument("--model", help="checkpoint; default: the shipped model")
    parser.add_argument("--sweep", action="store_true",
                        help="also the previous knobs (λ 0.002 + bias correction), λ 0.002 / 0.0005 / 0.00005, bias on, "
                             "jump 2 cm, and plain least squares (no rim weights)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    configs = {"refined": face3d.FACE_FUSION}
    if args.sweep:
        base = face3d.FACE_FUSION
        configs |= {"previous": dataclasses.replace(base, position_weight=0.002, correct_bias=True),  # λ 0.002 + bias
                    "lam0.002": dataclasses.replace(base, position_weight=0.002),
                    "lam0.0005": dataclasses.replace(base, position_weight=0.0005),
                    "lam0.00005": dataclasses.replace(base, position_weight=0.00005),
                    "bias": dataclasses.replace(base, correct_bias=True),
                    "jump0.02": dataclasses.replace(base, jump_m=0.02),  # session 5's: ties across the fitted steps
                    "unweighted": base}  # session 6's: every normal trusted alike (rim_weight 1)
    result = evaluate(args.data, args.limit, configs, args.model, args.skip, {"unweighted": 1.0})
    print(json.dumps(result["mean"], indent=1))
    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
