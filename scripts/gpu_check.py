"""One prepared check of every CUDA/TensorRT path (issue 19), driven by ``scripts/gpu_check.sh``.

    python scripts/gpu_check.py OUT_DIR [--dry-run] [--budget-s 540]

Each step runs in its own subprocess under its own timeout, so a hang or a crash in one (a CUDA driver
fault, a TensorRT build that never ends) is recorded and the next step still runs. Everything lands in
``OUT_DIR/gpu_report.json`` (rewritten after every step, so a killed run still leaves its figures) and a
summary is printed. ``--dry-run``, or a machine without CUDA, runs the environment step only and records
every other step as "skipped: no CUDA" with its reason.

Parity is measured against ONNX Runtime CPU fp32 on real face crops (MediaPipe + face_crop on scikit-image's
astronaut and the shared photos when present), over the facial mask: max and mean angle, NaN count.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = ("fast", "fast-prior")  # the two shipped checkpoints (facenormals/weights)
PRECISIONS = ("fp32", "fp16", "int8")
BATCHES = (1, 4, 8)
# (name, seconds): the sum stays under the 10-minute budget with room for the environment step
STEPS = (
    ("exports", 120),
    ("tensorrt", 180),
    ("ort_gpu", 120),
    ("torch_cuda", 60),
    ("realtime", 60),
    ("pytest_gpu", 90),
)


# ---------------------------------------------------------------------------------------------- helpers


def _cuda_reason() -> str | None:
    """Why the GPU steps cannot run here (None: they can)."""
    try:
        import torch
    except ImportError as err:
        return f"no torch ({err})"
    if not torch.cuda.is_available():
        return f"no CUDA (torch {torch.__version__}, torch.version.cuda={torch.version.cuda})"
    return None


def _crops(size: int, in_chans: int, prior_source: str | None) -> tuple[object, object]:
    from facenormals.export.parity import load_face_crops
    from facenormals.prior import network_inputs

    shared = REPO.parent / "shared" / "data" / "photos"
    faces = load_face_crops(shared if shared.is_dir() else None, size=size, limit=8)
    return network_inputs(faces.images, in_chans, prior_source), faces.masks


def _parity(reference: object, got: object, masks: object) -> dict[str, float]:
    import numpy as np

    from facenormals.export.parity import angular_deviation_deg

    nan = int(np.isnan(got).sum())
    deviation = angular_deviation_deg(reference, np.nan_to_num(got), masks)
    return {"max_deg": float(deviation.max()), "mean_deg": float(deviation.mean()), "nan": nan}


def _latency(backend: object, in_chans: int, size: int, runs: int = 20) -> dict[str, float]:
    """Median ms per call at each batch within the backend's limit (wall clock: this is the benchmark)."""
    import numpy as np

    from facenormals.timing import median_ms

    out = {}
    limit = getattr(backend, "max_batch", None) or max(BATCHES)
    for n in BATCHES:
        if n > limit:
            continue
        batch = np.random.default_rng(0).random((n, in_chans, size, size), dtype=np.float32)
        out[f"batch{n}_ms"] = median_ms(lambda b=batch: backend(b), runs)
    return out


def _guard(results: dict[str, object], key: str, fn: object) -> None:
    """Run one sub-check; an exception becomes its recorded error, not the end of the step."""
    try:
        results[key] = fn()
    except Exception as err:  # every failure is a finding to record
        results[key] = {"error": f"{type(err).__name__}: {err}"[:2000]}


# ---------------------------------------------------------------------------------------------- steps


