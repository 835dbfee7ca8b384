"""``facenormals export {onnx,trt,triton}``: one sub-verb per artefact.

    facenormals export onnx --model CKPT --out model.onnx [--size 256] [--fp16] [--overwrite] [--keep-failed]
    facenormals export trt --onnx model.onnx --out model.engine [--fp16|--int8] [--batch 1,4,8] [--overwrite]
    facenormals export triton --onnx model.onnx --repo models/ [--engine model.engine]
    facenormals export doctor [--json]      what will actually run here (providers, TensorRT, CUDA, wheels)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="format", required=True, metavar="{onnx,trt,triton,doctor}")

    onnx_p = sub.add_parser("onnx", help="ONNX of the image→normal path, with a parity check against torch")
    onnx_p.add_argument("--model", default=None, help="checkpoint (.safetensors) or shipped model name; "
                        "default: the shipped default model")
    onnx_p.add_argument("--out", required=True, type=Path, help="output .onnx file")
    onnx_p.add_argument("--size", type=int, default=None, help="input side in pixels (default: the model's)")
    onnx_p.add_argument("--fp16", action="store_true", help="fp16 weights/activations, fp32 I/O and head")
    onnx_p.add_argument("--parity-images", type=Path, default=None,
                        help="photos or a dataset folder for the parity check (default: scikit-image's astronaut)")
    onnx_p.add_argument("--no-parity", action="store_true", help="skip the parity check")
    onnx_p.add_argument("--report", type=Path, default=None, help="also write the parity report as JSON")
    onnx_p.add_argument("--overwrite", action="store_true", help="replace an existing --out / --report")
    onnx_p.add_argument("--keep-failed", action="store_true",
                        help="write --out even when it fails the parity check (for inspection; exit status 1)")

    trt_p = sub.add_parser("trt", help="TensorRT engine (needs TensorRT and an NVIDIA GPU)")
    trt_p.add_argument("--onnx", required=True, type=Path, help="fp32 ONNX; its Q/DQ INT8 twin for --int8")
    trt_p.add_argument("--out", required=True, type=Path, help="output .engine file (a .json sidecar is written)")
    precision = trt_p.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="FP16 (TRT 10: builder flag; TRT 11: FP16-cast ONNX)")
    precision.add_argument("--int8", action="store_true", help="INT8 from a Q/DQ ONNX (calibrate int8 first)")
    trt_p.add_argument("--batch", default="1,4,8", help="optimisation profile MIN,OPT,MAX batch (default 1,4,8)")
    trt_p.add_argument("--timing-cache", type=Path, default=None,
                       help="timing cache file to read and update (default: in the user cache folder)")
    trt_p.add_argument("--workspace-gb", type=float, default=2.0, help="builder workspace limit in GiB")
    trt_p.add_argument("--overwrite", action="store_true", help="replace an existing --out engine")

    triton_p = sub.add_parser("triton", help="Triton Inference Server model repository")
    triton_p.add_argument("--onnx", required=True, type=Path, help="ONNX model to serve")
    triton_p.add_argument("--repo", required=True, type=Path, help="model repository folder (created)")
    triton_p.add_argument("--name", default="facenormals", help="model name in the repository")
    triton_p.add_argument("--engine", type=Path, default=None,
                          help="also add a TensorRT plan model (NAME_trt) from this engine")
    triton_p.add_argument("--max-batch", type=int, default=8, help="max_batch_size and dynamic batching limit")
    triton_p.add_argument("--instances", type=int, default=1, help="model instances per GPU (or CPU)")
    triton_p.add_argument("--kind", choices=("gpu", "cpu"), default="gpu", help="instance group kind")
    triton_p.add_argument("--trt-ep", action="store_true",
                          help="onnxruntime model: accelerate with the TensorRT execution provider (serves the "
                               "fp16-cast graph, engine cache and batch profile set)")

    doctor_p = sub.add_parser("doctor", help="what will actually run here: ONNX Runtime wheels and providers, "
                              "TensorRT, CUDA, GPUs, known bad combinations")
    doctor_p.add_argument("--json", action="store_true", help="print the report as JSON")


def parse_batch(text: str) -> tuple[int, int, int]:
    """'MIN,OPT,MAX' → a valid optimisation profile (1 ≤ MIN ≤ OPT ≤ MAX)."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--batch must be MIN,OPT,MAX integers, got {text!r}") from None
    if len(values) != 3 or not 1 <= values[0] <= values[1] <= values[2]:
        raise ValueError(f"--batch must be MIN,OPT,MAX with 1 ≤ MIN ≤ OPT ≤ MAX, got {text!r}")
    return values  # type: ignore[return-value]


