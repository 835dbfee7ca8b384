"""``facenormals run``: live face normals from a camera, a file, an RGB-D sensor or the embedded sample.

With no arguments: the webcam if one opens, else the embedded ``sample`` clip; without a display the
annotated frames go to a video file whose path is printed. Ctrl-C, SIGTERM or ``q`` stop cleanly: the
video is finalised and the run's report printed (and written with ``--report``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from facenormals.atomic import write_text_atomic

DEFAULT_OUT = "facenormals-run.mp4"
log = logging.getLogger("facenormals.run")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from facenormals.realtime.render import view_names

    parser.add_argument("--source", help="webcam[:N], video:PATH, images:DIR, realsense[:SERIAL|FILE], kinect, "
                        "rgbd:DIR, sample, sample-rgbd (default: webcam, else sample)")
    parser.add_argument("--backend", default="auto", help="tensorrt, ort-trt, ort-cuda, ort-cpu, torch or auto (default)")
    parser.add_argument("--model", help="checkpoint (.safetensors), .onnx or .engine; default: the shipped model")
    parser.add_argument("--view", default="normals", choices=view_names(), help="what to draw (default: normals)")
    parser.add_argument("--out", type=Path, help="write the annotated frames to this .mp4")
    parser.add_argument("--save-dir", type=Path, help="write each frame's normal map to DIR/normals/")
    parser.add_argument("--save-format", choices=("png", "npy"), default="png", help="normal map files (default png)")
    parser.add_argument("--headless", action="store_true", help="never open a window")
    parser.add_argument("--max-faces", type=int, default=1, metavar="K", help="faces per frame (default 1)")
    parser.add_argument("--frames", type=int, metavar="N", help="stop after N frames")
    parser.add_argument("--task", type=Path, help="MediaPipe Tasks face_landmarker.task file (instead of the bundled mesh)")
    parser.add_argument("--no-smoothing", action="store_true", help="raw landmarks (no One-Euro filter)")
    parser.add_argument("--realtime", action="store_true",
                        help="replay a file source at its frame rate like a camera (drops frames when behind)")
    parser.add_argument("--threads", type=int, help="CPU threads for inference (default: physical cores)")
    parser.add_argument("--report", type=Path, help="write the run report (JSON) here")
    parser.add_argument("--calibration", type=Path, metavar="FILE",
                        help="calibration file (facenormals calibrate): the colour camera's intrinsics, distortion "
                             "removed, and the depth scale where the source has none")


def open_default_source(frames: int | None):
    """The webcam if one opens, else the embedded sample (no download)."""
    from facenormals.realtime.sources.base import SourceError, open_source

    try:
        return open_source("webcam")
    except (SourceError, ImportError) as err:
        print(f"facenormals run: no webcam ({err}); using the embedded sample clip", file=sys.stderr)
        return open_source("sample", **({"frames": frames} if frames else {}))


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.max_faces < 1:
        raise ValueError(f"--max-faces must be at least 1, got {args.max_faces}")
    if args.frames is not None and args.frames < 1:
        raise ValueError(f"--frames must be at least 1, got {args.frames}")
    from facenormals.calibration.calibfile import load_calibration
    from facenormals.export.backends import create_backend, warm_up
    from facenormals.realtime.detect import create_detector
    from facenormals.realtime.pipeline import Pipeline, PipelineError
    from facenormals.realtime.render import FrameRenderer, RenderState, get_view
    from facenormals.realtime.sinks import SaveDirSink, VideoSink, WindowSink, has_display
    from facenormals.realtime.sources.base import SourceError, open_source
    from facenormals.realtime.sources.calibrated import CalibratedSource

    get_view(args.view)  # an unavailable view fails before a camera or model is opened
    calibration = load_calibration(args.calibration) if args.calibration else None  # a bad file fails first
    source = open_source(args.source) if args.source else open_default_source(args.frames)
    if calibration is not None:
        try:
            source = CalibratedSource(source, calibration)
        except SourceError:
            source.close()
            raise
    with source:
        options = {"threads": args.threads} if args.threads else {}
        backend = create_backend(args.backend, args.model, **options)
        warm_up(backend)
        precision = getattr(backend, "metadata", {}).get("precision", "fp32")
        print(f"facenormals run: backend {backend.name} ({precision}) on {', '.join(backend.providers)}; "
              f"source {source!r}", file=sys.stderr)
        window = not args.headless and has_display()
        out = args.out
        if out is None and not window and args.save_dir is None:
            out = Path(DEFAULT_OUT)
            print(f"facenormals run: no display; writing the annotated video to {out.resolve()}", file=sys.stderr)
        state = RenderState(view=args.view)
        sinks = []
        if out is not None:
            sinks.append(VideoSink(out, fps=source.fps or 30.0))
        if args.save_dir is not None:
            sinks.append(SaveDirSink(args.save_dir, args.save_format))
        if window:
            sinks.append(WindowSink(state))
        detector = create_detector(args.max_faces, task_file=args.task, smooth=not args.no_smoothing)
        pipeline = Pipeline(source, detector, backend, FrameRenderer(state, backend.name), sinks,
                            max_frames=args.frames, pace_fps=(source.fps or 30.0) if args.realtime else None)
        try:
            report = pipeline.run()
            code = 0
        except PipelineError as err:
            report, code = err.report, 1
            print(f"facenormals run: error: {err}", file=sys.stderr)
        finally:
            detector.close()
    print(f"facenormals run: {report.summary()}", file=sys.stderr)
    for sink in sinks:
        if isinstance(sink, VideoSink) and sink.frames:
            print(f"facenormals run: wrote {sink.frames} annotated frames to {sink.path.resolve()}", file=sys.stderr)
        if isinstance(sink, SaveDirSink):
            print(f"facenormals run: wrote {sink.frames} normal maps to {sink.folder.resolve()}", file=sys.stderr)
    if args.report is not None:
        write_text_atomic(args.report, json.dumps(report_json(report, backend.name), indent=2))
    return code  # a stop by Ctrl-C, SIGTERM or 'q' is a normal end: the outputs are complete


def report_json(report, backend: str) -> dict:
    from facenormals.realtime.bench import latency_summary

    return {"backend": backend, "frames_in": report.frames_in, "frames": report.frames_out, "fps": report.fps,
            "dropped": report.dropped_total, "dropped_by_queue": report.dropped, "corrupt": report.corrupt,
            "stopped_by": report.stopped_by, "error": report.error, **latency_summary(report.records)}
