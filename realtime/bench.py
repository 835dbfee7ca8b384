"""Latency benchmark of the realtime pipeline: the real loop (capture → detect → infer → render) on a
source, measured per frame; results as JSON and a plot.

Two pacing modes:

* ``realtime`` (default): a file source is released at its frame rate like a camera, with latest-frame
  queues — FPS is what a live user sees (at most the source rate), latency includes waiting for a busy
  stage, and frames the pipeline cannot keep up with are dropped and counted.
* ``max``: every frame, as fast as possible (one-slot blocking queues) — FPS is the pipeline's capacity;
  latency then includes time spent queued behind earlier frames (one per hand-over at most).

File sources are read ahead and replayed from memory (``preload``), so the figures time the pipeline,
not a video decoder or the sample generator; a camera's own cost is outside the loop either way.

Times are wall-clock milliseconds from ``time.perf_counter``/``monotonic_ns``; on CUDA (torch and
TensorRT backends) inference is also timed with CUDA events (stage ``infer_gpu``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import itertools
import os
import platform
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facenormals.engine import FrameResult
from facenormals.frame import Frame
from facenormals.realtime.pipeline import FrameRecord
from facenormals.smoothing import landmark_jitter
from facenormals.zoo import default_model_name

# Stages the pipeline's own code runs on every frame, besides inference (capture is the source's cost). The queue
# waits (wait_detect, wait_infer, wait_render: time in the hand-over before each thread) are reported as stages too.
OVERHEAD_STAGES = ("detect", "crop", "temporal", "fuse", "paste", "render", "sink")
PERCENTILES = (50, 95, 99)


@dataclass(frozen=True)
class BenchConfig:
    source: str = "sample"
    backend: str = "auto"
    model: str | None = None
    frames: int = 300
    warmup: int = 30
    max_faces: int = 1
    pace: str = "realtime"  # realtime | max
    view: str = "normals"
    threads: int | None = None
    preload: bool = True  # file sources: decode/generate frames before timing, replay them from memory
    temporal: bool = True  # the temporal filter of the normals (facenormals.temporal), as `run` has it for video
    flow: bool = True  # the landmark smoother follows the faces' image motion (facenormals.face_motion), as in `run`
    steady: bool = True  # light-steadied face-mesh landmarks (facenormals.mesh_input), as in `run`
    stability: bool = True  # the stability block (figures computed after the run, off the timed loop)
    infer_every: int | None = None  # facenormals.reuse: None = `run`'s default (auto), 1 = every frame
    sync_keyframes: bool = False  # live: a keyframe's frame waits for its own inference (default: deferred)


THREAD_CPU_EVERY = 5  # frames between per-thread CPU samples (a thread that ends is counted to its last sample)
PRELOAD_LIMIT = 150  # distinct frames kept in memory (640×480: 138 MB); longer runs cycle through them


class ReplayFrames:
    """Frames read ahead of the run and replayed from memory with fresh ids and capture times, so the
    benchmark times the pipeline rather than a video decoder or the sample generator."""

    live = False

    def __init__(self, frames: list[Frame], count: int, fps: float | None) -> None:
        if not frames:
            raise ValueError("no frames to replay: the source delivered none")
        self.frames, self.count, self.fps = frames, count, fps

    def __iter__(self) -> Iterator[Frame]:
        for i in range(self.count):
            frame = self.frames[i % len(self.frames)]
            # a camera's stand-in: its clock is the capture clock (the file's times would run backwards each loop)
            yield dataclasses.replace(frame, id=i, t_capture_ns=time.monotonic_ns(), t_media_ns=None, timings={})


def percentiles(values: list[float]) -> dict[str, float]:
    """The :data:`PERCENTILES` of ``values`` (ms), rounded to µs; NaN when there are none."""
    if not values:
        return {f"p{p}": float("nan") for p in PERCENTILES}
    array = np.asarray(values, dtype=np.float64)
    return {f"p{p}": round(float(np.percentile(array, p)), 3) for p in PERCENTILES}


def latency_summary(records: list[FrameRecord]) -> dict:
    """End-to-end and per-stage percentiles (ms) over ``records``, plus the non-inference overhead."""
    stages: dict[str, list[float]] = defaultdict(list)
    totals, overhead = [], []
    for record in records:
        for name, ms in record.timings.items():
            if name != "total":
                stages[name].append(ms)
        if "total" in record.timings:
            totals.append(record.timings["total"])
        overhead.append(sum(record.timings.get(name, 0.0) for name in OVERHEAD_STAGES))
    summary = {name: percentiles(values) for name, values in stages.items()}
    summary["overhead"] = percentiles(overhead)
    return {"latency_ms": percentiles(totals), "stages": summary}


class JitterProbe:
    """Collects raw and smoothed landmarks per face track (the jitter metric) and the process CPU time at the
    first measured frame."""

    def __init__(self, warmup: int = 0) -> None:
        self.warmup = warmup
        self.cpu_start_s: float | None = None
        self.raw: dict[int, list[np.ndarray]] = defaultdict(list)
        self.smooth: dict[int, list[np.ndarray]] = defaultdict(list)
        self.sides: dict[int, list[float]] = defaultdict(list)
        self.ids: dict[int, list[int]] = defaultdict(list)

    def __call__(self, result: FrameResult) -> None:
        if self.cpu_start_s is None and result.frame.id >= self.warmup:
            self.cpu_start_s = time.process_time()  # CPU time of every thread of this process
        for face in result.faces:
            self.raw[face.track_id].append(face.raw_landmarks)
            self.smooth[face.track_id].append(face.landmarks)
            self.sides[face.track_id].append(face.box.side)
            self.ids[face.track_id].append(result.frame.id)

    def summary(self) -> dict:
        """Frame-weighted mean over tracks of :func:`landmark_jitter` on consecutive frames (‰ of the face size)."""
        def mean(tracks: dict[int, list[np.ndarray]]) -> float:
            pairs = [(landmark_jitter(seq, self.sides[tid], self.ids[tid]), len(seq)) for tid, seq in tracks.items()]
            pairs = [(j, n) for j, n in pairs if np.isfinite(j)]
            if not pairs:
                return float("nan")
            return round(float(np.average([j for j, _ in pairs], weights=[n for _, n in pairs])), 3)

        consecutive = sum(int(np.sum((np.asarray(ids[2:]) - ids[:-2] == 2) & (np.asarray(ids[1:-1]) - ids[:-2] == 1)))
                          for ids in self.ids.values() if len(ids) >= 3)
        return {"raw": mean(self.raw), "smoothed": mean(self.smooth), "unit": "permille of face size per frame²",
                "tracks": len(self.raw), "triples_used": consecutive}


class CudaEventTimer:
    """Wraps a backend; times each call with CUDA events on the current stream (GPU time, not host time)."""

    def __init__(self, backend) -> None:
        import torch

        self.backend, self.torch = backend, torch
        self.name, self.input_size = backend.name, backend.input_size
        self.in_chans, self.providers = backend.in_chans, backend.providers
        self.ms: list[float] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        start, end = self.torch.cuda.Event(enable_timing=True), self.torch.cuda.Event(enable_timing=True)
        start.record()
        out = self.backend(batch)
        end.record()
        end.synchronize()
        self.ms.append(start.elapsed_time(end))
        return out


def _uses_cuda(backend) -> bool:
    try:
        import torch
    except ImportError:
        return False
    on_gpu = any("cuda" in p.lower() or "tensorrt" in p.lower() for p in backend.providers)
    return on_gpu and backend.name in ("torch", "tensorrt") and torch.cuda.is_available()


def machine_info() -> dict:
    """What the figures were measured on, including the load (other processes) at the time."""
    from facenormals.runtime.machine import cpu_model

    info = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    for module in ("torch", "onnxruntime", "mediapipe", "cv2", "numpy"):
        try:
            info[module] = __import__(module).__version__
        except ImportError:
            info[module] = None
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info




def run_benchmark(cfg: BenchConfig) -> dict:
    """Run the pipeline on ``cfg.source`` and return the JSON-ready result."""
    from facenormals.realtime.runner import (
        SAMPLE_KINDS,
        LoopParts,
        default_infer_every,
        inference_threads,
        open_backend,
        open_run_source,
    )
    from facenormals.realtime.sources.base import parse_spec
    from facenormals.realtime.stability import StabilityProbe, sample_photo_of
    from facenormals.realtime.thread_cpu import ThreadCpu

    if cfg.pace not in ("realtime", "max"):
        raise ValueError(f"pace must be 'realtime' or 'max', got {cfg.pace!r}")
    if cfg.frames < 2 or cfg.warmup < 0:
        raise ValueError(f"need frames ≥ 2 and warmup ≥ 0 (got {cfg.frames}, {cfg.warmup})")
    thread_cpu = ThreadCpu()
    total = cfg.frames + cfg.warmup
    is_sample = parse_spec(cfg.source).kind in SAMPLE_KINDS
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(open_run_source(cfg.source, sample_frames=total))
        # a camera, or a file replayed at its frame rate, is a live loop: `--infer-every auto` reuses there
        every = cfg.infer_every or default_infer_every(parse_spec(cfg.source).kind == "images", cfg.view,
                                                       live=bool(source.live) or cfg.pace == "realtime")
        with thread_cpu.mark("backend workers"):  # e.g. ONNX Runtime's intra-op pool: CPU no stage timing shows
            backend = open_backend(cfg.backend, cfg.model, inference_threads(cfg.backend, cfg.threads, every),
                                   warm_runs=5)
        gpu_timer = CudaEventTimer(backend) if _uses_cuda(backend) else None
        load_before = machine_info()["load_avg_1m"]
        probe = JitterProbe(cfg.warmup)
        parts = stack.enter_context(LoopParts.build(source, backend, view=cfg.view, max_faces=cfg.max_faces,
                                                    temporal=cfg.temporal, flow=cfg.flow, infer_every=every,
                                                    steady=cfg.steady))
        pace = (source.fps or 30.0) if cfg.pace == "realtime" and not source.live else None
        frames = source
        if cfg.preload and not source.live:
            frames = ReplayFrames(list(itertools.islice(source, min(total, PRELOAD_LIMIT))), total, source.fps)
        cycle = len(frames.frames) if isinstance(frames, ReplayFrames) else None
        photo_of = sample_photo_of(source.info.width, source.info.height, source.fps or 30.0, cycle) if is_sample else None
        stability = StabilityProbe(cfg.warmup, photo_of) if cfg.stability else None

        measured_results = [0]
        inferred_before = [0, 0, 0]

        def on_result(result: FrameResult) -> None:
            probe(result)
            if result.frame.id >= cfg.warmup:
                if measured_results[0] == 0:
                    thread_cpu.start(0)
                    counts = pipeline.engine.counts  # faces inferred / reused until now: not measured
                    inferred_before[:] = counts["inferred"], counts["reused"], len(pipeline.report.deferred_ms)
                elif measured_results[0] % THREAD_CPU_EVERY == 0:
                    thread_cpu.sample(measured_results[0])
                measured_results[0] += 1
            if stability is not None:
                stability(result)
        # max pace: one-slot blocking queues, so latency counts at most one waiting frame per hand-over
        pipeline = parts.pipeline(frames, backend=gpu_timer or backend, max_frames=total, pace_fps=pace,
                                  live=True if pace else None, queue_size=1, on_result=on_result,
                                  handle_signals=False, defer_keyframes=False if cfg.sync_keyframes else None)
        report = pipeline.run()
        cpu_end_s = time.process_time()
        live = pipeline.live
        every = parts.reuse.every if parts.reuse is not None else 1
    before = [r for r in report.records if r.id < cfg.warmup]
    measured = [r for r in report.records if r.id >= cfg.warmup]
    if len(measured) < 2:
        raise RuntimeError(f"only {len(measured)} frames after warm-up: is the source shorter than "
                           f"{total} frames, or were faces/frames lost? ({report.summary()})")
    # n measured frames ↔ n intervals between completions, starting at the last warm-up frame's completion
    start_ns = before[-1].t_done_ns if before else measured[0].t_capture_ns
    span_s = (measured[-1].t_done_ns - start_ns) * 1e-9
    summary = latency_summary(measured)
    if gpu_timer is not None:
        summary["stages"]["infer_gpu"] = percentiles(gpu_timer.ms[cfg.warmup:])
    machine = machine_info()
    machine["load_avg_1m_before"] = load_before
    faces = [r.faces for r in measured]
    return {
        "fps": round(len(measured) / span_s, 2) if span_s > 0 else float("nan"),
        "duration_s": round(report.duration_s, 3),
        **summary,
        "dropped": report.dropped_total,
        "dropped_by_queue": report.dropped,
        "frames": len(measured),
        "frames_captured": report.frames_in,
        "warmup_frames": cfg.warmup,
        "corrupt": report.corrupt,
        "faces_per_frame": round(float(np.mean(faces)), 3),
        "jitter": probe.summary(),
        "temporal": cfg.temporal,
        "flow": cfg.flow,
        "steady_landmarks": cfg.steady,
        "infer_every": every,
        "inference_threads": inference_threads(cfg.backend, cfg.threads, every),  # None: physical cores
        # faces of the measured frames sent to the network / given an earlier inference's output (facenormals.reuse)
        "faces_inferred": report.faces_inferred - inferred_before[0],
        "faces_reused": report.faces_reused - inferred_before[1],
        # live, reusing: keyframes shown with the previous keyframe carried, their network run after the frame
        "deferred_keyframes": pipeline.defer_keyframes,
        "deferred_infer_ms": percentiles(report.deferred_ms[inferred_before[2]:]),
        **({"stability": stability.summary()} if stability is not None else {}),
        # CPU seconds per processed frame (all threads; ORT's spinning included): contention inflates wall time
        # far more than CPU time, so cores / this bounds the unloaded FPS.
        "cpu_ms_per_frame": round((cpu_end_s - (probe.cpu_start_s or cpu_end_s)) * 1000.0 / (len(measured) - 1), 2),
        # the same by thread (Linux): the pipeline's threads by stage, the backend's workers, MediaPipe's threads
        "cpu_ms_per_frame_by_thread": {role: round(ms, 2) for role, ms in thread_cpu.ms_per_frame().items()},
        "backend": backend.name,
        "providers": list(backend.providers),
        "model": str(cfg.model) if cfg.model else f"default ({default_model_name(live=True)})",
        "source": cfg.source,
        "pace": cfg.pace,
        "preloaded": cfg.preload and isinstance(frames, ReplayFrames),
        "live_queues": live,
        "source_fps": pace,
        "machine": machine,
        "per_frame": [{"id": r.id, "faces": r.faces, **{k: round(v, 3) for k, v in r.timings.items()}} for r in measured],
    }


def plot_result(result: dict, path: str | Path) -> None:
    """Per-frame latency timeline (left) and per-stage p50/p95 bars (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = result["per_frame"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1.6, 1]})
    ids = [f["id"] for f in frames]
    left.plot(ids, [f.get("total", np.nan) for f in frames], lw=1, label="end to end")
    left.plot(ids, [f.get("infer", np.nan) for f in frames], lw=1, label="infer")
    left.plot(ids, [sum(f.get(s, 0.0) for s in OVERHEAD_STAGES) for f in frames], lw=1, label="all but infer")
    deferred = result.get("deferred_infer_ms", {}).get("p50", float("nan")) if result.get("deferred_keyframes") else None
    left.set(xlabel="frame id", ylabel="ms", title=f"{result['backend']}: {result['fps']:.1f} FPS, "
             f"p95 {result['latency_ms']['p95']:.0f} ms, {result['dropped']} dropped"
             + (f"\nkeyframes' network run after their frame: p50 {deferred:.1f} ms" if deferred is not None else ""))
    left.legend(loc="upper right", fontsize=8)
    left.grid(alpha=0.3)
    order = ("capture", "wait_detect", "detect", "crop", "wait_infer", "temporal", "fuse", "infer", "infer_gpu",
             "wait_render", "paste", "render", "sink", "overhead")
    names = [n for n in order if n in result["stages"]]
    p50 = [result["stages"][n]["p50"] for n in names]
    p95 = [result["stages"][n]["p95"] for n in names]
    right.barh(names, p95, color="#f4a582", label="p95")
    right.barh(names, p50, color="#4393c3", label="p50")
    right.invert_yaxis()
    right.set(xlabel="ms", title="per stage")
    right.legend(fontsize=8)
    right.grid(alpha=0.3, axis="x")
    machine = result["machine"]
    fig.suptitle(f"{machine['cpu']} ×{machine['cpus_usable']}, load {machine['load_avg_1m']}, {machine['date_utc']}",
                 fontsize=8)
    fig.tight_layout()
    from facenormals.atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