def _onnx(args: argparse.Namespace) -> int:
    from facenormals.atomic import check_output, write_text_atomic
    from facenormals.export.onnx_export import ParityFailed, export_onnx
    from facenormals.fileio import check_model_file
    from facenormals.zoo import resolve_model

    checkpoint = check_model_file(resolve_model(args.model), "--model")
    if checkpoint.suffix.lower() != ".safetensors":
        raise ValueError(f"--model {checkpoint}: export onnx needs a checkpoint (.safetensors), got a "
                         f"{checkpoint.suffix} file")
    # Both outputs are checked before the export: never an input, an existing file only with --overwrite.
    check_output(args.out, "--out", overwrite=args.overwrite, inputs=[checkpoint, args.parity_images])
    if args.report:
        check_output(args.report, "--report", overwrite=args.overwrite, inputs=[checkpoint, args.out])
    try:
        result = export_onnx(checkpoint, args.out, size=args.size, fp16=args.fp16, check_parity=not args.no_parity,
                             parity_images=args.parity_images, keep_failed=args.keep_failed)
        parity = result.parity
    except ParityFailed as err:
        result, parity = None, err.report
    if result is not None:
        print(result.summary())
    if parity is None:
        return 0
    print(parity.summary())
    if args.report:
        write_text_atomic(args.report, json.dumps(parity.as_dict(), indent=2) + "\n")
    if result is None:
        print(f"facenormals export onnx: {args.out} not written: it fails the parity check (pass --keep-failed to "
              "write it anyway for inspection)", file=sys.stderr)
        return 1
    if not parity.passed:
        print(f"facenormals export onnx: {args.out} fails the parity check; written only because of --keep-failed",
              file=sys.stderr)
        return 1
    return 0


def _trt(args: argparse.Namespace) -> int:
    from facenormals.atomic import check_output
    from facenormals.export.tensorrt_build import build_engine
    from facenormals.fileio import check_model_file

    check_model_file(args.onnx, "--onnx")
    check_output(args.out, "--out", overwrite=args.overwrite, inputs=[args.onnx])  # before a minutes-long build
    profile = parse_batch(args.batch)
    precision = "int8" if args.int8 else "fp16" if args.fp16 else "fp32"
    header = build_engine(args.onnx, args.out, precision=precision, batch=profile,
                          timing_cache=args.timing_cache, workspace_gb=args.workspace_gb)
    typing = "strongly typed" if header.strongly_typed else "weakly typed"
    print(f"wrote {args.out}: TensorRT {header.trt_version}, {precision} ({typing}), {header.gpu_name} "
          f"(sm_{header.compute_capability.replace('.', '')}), batch {profile}")
    return 0


def _triton(args: argparse.Namespace) -> int:
    from facenormals.export.triton import write_repository
    from facenormals.fileio import check_model_file

    check_model_file(args.onnx, "--onnx")  # a foreign graph would be served as if it gave normals
    written = write_repository(args.onnx, args.repo, name=args.name, engine=args.engine, max_batch=args.max_batch,
                               instances=args.instances, kind=args.kind, trt_ep=args.trt_ep)
    for path in written:
        print(f"wrote {path}")
    if args.engine is not None:
        from facenormals.runtime.engine_header import read_header

        header = read_header(args.engine)
        # A plan deserialises only under the exact TensorRT version that built it (Triton's tensorrt backend too).
        print(f"note: {args.name}_trt needs a Triton release built with TensorRT {header.trt_version} on compute "
              f"capability {header.compute_capability}; otherwise serve {args.name} (onnxruntime) or rebuild the plan "
              "inside that Triton container")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from facenormals.runtime.machine import system_report

    report = system_report()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for key in ("onnxruntime", "onnxruntime_wheels", "providers", "tensorrt", "torch", "torch_cuda", "gpus", "cpu"):
        print(f"{key:>18}: {report.get(key)}")
    for problem in report["problems"]:
        print(f"problem: {problem}")
    return 1 if report["problems"] else 0


def main(args: argparse.Namespace) -> int:
    handlers = {"onnx": _onnx, "trt": _trt, "triton": _triton, "doctor": _doctor}
    return handlers[args.format](args)
