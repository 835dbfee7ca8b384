"""The README's realtime figures: the whole loop (sample → MediaPipe → crop → network → paste → render), per backend.

    python -m facenormals.benchmarks.realtime --out-dir benchmarks/results/realtime [--model CKPT] [--frames 300]

For the ``fast`` model at 256² on the embedded 640×480 ``sample`` (one face): ONNX Runtime CPU fp32, ONNX
Runtime CPU INT8 (Q/DQ, uint8 activations, calibrated on face crops of the sample) and torch fp32, each
replayed at the sample's 30 FPS like a camera (``realtime``: latest-frame queues, drops counted) and as fast
as possible (``max``: every frame, the loop's capacity). Weights are random unless ``--model`` is given
(speed does not depend on them). Writes one ``facenormals bench`` JSON per run, a plot of the INT8 realtime
run, ``summary.md``, and each stage timed alone (median and minimum: the minimum estimates an unloaded
machine); the load average before and after each run is in the JSON (shared machines vary).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from facenormals.atomic import write_text_atomic

CALIBRATION_FRAMES = 24


def sample_crops(size: int, count: int = CALIBRATION_FRAMES) -> np.ndarray:
    """Face crops (N×3×S×S, [0, 1]) from frames of the sample clip, spread over its motion."""
    from facenormals.faces import create_detector
    from facenormals.geometry import face_crop
    from facenormals.realtime.sources.sample import render_sample_rgb

    detector = create_detector(1, smooth=False)
    crops = []
    try:
        for i in range(count):
            rgb = render_sample_rgb(i * 6)
            faces = detector.detect(rgb, i * 200_000_000)
            if faces:
                crops.append(face_crop(rgb, faces[0].landmarks, size=size).to_tensor_array())
    finally:
        detector.close()
    if not crops:
        raise RuntimeError("no face found in the sample frames: cannot calibrate INT8")
    return np.stack(crops)


def prepare_models(checkpoint: Path | None, folder: Path, int8: bool) -> dict[str, Path]:
    """Checkpoint, fp32 ONNX and (optionally) INT8 ONNX of the model to benchmark."""
    from facenormals.export.onnx_export import export_onnx

    if checkpoint is None:
        import torch

        from facenormals.checkpoint import save_checkpoint
        from facenormals.model import create_model

        torch.manual_seed(0)
        checkpoint = folder / "fast-random.safetensors"
        save_checkpoint(create_model("fast"), checkpoint, provenance={"benchmark": "random weights"},
                        inference_only=True)
    models = {"checkpoint": checkpoint, "fp32": folder / "fp32.onnx"}
    export_onnx(checkpoint, models["fp32"], check_parity=False)
    if int8:
        from facenormals.export.int8 import quantize_int8
        from facenormals.prior import network_inputs, source_of
        from facenormals.runtime.onnx_info import onnx_model_info

        in_chans, size, meta = onnx_model_info(models["fp32"])
        crops = network_inputs(sample_crops(size), in_chans, source_of(in_chans, meta.get("prior_source")))
        models["int8"] = quantize_int8(models["fp32"], folder / "int8.onnx", crops, "minmax",
                                       source_label="from the embedded sample")
    return models


def component_times(models: dict[str, Path], frames: int = 60) -> dict[str, dict[str, float]]:
    """Each stage alone, one thread, on the same sample frames: median and minimum ms.

    On a shared machine the minimum over many frames is the best estimate of the unloaded cost; the pipeline
    runs above are what a user gets under the load of the moment.
    """
    import time

    from facenormals.engine import FrameEngine
    from facenormals.export.prepare import create_backend
    from facenormals.faces import create_detector
    from facenormals.frame import Frame
    from facenormals.realtime.pipeline import LoopStats
    from facenormals.realtime.render import FrameRenderer, RenderState
    from facenormals.realtime.sources.sample import render_sample_rgb
    from facenormals.runtime.backends import warm_up

    backends = {name: create_backend("ort-cpu", models[name]) for name in ("int8", "fp32") if name in models}
    backends["torch"] = create_backend("torch", models["checkpoint"])
    for backend in backends.values():
        warm_up(backend, runs=3)
    detector = create_detector(1)
    first = next(iter(backends.values()))
    engine = FrameEngine(first, detector)  # the realtime loop's stages, run one after another
    renderer = FrameRenderer(RenderState(view="normals"), "ort-cpu")
    times: dict[str, list[float]] = {}

    def timed(name: str, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        times.setdefault(name, []).append((time.perf_counter() - t0) * 1000.0)
        return out

    inputs = []
    try:
        for i in range(frames):
            frame = Frame(i, i * 33_333_333, render_sample_rgb(i))
            faces, batch = engine.detect_and_crop(frame)
            inputs.append(batch.inputs.copy())
            result = engine.paste(engine.infer(frame, faces, batch))
            for stage in ("detect", "crop", "paste"):
                times.setdefault(stage, []).append(frame.timings[stage])
            timed("render", renderer, result, LoopStats())
    finally:
        detector.close()
    # Backends one after another, not interleaved: ONNX Runtime's threads keep spinning for a while after a
    # run and would slow whatever runs right after them.
    for name, backend in backends.items():
        for batch_inputs in inputs:
            timed(f"infer {name}", backend, batch_inputs)
    return {name: {"p50": round(float(np.median(v)), 2), "min": round(float(np.min(v)), 2)} for name, v in times.items()}


def markdown(results: dict[str, dict]) -> str:
    lines = ["| run | FPS | end-to-end p50 / p95 / p99 ms | infer p50 / p95 ms | all but infer p50 / p95 ms | "
             "dropped | CPU ms / frame | jitter raw → smoothed ‰ | load |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lat, infer, over = r["latency_ms"], r["stages"]["infer"], r["stages"]["overhead"]
        machine = r["machine"]
        lines.append(f"| {name} | {r['fps']:.1f} | {lat['p50']:.0f} / {lat['p95']:.0f} / {lat['p99']:.0f} | "
                     f"{infer['p50']:.1f} / {infer['p95']:.1f} | {over['p50']:.1f} / {over['p95']:.1f} | "
                     f"{r['dropped']} / {r['frames_captured']} | {r['cpu_ms_per_frame']:.1f} | "
                     f"{r['jitter']['raw']:.2f} → {r['jitter']['smoothed']:.2f} | "
                     f"{machine['load_avg_1m_before']} → {machine['load_avg_1m']} |")
    first = next(iter(results.values()))["machine"]
    lines.append("")
    lines.append(f"{first['cpu']} ×{first['cpus_usable']}, {first['date_utc']}; onnxruntime {first['onnxruntime']}, "
                 f"torch {first['torch']}, mediapipe {first['mediapipe']}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results/realtime"))
    parser.add_argument("--model", type=Path, help="checkpoint to benchmark (default: random-weight fast model)")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--runs", default="int8,fp32,torch", help="comma-separated: int8, fp32, torch")
    parser.add_argument("--paces", default="realtime,max", help="comma-separated: realtime, max")
    parser.add_argument("--threads", type=int, help="inference threads (default: physical cores)")
    parser.add_argument("--no-components", dest="components", action="store_false",
                        help="skip timing each stage alone (median and minimum)")
    args = parser.parse_args(argv)
    from facenormals.realtime.bench import BenchConfig, plot_result, run_benchmark
    from facenormals.realtime.bench_cli import format_summary

    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    paces = [p.strip() for p in args.paces.split(",") if p.strip()]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="facenormals-rt-bench-") as tmp:
        models = prepare_models(args.model, Path(tmp), int8="int8" in runs)
        backends = {"int8": ("ort-cpu", models.get("int8")), "fp32": ("ort-cpu", models["fp32"]),
                    "torch": ("torch", models["checkpoint"])}
        for run in runs:
            backend, model = backends[run]
            for pace in paces:
                name = f"{run}-{pace}"
                cfg = BenchConfig(source="sample", backend=backend, model=str(model), frames=args.frames,
                                  warmup=args.warmup, pace=pace, threads=args.threads)
                result = run_benchmark(cfg)
                result["model"] = f"{run} ({'given checkpoint' if args.model else 'fast, random weights'})"
                results[name] = result
                write_text_atomic(args.out_dir / f"{name}.json", json.dumps(result, indent=2))
                if name == "int8-realtime" or (len(results) == 1 and "int8" not in runs):
                    plot_result(result, args.out_dir / f"{name}.png")
                print(f"== {name}\n{format_summary(result)}", flush=True)
        components = component_times(models) if args.components else {}
    summary = markdown(results)
    if components:
        write_text_atomic(args.out_dir / "components.json", json.dumps(components, indent=2))
        summary += "\n| stage alone | p50 ms | min ms |\n|---|---|---|\n" + "".join(
            f"| {name} | {v['p50']:.2f} | {v['min']:.2f} |\n" for name, v in components.items())
    write_text_atomic(args.out_dir / "summary.md", summary)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
