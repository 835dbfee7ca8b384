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

from facenormals.atomic import check_output, check_writable_dir, write_text_atomic

DEFAULT_OUT = "facenormals-run.mp4"
PATH_SPECS = ("video", "images", "realsense", "kinect", "rgbd")
VIEW_PANELS = {"side": 2, "fusion": 3, "3d": 2}  # views that draw panels side by side: the video is that many frames wide
log = logging.getLogger("facenormals.run")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from facenormals.realtime.render import view_names

    parser.add_argument("--source", help="webcam[:N], video:PATH, images:DIR, realsense[:SERIAL|FILE], kinect, "
                        "rgbd:DIR, sample, sample-rgbd (default: webcam, else sample)")
    parser.add_argument("--backend", default="auto", help="tensorrt, ort-trt, ort-cuda, ort-cpu, torch or auto (default)")
    parser.add_argument("--model", help="checkpoint (.safetensors), .onnx or .engine; default: the shipped live model")
    parser.add_argument("--view", default="normals", choices=view_names(), help="what to draw (default: normals)")
    parser.add_argument("--out", type=Path, help="write the annotated frames to this .mp4")
    parser.add_argument("--save-dir", type=Path, help="write each frame's normal map to DIR/normals/")
    parser.add_argument("--save-mesh", type=Path, metavar="DIR",
                        help="write each face's refined 3-D mesh (the fitted ICT face refined by the normals) and the "
                             "fitted face alongside as binary PLY, metres, to DIR/{frame}_face{k}[_coarse].ply")
    parser.add_argument("--save-format", choices=("png", "npy"), default="png", help="normal map files (default png)")
    parser.add_argument("--headless", action="store_true", help="never open a window")
    parser.add_argument("--max-faces", type=int, default=1, metavar="K", help="faces per frame (default 1)")
    parser.add_argument("--frames", type=int, metavar="N", help="stop after N frames")
    parser.add_argument("--task", type=Path, help="MediaPipe Tasks face_landmarker.task file (instead of the bundled mesh)")
    parser.add_argument("--no-smoothing", action="store_true", help="raw landmarks (no One-Euro filter)")
    parser.add_argument("--no-flow", action="store_true",
                        help="landmark smoothing without following the face's image motion (facenormals.face_motion)")
    parser.add_argument("--plain-landmarks", action="store_true",
                        help="MediaPipe's landmarks as they come (default: steadied against light changes — the mesh "
                             "sees the frame with its smooth light divided out; facenormals.mesh_input)")
    parser.add_argument("--no-temporal", action="store_true",
                        help="raw per-frame normals (default for video: the temporal filter, facenormals.temporal; "
                             "image folders are never filtered)")
    parser.add_argument("--realtime", action="store_true",
                        help="replay a file source at its frame rate like a camera (drops frames when behind)")
    parser.add_argument("--threads", type=int, help="CPU threads for inference (default: physical cores)")
    parser.add_argument("--sync-keyframes", action="store_true",
                        help="live, reusing: a keyframe's frame waits for its own inference (default: it is shown "
                             "with the previous keyframe's output carried into its crop while its network runs, "
                             "for the frames after it: no frame waits for the network)")
    parser.add_argument("--infer-every", default="auto", metavar="auto|N",
                        help="run the network on a tracked face at least every N frames, reusing its last output "
                             "(carried into the new crop) while the face barely moves; 1: every frame; auto (default): "
                             "3 live (cameras, --realtime), 1 for files processed frame by frame, stills, the fit and "
                             "3d views and --save-mesh (facenormals.reuse); "
                             "while it reuses, ONNX Runtime on the CPU runs one thread unless --threads says otherwise")
    parser.add_argument("--report", type=Path, help="write the run report (JSON) here")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out/--report and the maps of an earlier run in --save-dir "
                             "(default: refuse; an input is never overwritten)")
    parser.add_argument("--calibration", type=Path, metavar="FILE",
                        help="calibration file (facenormals calibrate): the colour camera's intrinsics, distortion "
                             "removed, and the depth scale where the source has none")


