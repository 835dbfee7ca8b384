"""Inference speed of the image→normal path: torch vs ONNX Runtime fp32 vs INT8 on CPU, GPU paths where present.

    python -m facenormals.benchmarks.inference --out bench.json --markdown bench.md [--archs fast,paper]

For each width (``fast``, ``paper``) at 256² and batch 1 and 4: median latency and throughput of
* torch eager fp32 (CPU threads = physical cores),
* ONNX Runtime CPU fp32 (the exported ONNX) and INT8 (Q/DQ, uint8 activations, calibrated on face crops),
each against its physical floor on this CPU class (shared/MEASUREMENTS.md: ≈ 10 ms per GMAC fp32, ≈ 3 ms per
GMAC int8, per image); and where a GPU exists, torch CUDA fp16 with CUDA graphs and a TensorRT fp16 engine.
Weights are random (speed does not depend on them) unless ``--model`` gives a checkpoint per width.
Runs of different configurations are interleaved round by round, so load changes on a shared machine hit
all of them alike; the load average is recorded with the results.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from facenormals.timing import median_ms

FP32_MS_PER_GMAC = 10.0  # ≈ 200 GFLOP/s: what ORT fp32 reaches on the 2 Zen 4 cores (MEASUREMENTS.md)
INT8_MS_PER_GMAC = 3.0  # ≈ 670 GOP/s with VNNI


@dataclass
class Row:
    arch: str
    gmac: float  # per image
    engine: str
    device: str
    batch: int
    median_ms: float
    p90_ms: float
    min_ms: float  # best run: the closest a shared machine gets to an idle one
    floor_ms: float | None
    cpu1_ms: float | None = None  # CPU time of one call on a single-thread session (load-insensitive)
    img_per_s: float = 0.0
    x_floor: float | None = None
    x_floor_best: float | None = None
    idle_estimate_ms: float | None = None  # cpu1_ms / physical cores: the idle multi-core latency if it scaled
    x_floor_idle_estimate: float | None = None

    def finish(self, cores: int = 1) -> Row:
        self.img_per_s = 1000.0 * self.batch / self.median_ms
        self.x_floor = self.median_ms / self.floor_ms if self.floor_ms else None
        self.x_floor_best = self.min_ms / self.floor_ms if self.floor_ms else None
        if self.cpu1_ms is not None:
            self.idle_estimate_ms = self.cpu1_ms / cores
            self.x_floor_idle_estimate = self.idle_estimate_ms / self.floor_ms if self.floor_ms else None
        return self


def _checkpoint(arch: str, size: int, folder: Path, given: dict[str, Path]) -> Path:
    if arch in given:
        return given[arch]
    import torch

    from facenormals.checkpoint import save_checkpoint
    from facenormals.model import create_model

    torch.manual_seed(0)
    path = folder / f"{arch}.safetensors"
    save_checkpoint(create_model(arch, "full", input_size=size), path, inference_only=True)
    return path


def _gmac(checkpoint: Path, size: int) -> float:
    import torch

    from facenormals.checkpoint import load_image_to_normal
    from facenormals.complexity import count_gmac

    module = load_image_to_normal(checkpoint)
    x = torch.rand(1, module.cfg.in_chans, size, size)
    return count_gmac(lambda: module(x))


def _cpu_models(checkpoint: Path, size: int, folder: Path, calibration: Path | None) -> tuple[Path, Path]:
    """The fp32 ONNX and its INT8 Q/DQ twin (uint8 activations, MinMax on face crops)."""
    from facenormals.export.int8 import quantize_int8
    from facenormals.export.onnx_export import export_onnx
    from facenormals.export.parity import load_face_crops

    fp32_onnx = folder / f"{checkpoint.stem}.onnx"
    export_onnx(checkpoint, fp32_onnx, size=size, check_parity=False)
    crops = load_face_crops(calibration, size=size, limit=32)
    int8_onnx = quantize_int8(fp32_onnx, folder / f"{checkpoint.stem}_int8.onnx", crops.images, "minmax")
    return fp32_onnx, int8_onnx


def _cpu_candidates(checkpoint: Path, fp32_onnx: Path, int8_onnx: Path, threads: int) -> dict[str, Callable]:
    from facenormals.export.prepare import create_backend

    return {
        "torch eager fp32": create_backend("torch", checkpoint, device="cpu", threads=threads),
        "ORT fp32": create_backend("ort-cpu", fp32_onnx, strict=True, threads=threads),
        "ORT int8 (Q/DQ)": create_backend("ort-cpu", int8_onnx, strict=True, threads=threads),
    }


def cpu_time_ms(candidates: dict[str, Callable], batches: list[int], size: int, in_chans: int,
                runs: int) -> dict[tuple[str, int], float]:
    """Median process CPU time per call of single-thread backends: what one core spends, whatever the load."""
    rng = np.random.default_rng(0)
    out = {}
    for b in batches:
        x = rng.random((b, in_chans, size, size), dtype=np.float32)
        for name, fn in candidates.items():
            out[(name, b)] = median_ms(lambda f=fn, x=x: f(x), runs, clock=time.process_time)
    return out


def _gpu_candidates(checkpoint: Path, size: int, folder: Path, batches: list[int]) -> dict[str, Callable]:
    """torch CUDA fp16 + CUDA graphs, and a TensorRT fp16 engine when TensorRT is installed."""
    import torch

    from facenormals.checkpoint import load_image_to_normal

    module = load_image_to_normal(checkpoint, map_location="cuda").half().to(memory_format=torch.channels_last)
    graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}

    def cuda_graph_run(batch: np.ndarray) -> np.ndarray:
        n = len(batch)
        if n not in graphs:
            static_in = torch.zeros((n, *batch.shape[1:]), device="cuda", dtype=torch.half)
            static_in = static_in.to(memory_format=torch.channels_last)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side), torch.inference_mode():
                for _ in range(3):  # warm-up on a side stream before capture, as CUDA graphs require
                    module(static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.inference_mode():
                static_out = module(static_in)
            graphs[n] = (graph, static_in, static_out)
        graph, static_in, static_out = graphs[n]
        static_in.copy_(torch.from_numpy(batch).to("cuda", non_blocking=True))
        graph.replay()
        return static_out.float().cpu().numpy()

    candidates: dict[str, Callable] = {"torch CUDA fp16 + CUDA graphs": cuda_graph_run}
    try:
        from facenormals.export.onnx_export import export_onnx
        from facenormals.export.prepare import create_backend
        from facenormals.export.tensorrt_build import build_engine

        onnx_path = folder / f"{checkpoint.stem}_gpu.onnx"
        export_onnx(checkpoint, onnx_path, size=size, check_parity=False)
        engine = folder / f"{checkpoint.stem}_fp16.engine"
        build_engine(onnx_path, engine, "fp16", batch=(1, max(batches), max(batches)))
        candidates["TensorRT fp16"] = create_backend("tensorrt", engine)
    except (RuntimeError, ImportError) as err:
        print(f"  TensorRT skipped: {err}", file=sys.stderr)
    return candidates


def _time_round(fn: Callable, x: np.ndarray, runs: int, sync: Callable[[], None]) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn(x)
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def measure(candidates: dict[str, Callable], batches: list[int], size: int, in_chans: int, runs: int,
            rounds: int, sync: Callable[[], None] = lambda: None) -> dict[tuple[str, int], list[float]]:
    """Latencies per (engine, batch): ``rounds`` rounds, each giving every configuration ``runs`` timed calls."""
    from tqdm import tqdm

    rng = np.random.default_rng(0)
    inputs = {b: rng.random((b, in_chans, size, size), dtype=np.float32) for b in batches}
    samples: dict[tuple[str, int], list[float]] = {(name, b): [] for name in candidates for b in batches}
    for fn in candidates.values():
        for b in batches:
            for _ in range(2):
                fn(inputs[b])  # warm-up: allocations, kernel selection, graph capture
    for _ in tqdm(range(rounds), desc="rounds", leave=False):
        for (name, b), times in samples.items():
            times.extend(_time_round(candidates[name], inputs[b], runs, sync))
    return samples


def run(archs: list[str], batches: list[int], size: int, runs: int, rounds: int, models: dict[str, Path],
        calibration: Path | None, gpu: bool) -> dict[str, object]:
    import torch

    from facenormals.runtime.machine import cpu_model, physical_cores

    rows: list[Row] = []
    cores = physical_cores()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="facenormals-bench-") as tmp:
        folder = Path(tmp)
        for arch in archs:
            checkpoint = _checkpoint(arch, size, folder, models)
            gmac = _gmac(checkpoint, size)
            print(f"{arch}: {gmac:.2f} GMAC per image at {size}²", file=sys.stderr)
            fp32_onnx, int8_onnx = _cpu_models(checkpoint, size, folder, calibration)
            cpu = _cpu_candidates(checkpoint, fp32_onnx, int8_onnx, cores)
            in_chans = next(iter(cpu.values())).in_chans
            wall = measure(cpu, batches, size, in_chans, runs, rounds)
            del cpu
            single = cpu_time_ms(_cpu_candidates(checkpoint, fp32_onnx, int8_onnx, 1), batches, size, in_chans,
                                 max(3, runs))
            torch.set_num_threads(cores)  # the single-thread torch backend changed the process-wide pool
            for (name, b), times in wall.items():
                per_gmac = INT8_MS_PER_GMAC if "int8" in name else FP32_MS_PER_GMAC
                rows.append(Row(arch, gmac, name, "cpu", b, statistics.median(times),
                                float(np.percentile(times, 90)), min(times), per_gmac * gmac * b,
                                single[(name, b)]).finish(cores))
            if gpu:
                cands = _gpu_candidates(checkpoint, size, folder, batches)
                for (name, b), times in measure(cands, batches, size, in_chans, runs, rounds,
                                                sync=torch.cuda.synchronize).items():
                    rows.append(Row(arch, gmac, name, torch.cuda.get_device_name(), b, statistics.median(times),
                                    float(np.percentile(times, 90)), min(times), None).finish())
    return {
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "machine": {"cpu": cpu_model(), "physical_cores": cores, "python": platform.python_version(),
                    "load_average_before": load_before, "load_average_after": os.getloadavg()},
        "settings": {"size": size, "runs_per_round": runs, "rounds": rounds,
                     "fp32_ms_per_gmac": FP32_MS_PER_GMAC, "int8_ms_per_gmac": INT8_MS_PER_GMAC,
                     "weights": {a: str(models[a]) if a in models else "random init" for a in archs}},
        "rows": [asdict(r) for r in rows],
        "gpu": "measured" if gpu else "skipped: no CUDA GPU",
    }




def markdown(result: dict[str, object]) -> str:
    machine, settings = result["machine"], result["settings"]
    lines = [
        f"Measured {result['date_utc']} UTC on {machine['cpu']} ({machine['physical_cores']} physical cores), "
        f"{settings['size']}², median of {settings['rounds']}×{settings['runs_per_round']} interleaved runs; "
        f"load average {machine['load_average_before'][0]:.1f} → {machine['load_average_after'][0]:.1f}. "
        f"Floor = GMAC × {settings['fp32_ms_per_gmac']:g} ms (fp32) or × {settings['int8_ms_per_gmac']:g} ms (int8) "
        "per image. 1-thread CPU ms: process CPU time of one call on a single-thread session (insensitive to "
        "other jobs); idle est. = that / physical cores, i.e. perfect scaling on an idle machine.",
        "",
        "| width | GMAC | engine | device | batch | median ms | p90 ms | best ms | img/s | floor ms | × floor "
        "(median) | × floor (best) | 1-thread CPU ms | idle est. ms | × floor (idle est.) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        floor = f"{r['floor_ms']:.1f}" if r["floor_ms"] else "—"
        ratio = f"{r['x_floor']:.2f}" if r["x_floor"] else "—"
        best = f"{r['x_floor_best']:.2f}" if r["x_floor_best"] else "—"
        cpu1 = f"{r['cpu1_ms']:.1f}" if r["cpu1_ms"] is not None else "—"
        idle = f"{r['idle_estimate_ms']:.1f}" if r["idle_estimate_ms"] is not None else "—"
        x_idle = f"{r['x_floor_idle_estimate']:.2f}" if r["x_floor_idle_estimate"] else "—"
        lines.append(f"| {r['arch']} | {r['gmac']:.2f} | {r['engine']} | {r['device']} | {r['batch']} | "
                     f"{r['median_ms']:.1f} | {r['p90_ms']:.1f} | {r['min_ms']:.1f} | {r['img_per_s']:.1f} | {floor} | "
                     f"{ratio} | {best} | {cpu1} | {idle} | {x_idle} |")
    if result["gpu"] != "measured":
        lines += ["", f"GPU rows (torch CUDA fp16 + CUDA graphs, TensorRT fp16): {result['gpu']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m facenormals.benchmarks.inference", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default="fast,paper", help="comma-separated widths (default fast,paper)")
    parser.add_argument("--batches", default="1,4", help="comma-separated batch sizes (default 1,4)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--runs", type=int, default=5, help="timed calls per configuration per round")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds")
    parser.add_argument("--model", action="append", default=[], metavar="ARCH=CKPT",
                        help="use this checkpoint for a width (e.g. fast=facenormals/weights/fast.safetensors)")
    parser.add_argument("--calibration", type=Path, default=None,
                        help="face photos or dataset for INT8 calibration (default: scikit-image's astronaut)")
    parser.add_argument("--no-gpu", action="store_true", help="skip the GPU rows even where CUDA exists")
    parser.add_argument("--out", type=Path, default=None, help="JSON results")
    parser.add_argument("--markdown", type=Path, default=None, help="markdown table")
    args = parser.parse_args(argv)
    models = {}
    for spec in args.model:
        arch, _, path = spec.partition("=")
        if not path or not Path(path).is_file():
            parser.error(f"--model expects ARCH=CHECKPOINT with an existing file, got {spec!r}")
        models[arch] = Path(path)
    gpu = False
    if not args.no_gpu:
        import torch

        gpu = torch.cuda.is_available()
    result = run(args.archs.split(","), [int(b) for b in args.batches.split(",")], args.size, args.runs,
                 args.rounds, models, args.calibration, gpu)
    from facenormals.atomic import write_text_atomic

    table = markdown(result)
    print(table)
    if args.out:
        write_text_atomic(args.out, json.dumps(result, indent=2) + "\n")
    if args.markdown:
        write_text_atomic(args.markdown, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
