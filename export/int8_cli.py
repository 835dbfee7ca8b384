"""``facenormals calibrate int8``: Q/DQ INT8 model of an fp32 export, calibrated on real face crops.

    facenormals calibrate int8 --onnx fast.onnx --images data/real/ --out fast_int8.onnx \\
        [--method minmax|entropy|percentile|compare] [--eval data/test/] [--report int8.json]

``--images``: a dataset folder (its ``images/`` are crops already), that ``images/`` folder itself, or a folder
of photos (faces found with MediaPipe and cropped like the rest of the project). ``--eval``: a dataset folder;
with ground-truth normals the report gives the angular-error increase against fp32, otherwise the deviation
from fp32. ``compare`` calibrates with every method and keeps the one closest to fp32.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from facenormals.export.int8 import METHODS

GOAL_DEG = 1.0  # the goal: at most 1° mean increase over fp32


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--onnx", required=True, type=Path, help="fp32 ONNX from 'facenormals export onnx'")
    parser.add_argument("--images", required=True, type=Path, help="calibration faces: dataset folder or photos")
    parser.add_argument("--out", required=True, type=Path, help="output Q/DQ INT8 .onnx")
    parser.add_argument("--method", choices=(*METHODS, "compare"), default="compare",
                        help="calibration method; 'compare' tries all and keeps the closest to fp32 (default)")
    parser.add_argument("--target", choices=("cpu", "trt"), default="cpu",
                        help="cpu: uint8 activations (fastest on ONNX Runtime CPU); trt: int8 symmetric "
                             "activations, the form TensorRT INT8 needs (default cpu)")
    parser.add_argument("--eval", type=Path, default=None,
                        help="dataset folder to score on (default: the calibration crops, deviation only)")
    parser.add_argument("--limit", type=int, default=128, help="at most this many calibration crops (default 128)")
    parser.add_argument("--eval-limit", type=int, default=64, help="at most this many evaluation samples")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per model for the CPU speed-up")
    parser.add_argument("--report", type=Path, default=None, help="also write the report as JSON")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out (never the --onnx input)")


def _calibration_source(images: Path) -> Path:
    """A dataset's ``images/`` folder stands for the dataset (its crops and masks), not for a photo folder."""
    if images.name == "images" and (images.parent / "masks").is_dir():
        return images.parent
    return images