def source_path(spec: str | None) -> Path | None:
    """The file or folder a source spec reads, if any (``video:clip.mp4`` → ``clip.mp4``)."""
    if not spec:
        return None
    kind, sep, rest = spec.partition(":")
    if sep and kind in PATH_SPECS and rest:
        return Path(rest)
    return Path(spec) if not sep or len(kind) == 1 else None  # a bare path (or a Windows drive letter)


def free_name(path: Path) -> Path:
    """``path`` if nothing is there, else the first free ``NAME-1.mp4``, ``NAME-2.mp4``, …"""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def check_outputs(args: argparse.Namespace, out: Path | None) -> None:
    """Every output location checked before a camera or model is opened: never an input, writable, and an existing
    file replaced only with --overwrite."""
    inputs = [source_path(args.source), args.model, args.calibration, args.task]
    if out is not None:
        check_output(out, "--out", overwrite=args.overwrite, inputs=inputs)
    if args.report is not None:
        check_output(args.report, "--report", overwrite=args.overwrite, inputs=[*inputs, out])
    if args.save_dir is not None:
        check_writable_dir(args.save_dir / "normals", "--save-dir")
    if args.save_mesh is not None:
        check_writable_dir(args.save_mesh, "--save-mesh")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.max_faces < 1:
        raise ValueError(f"--max-faces must be at least 1, got {args.max_faces}")
    if args.frames is not None and args.frames < 1:
        raise ValueError(f"--frames must be at least 1, got {args.frames}")
    from facenormals.calibration.calibfile import load_calibration
    from facenormals.fileio import check_model_file
    from facenormals.realtime.pipeline import PipelineError
    from facenormals.realtime.render import RenderState, get_view
    from facenormals.realtime.runner import (
        LoopParts,
        calibrated,
        default_infer_every,
        inference_threads,
        open_backend,
        open_run_source,
    )
    from facenormals.realtime.sinks import SaveDirSink, VideoSink, WindowSink, frame_number, has_display
    from facenormals.reuse import parse_infer_every

    get_view(args.view)  # an unavailable view fails before a camera or model is opened
    infer_every = parse_infer_every(args.infer_every)  # so does a bad --infer-every
    window = not args.headless and has_display()
    out = args.out
    if out is None and not window and args.save_dir is None and args.save_mesh is None:
        out = free_name(Path(DEFAULT_OUT))  # the default name never replaces an earlier run's video
        note = "" if out.name == DEFAULT_OUT else f" ({DEFAULT_OUT} exists and is kept)"
        print(f"facenormals run: no display; writing the annotated video to {out.resolve()}{note}", file=sys.stderr)
    check_outputs(args, out)
    if args.model is not None and Path(args.model).suffix:
        check_model_file(args.model)  # a file that is not a face-normal model fails here, not as a traceback
    calibration = load_calibration(args.calibration) if args.calibration else None  # a bad file fails first
    images = open_run_source(args.source, sample_frames=args.frames)  # keeps an image folder's file names
    still = bool(getattr(images, "still_images", False))
    name_of = (lambda result: images.name_of(result.frame.id)) if still else frame_number
    source = calibrated(images, calibration)
    with source:
        live = bool(getattr(source, "live", False)) or args.realtime
        every = (default_infer_every(still, args.view, args.save_mesh is not None, live=live) if infer_every is None
                 else infer_every)
        backend = open_backend(args.backend, args.model, inference_threads(args.backend, args.threads, every))
        precision = getattr(backend, "metadata", {}).get("precision", "fp32")
        print(f"facenormals run: backend {backend.name} ({precision}) on {', '.join(backend.providers)}; "
              f"source {source!r}", file=sys.stderr)
        state = RenderState(view=args.view)
        sinks: list = []
        if args.save_dir is not None:  # first: the maps of a frame are written even if the video sink fails on it
            sinks.append(SaveDirSink(args.save_dir, args.save_format, overwrite=args.overwrite, name_of=name_of))
            if sinks[-1].replaced:
                print(f"facenormals run: --overwrite: removed {sinks[-1].replaced} normal maps of an earlier run "
                      f"from {sinks[-1].folder}", file=sys.stderr)
        mesh_sink = None
        if args.save_mesh is not None:  # imported here: meshes need torch (the fusion solve), ~3 s of start-up
            from facenormals.realtime.mesh_sink import MeshSink

            mesh_sink = MeshSink(args.save_mesh, overwrite=args.overwrite, name_of=name_of, warm=not still)
            sinks.append(mesh_sink)
        if out is not None:
            video = VideoSink(out, fps=source.fps or 30.0)
            width, height = source.size
            video.check(width * VIEW_PANELS.get(args.view, 1), height)  # too large or unwritable: fail now
            sinks.append(video)
        if window:
            sinks.append(WindowSink(state))
        # stills (an image folder): no tracking, smoothing or temporal filter; --view fusion adds the fusion stage
        with LoopParts.build(source, backend, view=args.view, max_faces=args.max_faces, task_file=args.task,
                             smooth=not args.no_smoothing, temporal=not args.no_temporal, flow=not args.no_flow,
                             steady=not args.plain_landmarks, state=state, sinks=sinks, infer_every=every) as parts:
            pipeline = parts.pipeline(source, max_frames=args.frames,
                                      pace_fps=(source.fps or 30.0) if args.realtime else None,
                                      defer_keyframes=False if args.sync_keyframes else None)
            try:
                report = pipeline.run()
                code = 0
            except PipelineError as err:
                report, code = err.report, 1
                print(f"facenormals run: error: {err}", file=sys.stderr)
    print(f"facenormals run: {report.summary()}", file=sys.stderr)
    for sink in sinks:
        if isinstance(sink, VideoSink) and sink.finished:
            print(f"facenormals run: wrote {sink.frames} annotated frames to {sink.path.resolve()}", file=sys.stderr)
        if isinstance(sink, SaveDirSink):
            print(f"facenormals run: wrote {sink.frames} normal maps to {sink.folder.resolve()}", file=sys.stderr)
        if sink is mesh_sink:
            per_face = 1000 * sink.cpu_seconds / max(sink.meshes, 1)
            print(f"facenormals run: wrote {sink.meshes} refined face meshes (+ coarse) to {sink.folder.resolve()} "
                  f"({per_face:.1f} ms CPU a face; {sink.skipped} faces without a mesh)", file=sys.stderr)
    if still and getattr(images, "skipped", None):
        print(f"facenormals run: skipped {len(images.skipped)} unreadable images: "
              f"{', '.join(p.name for p in images.skipped)}", file=sys.stderr)
    if args.report is not None:
        write_text_atomic(args.report, json.dumps(report_json(report, backend.name), indent=2))
    return code  # a stop by Ctrl-C, SIGTERM or 'q' is a normal end: the outputs are complete


def report_json(report, backend: str) -> dict:
    from facenormals.realtime.bench import latency_summary, percentiles

    return {"backend": backend, "frames_in": report.frames_in, "frames": report.frames_out, "fps": report.fps,
            "dropped": report.dropped_total, "dropped_by_queue": report.dropped, "corrupt": report.corrupt,
            "stopped_by": report.stopped_by, "error": report.error, "faces_inferred": report.faces_inferred,
            "faces_reused": report.faces_reused, **latency_summary(report.records),
            # deferred keyframes: the network's time after each keyframe's frame (in no frame's latency)
            "deferred_keyframes": len(report.deferred_ms), "deferred_infer_ms": percentiles(report.deferred_ms)}
