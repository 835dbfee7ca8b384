"""``facenormals bench``: per-stage and end-to-end latency of the realtime pipeline, as JSON and a plot."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from facenormals.atomic import write_text_atomic


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", default="sample", help="frame source spec (default: the embedded sample)")
    parser.add_argument("--backend", default="auto", help="tensorrt, ort-trt, ort-cuda, ort-cpu, torch or auto (default)")
    parser.add_argument("--model", help="checkpoint, .onnx (fp32 or INT8 Q/DQ) or .engine; default: the shipped live model")
    parser.add_argument("--frames", type=int, default=300, help="measured frames (default 300)")
    parser.add_argument("--warmup", type=int, default=30, help="frames run before measuring (default 30)")
    parser.add_argument("--pace", choices=("realtime", "max"), default="realtime",
                        help="realtime: replay files at their frame rate with live queues (default); max: every "
                             "frame as fast as possible")
    parser.add_argument("--no-preload", action="store_true",
                        help="read file sources during the run (default: read ahead, replay from memory)")
    parser.add_argument("--max-faces", type=int, default=1, metavar="K")
    parser.add_argument("--no-temporal", action="store_true", help="no temporal filter of the normals (default: on)")
    parser.add_argument("--no-flow", action="store_true",
                        help="landmark smoothing without following the faces' image motion (default: on)")
    parser.add_argument("--plain-landmarks", action="store_true",
                        help="MediaPipe's landmarks as they come (default: steadied against light, facenormals.mesh_input)")
    parser.add_argument("--view", default="normals", help="view rendered during the run (default normals)")
    parser.add_argument("--threads", type=int, help="CPU threads for inference (default: physical cores)")
    parser.add_argument("--sync-keyframes", action="store_true",
                        help="live, reusing: a keyframe's frame waits for its own inference (default: it is shown "
                             "with the previous keyframe's output carried into its crop while its network runs, "
                             "for the frames after it: no frame waits for the network)")
    parser.add_argument("--infer-every", default="auto", metavar="auto|N",
                        help="network at least every N frames per face, its output reused while the face barely "
                             "moves; 1: every frame; auto (default): as `facenormals run` (facenormals.reuse)")
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.add_argument("--plot", type=Path, help="write a latency plot (PNG) here")


def main(args: argparse.Namespace) -> int:
    from facenormals.atomic import check_output
    from facenormals.realtime.bench import BenchConfig, plot_result, run_benchmark
    from facenormals.reuse import parse_infer_every

    for option, path in (("--json", args.json), ("--plot", args.plot)):  # unwritable: fail before the benchmark
        if path is not None:
            check_output(path, option, overwrite=True, inputs=[args.model])
    cfg = BenchConfig(source=args.source, backend=args.backend, model=args.model, frames=args.frames,
                      warmup=args.warmup, max_faces=args.max_faces, pace=args.pace, view=args.view, threads=args.threads,
                      preload=not args.no_preload, temporal=not args.no_temporal,
                      flow=not args.no_flow, infer_every=parse_infer_every(args.infer_every),
                      steady=not args.plain_landmarks, sync_keyframes=args.sync_keyframes)
    result = run_benchmark(cfg)
    print(format_summary(result))
    if args.json is not None:
        write_text_atomic(args.json, json.dumps(result, indent=2))
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot is not None:
        plot_result(result, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def format_summary(result: dict) -> str:
    lat, stages = result["latency_ms"], result["stages"]
    lines = [f"{result['backend']} ({', '.join(result['providers'])}), {result['source']}, pace {result['pace']}: "
             f"{result['fps']:.1f} FPS over {result['frames']} frames, {result['dropped']} dropped",
             f"end to end ms: p50 {lat['p50']:.1f}  p95 {lat['p95']:.1f}  p99 {lat['p99']:.1f}",
             "stage        p50      p95"]
    lines += [f"{name:<10} {v['p50']:7.2f}  {v['p95']:7.2f}" for name, v in stages.items()]
    lines.append(f"CPU per frame (all threads): {result['cpu_ms_per_frame']:.1f} ms")
    if "faces_inferred" in result:
        lines.append(f"faces inferred {result['faces_inferred']}, reused {result['faces_reused']} "
                     f"(infer every {result['infer_every']}"
                     + (", keyframes deferred)" if result.get("deferred_keyframes") else ")"))
    if result.get("deferred_keyframes"):
        deferred = result["deferred_infer_ms"]
        lines.append(f"keyframes' network, run after their frame: p50 {deferred['p50']:.1f}  p95 {deferred['p95']:.1f} ms")
    by_thread = result.get("cpu_ms_per_frame_by_thread")
    if by_thread:
        lines.append("  by thread: " + ", ".join(f"{role} {ms:.1f}" for role, ms in by_thread.items()))
    jitter = result["jitter"]
    lines.append(f"landmark jitter (‰ face size): raw {jitter['raw']}, smoothed {jitter['smoothed']}")
    stability = result.get("stability")
    if stability:
        lines.append(f"temporal filter {'on' if result.get('temporal') else 'off'}, landmarks following the image "
                     f"{'on' if result.get('flow') else 'off'}: aligned frame-to-frame change "
                     f"{stability['aligned_frame_to_frame_deg']['mean']}° (landmarks: rigid "
                     f"{stability['landmark_motion_rigid']['mean']} ‰, "
                     f"non-rigid {stability['landmark_motion_nonrigid']['mean']} ‰)")
        if "photo" in stability:
            lines.append(f"sample, on the photo: deviation from the temporal median "
                         f"{stability['photo']['deviation_from_median_deg']['mean']}°, frame to frame "
                         f"{stability['photo']['frame_to_frame_deg']['mean']}°")
    machine = result["machine"]
    lines.append(f"machine: {machine['cpu']} ×{machine['cpus_usable']}, load {machine['load_avg_1m_before']} → "
                 f"{machine['load_avg_1m']}, {machine['date_utc']}")
    return "\n".join(lines)