def main(args: argparse.Namespace) -> int:
    from facenormals.atomic import check_output, write_text_atomic
    from facenormals.export.int8 import compare_accuracy, cpu_speed, load_eval_set, quantize_int8
    from facenormals.export.parity import load_face_crops
    from facenormals.fileio import check_model_file, file_sha256
    from facenormals.prior import network_inputs, source_of
    from facenormals.runtime.backends import OrtBackend
    from facenormals.runtime.onnx_info import onnx_model_info

    check_model_file(args.onnx, "--onnx")  # the one model-file check: a text file or a foreign graph stops here
    if args.onnx.suffix.lower() != ".onnx":
        raise ValueError(f"--onnx {args.onnx}: calibration quantises an ONNX export; export the checkpoint first "
                         "('facenormals export onnx')")
    if args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    # Outputs are checked before minutes of calibration: never the input, an existing file only with --overwrite.
    check_output(args.out, "--out", overwrite=args.overwrite, inputs=[args.onnx, args.images])
    if args.report:
        check_output(args.report, "--report", overwrite=args.overwrite, inputs=[args.onnx, args.out])
    in_chans, size, meta = onnx_model_info(args.onnx)
    prior = source_of(in_chans, meta.get("prior_source"))
    source = _calibration_source(args.images)
    crops = load_face_crops(source, size=size, limit=args.limit)
    calibration_inputs = network_inputs(crops.images, in_chans, prior)  # + the coarse face for prior models
    print(f"calibrating on {len(crops)} face crops from {source} ({size}², {in_chans} channels)")
    if args.eval:
        evaluation = load_eval_set(args.eval, size, limit=args.eval_limit)
        eval_label = f"{args.eval} ({len(evaluation.images)} samples)"
        images, masks, targets = network_inputs(evaluation.images, in_chans, prior), evaluation.masks, evaluation.targets
    else:
        eval_label = "the calibration crops (no --eval: deviation from fp32 only)"
        images, masks, targets = calibration_inputs, crops.masks, None

    fp32 = OrtBackend("ort-cpu", args.onnx, strict=True)
    methods = list(METHODS) if args.method == "compare" else [args.method]
    # Ranges are cached next to the output, keyed by model and crops: a rerun or another method skips calibrating.
    cache_dir = args.out.parent / f".{args.out.name}.calib"
    key = f"{file_sha256(args.onnx)[:12]}-{len(crops)}"
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="facenormals-int8-", dir=args.out.parent if args.out.parent.is_dir()
                                     else None) as tmp:
        failed: dict[str, str] = {}
        for method in methods:
            candidate = Path(tmp) / f"{method}.onnx"
            try:
                quantize_int8(args.onnx, candidate, calibration_inputs, method, source_label=f"from {source.name}",
                              cache=cache_dir / f"{method}-{key}.json", target=args.target)
            except ValueError as err:
                if len(methods) == 1:
                    raise
                # e.g. the histogram calibrators on a near-constant tensor: the other methods still compete
                failed[method] = str(err)
                print(f"  {method:<10} failed: {err}", file=sys.stderr)
                continue
            accuracy = compare_accuracy(fp32, OrtBackend("ort-cpu", candidate, strict=True), images, masks, targets)
            results[method] = accuracy.as_dict()
            print(_line(method, accuracy.as_dict()))
        if not results:
            raise ValueError(f"{args.onnx}: every calibration method failed: {failed}")
        best = min(results, key=lambda m: (results[m]["nonfinite_pixels"], results[m]["mean_deviation_deg"]))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(Path(tmp) / f"{best}.onnx"), args.out)
    speed = cpu_speed(fp32, OrtBackend("ort-cpu", args.out, strict=True), in_chans, size, batch=1, runs=args.runs)
    chosen = results[best]
    headline = chosen["error_increase_deg"] if chosen["error_increase_deg"] is not None else chosen["mean_deviation_deg"]
    print(f"wrote {args.out} ({best}); scored on {eval_label}")
    print(f"CPU batch 1: fp32 {speed.fp32_ms:.1f} ms, int8 {speed.int8_ms:.1f} ms, speed-up {speed.speedup:.2f}× "
          "(medians; shared machines inflate both)")
    if headline > GOAL_DEG or chosen["nonfinite_pixels"]:
        print(f"warning: {best} INT8 is {headline:.2f}° from fp32 (goal ≤ {GOAL_DEG}°) with "
              f"{chosen['nonfinite_pixels']} non-finite pixels", file=sys.stderr)
    if args.report:
        report = {"onnx": str(args.onnx), "out": str(args.out), "chosen": best, "calibration_crops": len(crops),
                  "calibration_source": str(source), "evaluated_on": eval_label, "methods": results,
                  "failed_methods": failed,
                  "cpu": {"batch": 1, "fp32_ms": speed.fp32_ms, "int8_ms": speed.int8_ms, "speedup": speed.speedup}}
        write_text_atomic(args.report, json.dumps(report, indent=2) + "\n")
    return 0


def _line(method: str, result: dict[str, object]) -> str:
    text = (f"  {method:<10} deviation from fp32: mean {result['mean_deviation_deg']:.3f}°, "
            f"p99 {result['p99_deviation_deg']:.3f}°, non-finite pixels {result['nonfinite_pixels']}")
    if result["error_increase_deg"] is not None:
        text += (f"; error vs ground truth fp32 {result['fp32_error_deg']:.2f}° → int8 "
                 f"{result['int8_error_deg']:.2f}° ({result['error_increase_deg']:+.3f}°)")
    return text
