"""Temporal stability of the normals (issue 16): filter off vs on, through the real loop (MediaPipe, crops, backend).

    python -m facenormals.benchmarks.stability [--source sample|video:PATH] [--backend auto] [--model M]
        [--frames 90] [--json out.json] [--plot docs/stability.png]

Every frame is processed (file queues, no pacing), once with the temporal filter off and once on
(:mod:`facenormals.temporal`); figures from :class:`facenormals.realtime.stability.StabilityProbe`:

* every source: frame-to-frame change in landmark-aligned crop space, beside the landmark motion;
* ``sample`` (its motion is known exactly): the outputs mapped back onto the photo — mean deviation of each pixel
  from its temporal median, frame-to-frame change; plus
  - **lighting sensitivity**: the clip never shows one pose under two lights, so pairs are rendered with the clip's
    own renderer (:func:`render_pose_rgb`): the poses of frames 0, 15, 30, 45 under the clip's two lighting
    extremes (gain 1, light slope −0.25 vs gain 0.78, slope +0.25); each image detected on its own; the mean angle
    between the pair's normals on the photo. A property of the network (the filter does not change a steady state);
  - **lag**: the photo still for 12 frames, then a step of 15° in-plane rotation, 20 px, 1.1× scale; for each
    frame after it, the output read on the photo with the new transform vs with the old one, against the
    pre-step median; lag = frames until the new reading is the closer one (0 = follows at once).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from facenormals.atomic import write_text_atomic

STEP_AT, STEP_AFTER = 12, 12
LIGHTS = ((1.0, -0.25), (0.78, 0.25))  # (gain, light slope): the clip's extremes
LIGHT_POSES = (0, 15, 30, 45)


def run_sequence(frames, backend, temporal: bool, photo_of=None, max_faces: int = 1):
    """The real pipeline over ``frames`` (every frame), with a stability probe; returns (probe, report, filter ms)."""
    from facenormals.faces import create_detector
    from facenormals.realtime.pipeline import Pipeline
    from facenormals.realtime.stability import StabilityProbe
    from facenormals.temporal import TemporalFilter

    probe = StabilityProbe(0, photo_of)
    detector = create_detector(max_faces)
    try:
        pipeline = Pipeline(frames, detector, backend, lambda result, stats: result.frame.rgb, live=False, queue_size=2,
                            on_result=probe, handle_signals=False, temporal=TemporalFilter() if temporal else None)
        report = pipeline.run()
    finally:
        detector.close()
    filter_ms = [r.timings["temporal"] for r in report.records if "temporal" in r.timings]
    return probe, report, filter_ms


def synthetic_frames(poses, width: int = 640, height: int = 480, fps: float = 30.0):
    """Frames of the sample photo under ``poses``, stamped at ``fps``."""
    from facenormals.frame import Frame
    from facenormals.realtime.sources.sample import render_pose_rgb

    return [Frame(i, int(i * 1e9 / fps), render_pose_rgb(pose, width, height, noise_index=i)) for i, pose in enumerate(poses)]


def step_lag_figures(backend, temporal: bool) -> dict:
    """Lag after a step in (in-plane) head pose on a rendered sequence, in frames."""
    from facenormals.realtime.sources.sample import frame_from_photo_matrix, sample_pose
    from facenormals.realtime.stability import to_photo
    from facenormals.stability import deviation_from_median, pair_change, step_lag

    before = sample_pose(0)
    after = dataclasses.replace(before, angle_deg=15.0, shift=(before.shift[0] + 20.0, before.shift[1]), scale=1.1)
    poses = [before] * STEP_AT + [after] * STEP_AFTER
    matrices = [frame_from_photo_matrix(p, 640, 480) for p in poses]
    probe, _, _ = run_sequence(synthetic_frames(poses), backend, temporal, photo_of=lambda i: matrices[i])
    samples = max(probe.tracks.values(), key=len)
    old = [to_photo(s.normals, s.mask, s.matrix, matrices[0]) for s in samples]
    new = [to_photo(s.normals, s.mask, s.matrix, matrices[s.frame_id]) for s in samples]
    ids = [s.frame_id for s in samples]
    pre = [k for k, i in enumerate(ids) if STEP_AT - 8 <= i < STEP_AT]
    _, reference = deviation_from_median(np.stack([old[k][0] for k in pre]), np.stack([old[k][1] for k in pre]))
    ref_valid = np.linalg.norm(reference, axis=2) > 0.5
    post = [k for k, i in enumerate(ids) if i >= STEP_AT]
    to_new = np.array([pair_change(new[k][0], reference, new[k][1], ref_valid) for k in post])
    to_old = np.array([pair_change(old[k][0], reference, old[k][1], ref_valid) for k in post])
    return {"lag_frames": step_lag(to_new, to_old), "step": "15° in-plane rotation, 20 px, 1.1× scale",
            "to_new_deg": np.round(to_new, 2).tolist(), "to_old_deg": np.round(to_old, 2).tolist()}


def lighting_figures(backend) -> dict:
    """Mean angle between the normals of one pose under the clip's two lighting extremes (still detection)."""
    from facenormals.engine import FrameEngine
    from facenormals.faces import create_detector
    from facenormals.frame import Frame
    from facenormals.realtime.sources.sample import frame_from_photo_matrix, render_pose_rgb, sample_pose
    from facenormals.realtime.stability import to_photo
    from facenormals.stability import pair_change

    detector = create_detector(1, smooth=False)
    detector_still = type(detector)(1, smoothing=None, still=True)
    detector.close()
    engine = FrameEngine(backend, detector_still, warm_start=False)
    changes = []
    try:
        for index in LIGHT_POSES:
            maps = []
            for gain, slope in LIGHTS:
                pose = dataclasses.replace(sample_pose(index), gain=gain, light_slope=slope)
                result = engine.process(Frame(0, 0, render_pose_rgb(pose, noise_index=index)))
                face = result.face_results()[0]
                crop_normals = face.crop_normals.transpose(2, 0, 1)
                maps.append(to_photo(crop_normals, face.crop_mask, face.crop_matrix, frame_from_photo_matrix(pose, 640, 480)))
            changes.append(pair_change(maps[0][0], maps[1][0], maps[0][1], maps[1][1]))
    finally:
        detector_still.close()
    return {"mean_deg": round(float(np.mean(changes)), 3), "per_pose_deg": np.round(changes, 3).tolist(),
            "poses": list(LIGHT_POSES), "lights": [list(light) for light in LIGHTS]}