def step_environment(out: Path) -> dict[str, object]:
    from facenormals.runtime.machine import system_report

    report = system_report()
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        report["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as err:
        report["nvidia_smi"] = f"unavailable: {err}"
    return report


def step_exports(out: Path) -> dict[str, object]:
    from facenormals.export.int8 import quantize_int8
    from facenormals.export.onnx_export import export_onnx
    from facenormals.zoo import resolve_model

    results: dict[str, object] = {}
    for model in MODELS:
        checkpoint = resolve_model(model)
        for precision in ("fp32", "fp16"):
            def export(checkpoint: Path = checkpoint, precision: str = precision, model: str = model) -> object:
                result = export_onnx(checkpoint, out / f"{model}.{precision}.onnx", fp16=precision == "fp16")
                return {"path": str(result.path), "parity": result.parity.as_dict() if result.parity else None}
            _guard(results, f"{model}.{precision}", export)

        def int8(model: str = model) -> object:
            from facenormals.export.prepare import create_backend

            fp32 = out / f"{model}.fp32.onnx"
            backend = create_backend("ort-cpu", fp32)
            images, _ = _crops(backend.input_size, backend.in_chans, backend.prior_source)
            path = quantize_int8(fp32, out / f"{model}.int8.onnx", images, target="trt")
            return {"path": str(path)}
        _guard(results, f"{model}.int8", int8)
    return results


@dataclass(frozen=True)
class Reference:
    """ORT-CPU fp32 normals of the real face crops: what every GPU path is compared with."""

    in_chans: int
    size: int
    inputs: object
    masks: object
    expected: object


def _reference(fp32: Path) -> Reference:
    from facenormals.export.prepare import create_backend

    cpu = create_backend("ort-cpu", fp32)
    inputs, masks = _crops(cpu.input_size, cpu.in_chans, cpu.prior_source)
    return Reference(cpu.in_chans, cpu.input_size, inputs, masks, cpu(inputs))


def _measure(backend: object, ref: Reference) -> dict[str, float]:
    return {**_parity(ref.expected, backend(ref.inputs), ref.masks), **_latency(backend, ref.in_chans, ref.size)}


def _trt_engine(out: Path, model: str, precision: str, ref: Reference) -> dict[str, object]:
    from facenormals.export.prepare import create_backend
    from facenormals.export.tensorrt_build import build_engine

    source = out / f"{model}.{'int8' if precision == 'int8' else 'fp32'}.onnx"
    engine = out / f"{model}.{precision}.engine"
    start = time.perf_counter()
    header = build_engine(source, engine, precision=precision, batch=(1, 4, 8))
    built_s = time.perf_counter() - start
    backend = create_backend("tensorrt", engine)
    return {"build_s": built_s, "trt": header.trt_version, "strongly_typed": header.strongly_typed,
            **_measure(backend, ref)}


def step_tensorrt(out: Path) -> dict[str, object]:
    results: dict[str, object] = {}
    for model in MODELS:
        ref = _reference(out / f"{model}.fp32.onnx")
        for precision in PRECISIONS:
            _guard(results, f"{model}.{precision}", partial(_trt_engine, out, model, precision, ref))
    return results


def _ort_gpu(out: Path, model: str, name: str, precision: str, ref: Reference) -> dict[str, object]:
    from facenormals.export.prepare import create_backend
    from facenormals.runtime.backends import warm_up

    source = out / f"{model}.{'int8' if precision == 'int8' else 'fp32'}.onnx"
    start = time.perf_counter()
    backend = create_backend(name, source, fp16=precision == "fp16", strict=True, cache=out / "trt-ep-cache")
    providers = warm_up(backend, batch_sizes=(1, 8))  # the TensorRT EP builds its engine here
    return {"session_s": time.perf_counter() - start, "providers_after_warmup": providers,
            "precision": backend.precision, **_measure(backend, ref)}


def _stale_cache(out: Path) -> dict[str, object]:
    """Same file name, other weights: another engine folder and other outputs (issue 19 (3))."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from facenormals.export.prepare import create_backend
    from facenormals.runtime.backends import engine_cache_key

    path, cache = out / "stale.onnx", out / "trt-ep-cache"
    path.write_bytes((out / "fast.fp32.onnx").read_bytes())
    first = create_backend("ort-trt", path, strict=True, cache=cache)
    probe = np.ones((1, first.in_chans, first.input_size, first.input_size), np.float32)
    before, key_before = first(probe), engine_cache_key(path, "fp32")
    model = onnx.load(str(path))
    weight = next(t for t in model.graph.initializer if len(t.dims) == 4)
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 0.5, weight.name))
    onnx.save(model, str(path))
    after = create_backend("ort-trt", path, strict=True, cache=cache)(probe)
    return {"new_cache_key": engine_cache_key(path, "fp32") != key_before,
            "outputs_changed": bool(np.abs(after - before).max() > 1e-4)}


def step_ort_gpu(out: Path) -> dict[str, object]:
    results: dict[str, object] = {}
    for model in MODELS:
        ref = _reference(out / f"{model}.fp32.onnx")
        for name, precision in (("ort-cuda", "fp32"), ("ort-cuda", "fp16"), ("ort-trt", "fp32"), ("ort-trt", "fp16"),
                                ("ort-trt", "int8")):
            _guard(results, f"{model}.{name}.{precision}", partial(_ort_gpu, out, model, name, precision, ref))
    _guard(results, "stale_cache", partial(_stale_cache, out))
    return results


def step_torch_cuda(out: Path) -> dict[str, object]:
    """torch CUDA fp16 (autocast, as the torch backend) replayed through CUDA graphs, per shipped model."""
    import numpy as np
    import torch

    from facenormals.checkpoint import load_image_to_normal
    from facenormals.export.prepare import create_backend
    from facenormals.zoo import resolve_model

    results: dict[str, object] = {}
    for model in MODELS:
        def run(model: str = model) -> object:
            module = load_image_to_normal(resolve_model(model), map_location="cuda").eval()
            cpu = create_backend("ort-cpu", out / f"{model}.fp32.onnx")
            inputs, masks = _crops(cpu.input_size, cpu.in_chans, cpu.prior_source)
            row: dict[str, object] = {}
            for n in BATCHES:
                static = torch.zeros((n, cpu.in_chans, cpu.input_size, cpu.input_size), device="cuda")
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.inference_mode(), torch.cuda.stream(side), torch.autocast("cuda", torch.float16):
                    for _ in range(3):
                        module(static)
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.inference_mode(), torch.cuda.graph(graph), torch.autocast("cuda", torch.float16):
                    result = module(static)
                times = []
                for _ in range(20):
                    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    begin.record()
                    graph.replay()
                    end.record()
                    end.synchronize()
                    times.append(begin.elapsed_time(end))
                row[f"batch{n}_ms"] = float(np.median(times))
                if n == max(BATCHES):
                    got = []
                    for i in range(0, len(inputs), n):
                        chunk = np.zeros(tuple(static.shape), np.float32)
                        part = inputs[i:i + n]
                        chunk[:len(part)] = part
                        static.copy_(torch.from_numpy(chunk))
                        graph.replay()
                        got.append(result.float().cpu().numpy()[:len(part)])
                    row.update(_parity(cpu(inputs), np.concatenate(got), masks))
            return row
        _guard(results, model, run)
    return results


def step_realtime(out: Path) -> dict[str, object]:
    results: dict[str, object] = {}
    for backend in ("tensorrt", "ort-trt", "ort-cuda", "torch"):
        model = ["--model", str(out / "fast-prior.fp16.engine")] if backend == "tensorrt" else []
        target = out / f"realtime-{backend}.json"
        cmd = [sys.executable, "-m", "facenormals.cli", "bench", "--backend", backend, "--frames", "120", "--warmup",
               "20", "--pace", "max", "--json", str(target), *model]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=14)
            results[backend] = (json.loads(target.read_text()) if target.is_file()
                                else {"error": proc.stderr[-1500:], "returncode": proc.returncode})
        except subprocess.TimeoutExpired:
            results[backend] = {"error": "timed out after 14 s"}
    return results


def step_pytest_gpu(out: Path) -> dict[str, object]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu or trt", "-p", "no:cacheprovider",
           "--junitxml", str(out / "pytest_gpu.xml"), "tests"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=85, cwd=REPO)
    return {"returncode": proc.returncode, "tail": proc.stdout[-3000:]}


# ---------------------------------------------------------------------------------------------- driver


def run_step(name: str, out: Path) -> None:
    """Child process: run one step, write its JSON."""
    result = globals()[f"step_{name}"](out)
    (out / f"step_{name}.json").write_text(json.dumps(result, indent=2, default=str))


def _write(report: dict[str, object], out: Path) -> None:
    (out / "gpu_report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")


def _child(name: str, out: Path, timeout: int) -> dict[str, object]:
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, __file__, str(out), "--step", name], capture_output=True, text=True,
                              timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"status": "error", "error": f"timed out after {timeout} s", "seconds": timeout}
    seconds = round(time.perf_counter() - start, 1)
    path = out / f"step_{name}.json"
    if proc.returncode != 0 or not path.is_file():
        return {"status": "error", "error": proc.stderr[-3000:] or f"exit {proc.returncode}", "seconds": seconds}
    return {"status": "ok", "seconds": seconds, "result": json.loads(path.read_text())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--dry-run", action="store_true", help="environment only; every GPU step recorded as skipped")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--budget-s", type=int, default=570, help="stop starting steps after this many seconds")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("FACENORMALS_CACHE", str(args.out.resolve() / "cache"))  # children inherit it
    if args.step:
        run_step(args.step, args.out)
        return 0
    began = time.perf_counter()
    report: dict[str, object] = {"started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                 "dry_run": args.dry_run, "steps": {}}
    report["steps"]["environment"] = _child("environment", args.out, 60)
    _write(report, args.out)
    reason = _cuda_reason()
    if args.dry_run:
        reason = f"--dry-run; {reason or 'CUDA present but not used'}"
    for name, timeout in STEPS:
        left = args.budget_s - (time.perf_counter() - began)
        if reason is not None:
            report["steps"][name] = {"status": "skipped: no CUDA", "reason": reason}
        elif left < 10:
            report["steps"][name] = {"status": "skipped: out of time budget"}
        else:
            report["steps"][name] = _child(name, args.out, int(min(timeout, left)))
        _write(report, args.out)
    report["seconds"] = round(time.perf_counter() - began, 1)
    _write(report, args.out)
    for name, step in report["steps"].items():
        print(f"{name:>12}: {step['status']}" + (f" ({step['reason']})" if "reason" in step else "")
              + (f" ({step['seconds']} s)" if "seconds" in step else "")
              + (f" — {str(step['error']).strip().splitlines()[-1][:160]}" if step.get("error") else ""))
    print(f"report: {args.out / 'gpu_report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
