"""``facenormals eval``: the paper's metrics on dataset folders, optionally with coarse-face baselines (MediaPipe mesh, ICT fit).

    facenormals eval --data DIR [--data DIR ...] --model CKPT|ONNX [--json FILE] [--baseline mediapipe-mesh|ict-fit|ict-blend]
    facenormals eval --data DIR --input-size 192   (the network on 192² crops, its normals resized back to the data's)
    facenormals eval --data DIR --variants full=A.safetensors no-skip=B.safetensors ...   (ablation table)
    facenormals eval --data DIR --diagnose [--baseline ict-fit]   (where the error is: training/diagnose.py)

JSON (``--json``)::

    {"model": str, "sets": {NAME: {"n_images", "mean_deg", "std_deg", "pct_below_20", "pct_below_25", "pct_below_30"}},
     "baselines": {"mediapipe-mesh": {"sets": {...same...}, "no_face": {NAME: int}, "coverage_pct": {NAME: float}}},
     "variants": {VARIANT: {"model": str, "sets": {...same...}}},        # the last two only when asked for
     "diagnose": {NAME: DIAGNOSIS}}                                    # --diagnose (baselines get one each too)

DIAGNOSIS (``--diagnose``; every angle in degrees, set figures are means of per-image means)::

    {"n_images", "sigma_px", "band_px", "mean_deg", "rotation_deg", "low_freq_deg", "detail_deg",  # the 3 parts sum to mean
     "rotation_angle_deg", "blurred_prediction_deg", "blurred_truth_deg",
     "regions": {"border"|"interior": {"n_images", "pixel_pct", "mean_deg", "rotation_deg", "low_freq_deg", "detail_deg"}},
     "face_parts": {"eyes"|"brows"|"mouth"|"nose"|"rest": {...as regions}},  # when landmarks are stored (data prior)
     "by_yaw": {"0-15": {"n_images", "mean_deg", "rotation_deg", ...}, ...},  # when params.csv has yaw_deg
     "by_light_angle": {"0-25": {...}, ...},                                  # when params.csv has light_dir
     "per_image": {IMAGE: mean_deg}, "per_image_split": {IMAGE: {"rotation_deg", ..., "yaw_deg", "light_angle_deg"}}}

NAME is the dataset folder's name.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from facenormals.atomic import check_output, write_text_atomic
from facenormals.metrics import SetMetrics
from facenormals.training.evaluation import BASELINES
from facenormals.zoo import resolve_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", action="append", required=True, metavar="DIR",
                        help="dataset folder of crops with images/, normals/, masks/ (repeatable)")
    parser.add_argument("--model", help="checkpoint (.safetensors) or ONNX file; default: the shipped model")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--baseline", action="append", choices=BASELINES, default=[],
                        help="also score a baseline on the same crops")
    parser.add_argument("--variants", nargs="+", metavar="NAME=CKPT",
                        help="score several checkpoints into one ablation table (paper Fig. 7)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--no-mirror", action="store_true",
                        help="one network pass per crop (default: averaged with the mirrored crop's, as the API does)")
    parser.add_argument("--input-size", type=int, default=None, metavar="S",
                        help="run the network on S×S crops (a multiple of 32; default: the model's own), the normals "
                             "resized back: errors stay at the dataset's resolution")
    parser.add_argument("--diagnose", action="store_true",
                        help="split each set's error into global rotation, low-frequency (σ = 4 px) and detail, by "
                             "border band / interior, |yaw| and light angle (from params.csv); per-image errors in the JSON")


def _row(name: str, m: SetMetrics, note: str = "") -> str:
    return (f"  {name:<24}{m.n_images:>7}  {m.mean_deg:6.2f} ± {m.std_deg:5.2f}   {m.pct_below_20:6.1f}"
            f" {m.pct_below_25:6.1f} {m.pct_below_30:6.1f}  {note}")


HEADER = f"  {'':<24}{'images':>7}  {'mean ± std (°)':<15}  {'<20°':>6} {'<25°':>6} {'<30°':>6}"


def _parse_variants(specs: list[str]) -> dict[str, Path]:
    out = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--variants expects NAME=CKPT, got {spec!r}")
        out[name] = resolve_model(path)
    return out


def same_crops(model_deg: dict[str, float], baseline_deg: dict[str, float]) -> dict[str, float]:
    """The model's per-image mean ± std over the crops a baseline scored (it skips crops without a face).

    >>> same_crops({"a": 10.0, "b": 30.0, "c": 14.0}, {"a": 11.0, "c": 12.0})
    {'n_images': 2, 'mean_deg': 12.0, 'std_deg': 2.0}
    """
    values = np.array([model_deg[name] for name in baseline_deg])
    return {"n_images": int(values.size), "mean_deg": float(values.mean()), "std_deg": float(values.std())}


def _note(text: str) -> None:
    print(f"facenormals eval: note: {text}", file=sys.stderr)


def _stored_points(folder: Path) -> Callable[[str, tuple[int, ...]], np.ndarray | None]:
    """A set's stored landmarks as ``SetDiagnosis.points_of`` (the split by face part; none stored: no split), each
    read once: the model's diagnosis and every baseline's ask for the same crops."""
    from functools import cache

    from facenormals.prior import stored_crop_points

    @cache
    def points_of(name: str, shape: tuple[int, ...]) -> np.ndarray | None:
        return stored_crop_points(folder, name, shape)

    return points_of


def main(args: argparse.Namespace) -> int:
    from facenormals.training.diagnose import SetDiagnosis, format_diagnosis, read_params
    from facenormals.training.evaluation import evaluate_baseline, evaluate_predictor, load_predictor, paired_samples

    if args.json:  # an unwritable --json fails now, not after scoring every set
        check_output(args.json, "--json", overwrite=True, inputs=[args.model, *args.data])
    sets = {Path(d).resolve().name: paired_samples(d) for d in args.data}
    folders = {Path(d).resolve().name: Path(d) for d in args.data}
    model_path = resolve_model(args.model)
    report: dict = {"model": str(model_path), "sets": {}, "baselines": {}}
    predictor = load_predictor(model_path, note=_note, mirror=not args.no_mirror, input_size=args.input_size)
    for name, samples in sets.items():
        started = time.perf_counter()
        diagnosis = SetDiagnosis(read_params(folders[name]), points_of=_stored_points(folders[name])) \
            if args.diagnose else None
        result = evaluate_predictor(predictor, samples, args.batch_size, label=name,
                                    on_image=diagnosis.add if diagnosis is not None else None)
        rate = len(samples) / (time.perf_counter() - started)
        report["sets"][name] = result.metrics.as_dict()
        print(f"{name}: {model_path.name} ({rate:.1f} images/s, loading included)")
        print(HEADER)
        print(_row("model", result.metrics))
        diagnoses = {}
        if diagnosis is not None:
            diagnoses["model"] = report.setdefault("diagnose", {})[name] = diagnosis.result()
        for baseline in args.baseline:
            base_diagnosis = SetDiagnosis(diagnosis.params, points_of=diagnosis.points_of) \
                if diagnosis is not None else None
            base = evaluate_baseline(samples, label=baseline,
                                     on_image=base_diagnosis.add if base_diagnosis is not None else None)
            entry = report["baselines"].setdefault(baseline, {"sets": {}, "no_face": {}, "coverage_pct": {}})
            entry["sets"][name] = base.metrics.as_dict()
            entry["no_face"][name] = base.no_face
            entry["coverage_pct"][name] = round(base.coverage_pct, 2)
            note = f"no face in {base.no_face}/{len(samples)}; mesh covers {base.coverage_pct:.1f}% of the mask"
            print(_row(baseline, base.metrics, note))
            if base.no_face:  # the baseline skipped crops: the model on the same crops is the fair comparison
                same = same_crops(result.per_image_deg, base.per_image_deg)
                entry.setdefault("model_on_same_crops", {})[name] = same
                print(f"  {'model, same crops':<24}{same['n_images']:>7}  {same['mean_deg']:6.2f} ± {same['std_deg']:5.2f}"
                      f"   (the {same['n_images']} crops {baseline} scored)")
            if base_diagnosis is not None:
                diagnoses[baseline] = entry.setdefault("diagnose", {})[name] = base_diagnosis.result()
        for who, found in diagnoses.items():
            print("\n".join(format_diagnosis(who, found)))
    if args.variants:
        variants = _parse_variants(args.variants)
        report["variants"] = {}
        print("\nablation (mean ± std °, paper Fig. 7 layout):")
        print(f"  {'variant':<24}" + "".join(f"{name:>22}" for name in sets))
        for label, path in variants.items():
            variant_predictor = load_predictor(path, note=_note, mirror=not args.no_mirror,
                                               input_size=args.input_size)
            entry = {"model": str(path), "sets": {}}
            for name, samples in sets.items():
                entry["sets"][name] = evaluate_predictor(variant_predictor, samples, args.batch_size, label).metrics.as_dict()
            report["variants"][label] = entry
            cells = "".join(f"{m['mean_deg']:>14.2f} ± {m['std_deg']:5.2f}" for m in entry["sets"].values())
            print(f"  {label:<24}{cells}")
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