def measure(source: str, backend, frames: int, temporal: bool) -> dict:
    from facenormals.realtime.sources.base import open_source, parse_spec
    from facenormals.realtime.stability import sample_photo_of
    from facenormals.stability import summarise

    is_sample = parse_spec(source).kind in ("sample", "sample-rgbd")
    with open_source(source, **({"frames": frames} if is_sample else {})) as src:
        info = src.info
        clip = [f for _, f in zip(range(frames), src, strict=False)]
    photo_of = sample_photo_of(info.width, info.height, info.fps or 30.0) if is_sample else None
    probe, report, filter_ms = run_sequence(clip, backend, temporal, photo_of)
    figures = probe.summary()
    figures["frames"] = report.frames_out
    figures["filter_ms"] = summarise(np.array(filter_ms)) if temporal else None
    return figures


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    for label, colour in (("off", "#d6604d"), ("on", "#4393c3")):
        run = results[label]
        series = run.get("photo", {}).get("per_frame")
        if series:
            ax.plot(series["id"], series["deviation_deg"], color=colour, lw=1.2,
                    label=f"filter {label}: mean {run['photo']['deviation_from_median_deg']['mean']:.2f}°")
        else:
            per = run["per_frame"]
            ax.plot(per["id"], per["aligned_change_deg"], color=colour, lw=1.2,
                    label=f"filter {label}: mean {run['aligned_frame_to_frame_deg']['mean']:.2f}°")
    photo = "photo" in results["on"]
    ax.set(xlabel="frame", ylabel="deviation from temporal median (°)" if photo else "aligned frame-to-frame change (°)",
           title=f"{results['source']}, {results['model']} ({results['backend']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    from facenormals.atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default="sample")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--model")
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)
    from facenormals.export.prepare import create_backend
    from facenormals.runtime.backends import warm_up

    backend = create_backend(args.backend, args.model, **({"threads": args.threads} if args.threads else {}))
    warm_up(backend)
    model = args.model or getattr(backend, "metadata", {}).get("name") or "default"
    results: dict = {"source": args.source, "backend": backend.name, "model": str(model),
                     "precision": getattr(backend, "metadata", {}).get("precision", "fp32"),
                     "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    for label, on in (("off", False), ("on", True)):
        results[label] = measure(args.source, backend, args.frames, on)
        if args.source.startswith("sample"):
            results[label]["lag"] = step_lag_figures(backend, on)
    if args.source.startswith("sample"):
        results["lighting_sensitivity"] = lighting_figures(backend)
    else:
        results["lighting_sensitivity"] = "not measured: a real video has no frames that differ only in light"
    for label in ("off", "on"):
        run = results[label]
        line = (f"filter {label}: aligned frame-to-frame {run['aligned_frame_to_frame_deg']['mean']}° "
                f"(landmarks rigid {run['landmark_motion_rigid']['mean']} ‰, non-rigid "
                f"{run['landmark_motion_nonrigid']['mean']} ‰)")
        if "photo" in run:
            line += (f"; photo: deviation {run['photo']['deviation_from_median_deg']['mean']}°, frame to frame "
                     f"{run['photo']['frame_to_frame_deg']['mean']}°; lag {run['lag']['lag_frames']} frames")
        if run.get("filter_ms"):
            line += f"; filter {run['filter_ms']['mean']} ms/frame"
        print(line)
    if isinstance(results["lighting_sensitivity"], dict):
        print(f"lighting sensitivity: {results['lighting_sensitivity']['mean_deg']}°")
    if args.json:
        write_text_atomic(args.json, json.dumps(results, indent=2))
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot:
        plot(results, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
