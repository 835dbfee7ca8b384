"""Temporal stability of the normals (issue 16): filter off vs on, through the real loop (MediaPipe, crops, backend).

    python -m facenormals.benchmarks.stability [--source sample|video:PATH] [--backend auto] [--model M]
        [--frames 90] [--decompose] [--no-flow | --compare-flow] [--plain-landmarks] [--json out.json]
        [--plot docs/stability.png] [--cost-only]

Every frame goes through the real loop once (MediaPipe, crops, the backend; file queues, no pacing) with the temporal
filter off, and the network's raw per-face outputs are kept; they are then replayed into
:class:`facenormals.realtime.stability.StabilityProbe` as they are (filter off) and through a fresh
:class:`facenormals.temporal.TemporalFilter` (filter on). The filter sits after inference and feeds nothing back, so
the replay gives exactly what the loop would — and times the filter per face on one core (process CPU time with
OpenCV on one thread: a figure that moves less with what else runs on the machine than wall time; ``facenormals
bench`` reports its wall time in the loop as stage ``temporal``). File frames are stamped at the source's frame rate,
as a camera would stamp them. Figures:

* every source: frame-to-frame change in landmark-aligned crop space, beside the landmark motion;
* ``sample`` (its motion is known exactly): the outputs mapped back onto the photo — mean deviation of each pixel
  from its temporal median, frame-to-frame change; plus
  - **lighting sensitivity**: the clip never shows one pose under two lights, so pairs are rendered with the clip's
    own renderer (:func:`render_pose_rgb`): the poses of frames 0, 15, 30, 45 under the clip's two lighting
    extremes (gain 1, light slope −0.25 vs gain 0.78, slope +0.25); each image detected on its own; the mean angle
    between the pair's normals on the photo. A property of the network and of the landmarks (the filter does not
    change a steady state); measured with the default light-steadied landmarks (:mod:`facenormals.mesh_input`) and,
    beside them, with MediaPipe's plain ones (``--plain-landmarks`` measures everything with plain ones);
  - **lag**: the photo still for 12 frames, then a step of 15° in-plane rotation, 20 px, 1.1× scale; for each
    frame after it, the output read on the photo with the new transform vs with the old one, against the
    pre-step median; lag = frames until the new reading is the closer one (0 = follows at once).
* the landmark smoother's image-motion following (:mod:`facenormals.face_motion`, on by default as in
  ``facenormals run``): ``--no-flow`` measures without it, ``--compare-flow`` measures both (the second under
  ``"without_flow"``), and its cost per face (process CPU time, OpenCV on one thread, on the recorded frames);
  ``--cost-only`` times that and the face mesh per frame, plain vs steadied against light;
* ``--decompose`` (``sample``): where the deviation comes from — the clip re-rendered with one factor moving at a time
  (nothing but sensor noise; only the light; only the rotation; only the scale; only the shift), each scored like
  the clip, filter off and on; and the clip's deviation split into its fast part (each frame against a centred
  7-frame average: what a temporal filter can remove) and its slow part (that average against the median: systematic
  changes that follow the pose and the light, a property of the network).
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


def record_outputs(frames, backend, max_faces: int = 1, flow: bool = True, infer_every: int = 1,
                   steady: bool = True) -> list:
    """The real pipeline over ``frames`` (every frame), filter off; returns each frame's result with the network's raw
    per-face outputs (copies: crop buffers are reused by the loop; no pixels kept). ``flow``: the landmark smoother
    follows the faces' image motion. ``infer_every``: the loop's motion-adaptive inference rate
    (:mod:`facenormals.reuse`; 1: the network on every frame). ``steady``: light-steadied landmarks
    (:mod:`facenormals.mesh_input`)."""
    from facenormals.engine import FrameResult
    from facenormals.faces import create_detector
    from facenormals.frame import Frame
    from facenormals.geometry import Crop
    from facenormals.realtime.pipeline import Pipeline
    from facenormals.reuse import ReusePolicy

    kept: list[FrameResult] = []
    no_pixels = np.zeros((1, 1, 3), np.uint8)

    def keep(result: FrameResult) -> None:
        crops = tuple(Crop(no_pixels, c.mask.copy(), c.matrix.copy(), c.box) for c in result.crops)
        normals = None if result.crop_normals is None else result.crop_normals.copy()
        kept.append(FrameResult(Frame(result.frame.id, result.frame.t_capture_ns, no_pixels), list(result.faces),
                                crops, normals, reused=result.reused))

    detector = create_detector(max_faces, flow=flow, steady=steady)
    try:
        Pipeline(frames, detector, backend, lambda result, stats: result.frame.rgb, live=False, queue_size=2,
                 on_result=keep, handle_signals=False, temporal=None,
                 reuse=ReusePolicy(every=infer_every) if infer_every > 1 else None).run()
    finally:
        detector.close()
    return kept


def replay(recorded: list, temporal, photo_of=None):
    """The recorded outputs into a stability probe, through ``temporal`` (a TemporalFilter, or None = off).
    Returns (probe, per-face filter CPU ms — the process's, OpenCV on one thread — and per-face filter wall ms)."""
    import cv2

    from facenormals.realtime.stability import StabilityProbe

    probe = StabilityProbe(0, photo_of)
    cpu_ms, wall_ms = [], []
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # the cost on one core: the process CPU time then counts every thread the filter uses
    try:
        _replay_into(recorded, temporal, probe, cpu_ms, wall_ms)
    finally:
        cv2.setNumThreads(threads)
    return probe, cpu_ms, wall_ms


def _replay_into(recorded: list, temporal, probe, cpu_ms: list, wall_ms: list) -> None:
    for result in recorded:
        result = dataclasses.replace(result, frame=dataclasses.replace(result.frame, timings={}),
                                     crop_normals=None if result.crop_normals is None else result.crop_normals.copy())
        if temporal is not None:
            c0, w0 = time.process_time(), time.perf_counter()
            temporal(result)
            if len(result.crops):
                cpu_ms.append((time.process_time() - c0) * 1000.0 / len(result.crops))
                wall_ms.append((time.perf_counter() - w0) * 1000.0 / len(result.crops))
        probe(result)


def synthetic_frames(poses, width: int = 640, height: int = 480, fps: float = 30.0, noise_index: int | None = None):
    """Frames of the sample photo under ``poses``, stamped at ``fps`` (sensor noise: frame i's draw, or one draw)."""
    from facenormals.frame import Frame
    from facenormals.realtime.sources.sample import render_pose_rgb

    return [Frame(i, int(i * 1e9 / fps), render_pose_rgb(pose, width, height, noise_index=i if noise_index is None
                                                          else noise_index)) for i, pose in enumerate(poses)]


def step_sequence(backend, flow: bool = True, infer_every: int = 1, steady: bool = True) -> tuple[list, list]:
    """The step sequence's recorded outputs and its photo → frame matrices."""
    from facenormals.realtime.sources.sample import frame_from_photo_matrix, sample_pose

    before = sample_pose(0)
    after = dataclasses.replace(before, angle_deg=15.0, shift=(before.shift[0] + 20.0, before.shift[1]), scale=1.1)
    poses = [before] * STEP_AT + [after] * STEP_AFTER
    return (record_outputs(synthetic_frames(poses), backend, flow=flow, infer_every=infer_every, steady=steady),
            [frame_from_photo_matrix(p, 640, 480) for p in poses])


def step_lag_figures(recorded: list, matrices: list, temporal) -> dict:
    """Lag after a step in (in-plane) head pose on a rendered sequence, in frames."""
    from facenormals.realtime.stability import to_photo
    from facenormals.stability import deviation_from_median, pair_change, step_lag

    probe, _, _ = replay(recorded, temporal, photo_of=lambda i: matrices[i])
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


def lighting_figures(backend, steady: bool = True, mirror: bool = True) -> dict:
    """Mean angle between the normals of one pose under the clip's two lighting extremes (still detection, as the
    API treats a photo; ``steady``: light-steadied landmarks, :mod:`facenormals.mesh_input`; ``mirror``: outputs
    averaged with the mirror image's, :mod:`facenormals.mirror_average`)."""
    from facenormals.engine import FrameEngine
    from facenormals.faces import create_detector
    from facenormals.frame import Frame
    from facenormals.realtime.sources.sample import frame_from_photo_matrix, render_pose_rgb, sample_pose
    from facenormals.realtime.stability import to_photo
    from facenormals.stability import pair_change

    detector = create_detector(1, smooth=False)
    detector_still = type(detector)(1, smoothing=None, still=True, steady=steady)
    detector.close()
    engine = FrameEngine(backend, detector_still, warm_start=False, mirror=mirror)
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
            "poses": list(LIGHT_POSES), "lights": [list(light) for light in LIGHTS], "steady_landmarks": steady,
            "mirror_averaged": mirror}


SWITCH_AT = 10  # tracked lighting: frames under the first light before the switch (and after it)


def tracked_lighting_figures(backend, flow: bool, temporal, infer_every: int = 1, steady: bool = True) -> dict:
    """Lighting sensitivity in a video: each of the poses held still while the light switches between the clip's
    extremes (``SWITCH_AT`` frames each; one sensor-noise draw, so nothing else changes), through the real loop with
    the tracked, smoothed detector (``flow``) and ``temporal``. The mean angle on the photo between the last frame
    before the switch and the first after it (``at_switch``), and the last frame after it (``settled``)."""
    from facenormals.realtime.sources.sample import frame_from_photo_matrix, sample_pose
    from facenormals.realtime.stability import to_photo
    from facenormals.stability import pair_change

    at_switch, settled = [], []
    for index in LIGHT_POSES:
        poses = [dataclasses.replace(sample_pose(index), gain=gain, light_slope=slope)
                 for gain, slope in LIGHTS for _ in range(SWITCH_AT)]
        matrix = frame_from_photo_matrix(poses[0], 640, 480)
        recorded = record_outputs(synthetic_frames(poses, noise_index=index), backend, flow=flow, steady=steady,
                                  infer_every=infer_every)
        probe, _, _ = replay(recorded, temporal, photo_of=lambda _, m=matrix: m)
        samples = {s.frame_id: s for s in max(probe.tracks.values(), key=len)}
        maps = {i: to_photo(samples[i].normals, samples[i].mask, samples[i].matrix, matrix)
                for i in (SWITCH_AT - 1, SWITCH_AT, 2 * SWITCH_AT - 1) if i in samples}
        before = maps.get(SWITCH_AT - 1)
        for key, out in ((SWITCH_AT, at_switch), (2 * SWITCH_AT - 1, settled)):
            if before is not None and key in maps:
                out.append(pair_change(before[0], maps[key][0], before[1], maps[key][1]))
    return {"at_switch_deg": round(float(np.mean(at_switch)), 3), "settled_deg": round(float(np.mean(settled)), 3),
            "frames_per_light": SWITCH_AT, "poses": list(LIGHT_POSES)}


def figures_of(probe, cpu_ms: list, wall_ms: list, temporal: bool) -> dict:
    """The probe's summary, the photo deviation's fast/slow split (sample), and the filter's per-face cost."""
    from facenormals.stability import fast_slow, summarise

    figures = probe.summary()
    if "photo" in figures:
        _, normals, valid = probe.photo_maps()
        fast, slow = fast_slow(normals, valid)
        figures["photo"]["fast_deg"], figures["photo"]["slow_deg"] = summarise(fast), summarise(slow)
    figures["filter_cpu_ms_per_face"] = summarise(np.array(cpu_ms)) if temporal else None
    figures["filter_wall_ms_per_face"] = summarise(np.array(wall_ms)) if temporal else None
    return figures


def read_clip(source: str, frames: int) -> tuple[list, object]:
    """Up to ``frames`` frames of ``source``, stamped as a camera would, and the source's info."""
    from facenormals.realtime.sources.base import open_source, parse_spec

    is_sample = parse_spec(source).kind in ("sample", "sample-rgbd")
    with open_source(source, **({"frames": frames} if is_sample else {})) as src:
        info = src.info
        clip = [f for _, f in zip(range(frames), src, strict=False)]
    # stamped as a camera would (the source stamps the time it was read: a file reads in a burst, and the landmark
    # smoother and the filter would see 100+ FPS — smoothing far too much; that inflated session 3's figures)
    fps = info.fps or 30.0
    return [dataclasses.replace(f, t_capture_ns=int(i * 1e9 / fps)) for i, f in enumerate(clip)], info


def detected(clip: list) -> list:
    """The clip's faces from the loop's detector (smoothed, following the image), one per frame, without the network
    (``--cost-only``): objects with the ``faces`` that :func:`flow_cost` reads."""
    from types import SimpleNamespace

    from facenormals.faces import create_detector

    detector = create_detector(1)
    try:
        return [SimpleNamespace(faces=detector.detect(frame.rgb, frame.t_capture_ns)) for frame in clip]
    finally:
        detector.close()


def flow_cost(clip: list, recorded: list) -> dict:
    """CPU ms per face of following the faces' image motion (grey conversion + :func:`face_motion`), replayed on
    the clip's frames and the recorded smoothed landmarks, OpenCV on one thread (process CPU time)."""
    import cv2

    from facenormals.face_motion import TRACK_LANDMARKS, face_motion, to_gray
    from facenormals.stability import summarise

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    cpu_ms, failed, prev_gray, prev_faces = [], 0, None, []
    try:
        for frame, result in zip(clip, recorded, strict=True):
            c0 = time.process_time()
            gray = to_gray(frame.rgb)
            for face in prev_faces[:1] if len(result.faces) else []:
                follow = face.landmarks[list(TRACK_LANDMARKS)]
                failed += face_motion(prev_gray, gray, face.landmarks, follow=follow) is None
            if prev_faces and len(result.faces):
                cpu_ms.append((time.process_time() - c0) * 1000.0)
            prev_gray, prev_faces = gray, result.faces
    finally:
        cv2.setNumThreads(threads)
    return {"cpu_ms_per_face": summarise(np.array(cpu_ms)), "not_measured": failed}


def mesh_cost(clip: list, steady: bool, mirror: bool | None = None) -> dict:
    """CPU ms per frame of the face mesh in tracking mode (``FaceMesh.find``: MediaPipe's graph threads included,
    process CPU time, OpenCV on one thread) on the clip, plain or light-steadied, with or without the mirror
    pass (``--cost-only``)."""
    import cv2

    from facenormals.faces import FaceMesh
    from facenormals.stability import summarise

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    cpu_ms = []
    try:
        with FaceMesh(still=False, steady=steady, mirror=mirror) as face_mesh:
            for k, frame in enumerate(clip):
                c0 = time.process_time()
                face_mesh.find(frame.rgb)
                if k >= 5:  # the first frames detect and warm up
                    cpu_ms.append((time.process_time() - c0) * 1000.0)
    finally:
        cv2.setNumThreads(threads)
    return summarise(np.array(cpu_ms))


def landmark_offset(recorded: list) -> dict:
    """How far the smoothed landmarks (what the crop and the prior are drawn from) sit from the raw ones, per frame:
    mean distance in ‰ of the face size (lag shows here on fast motion), and the mean offset of their centroid
    (a crop that trails the face)."""
    from facenormals.stability import summarise

    mean, centroid = [], []
    for result in recorded:
        for face in result.faces[:1]:
            side = float(np.ptp(face.raw_landmarks, axis=0).max()) or 1.0
            gap = np.asarray(face.landmarks, np.float64) - np.asarray(face.raw_landmarks, np.float64)
            mean.append(1000.0 * np.linalg.norm(gap, axis=1).mean() / side)
            centroid.append(1000.0 * np.linalg.norm(gap.mean(axis=0)) / side)
    return {"mean_permille": summarise(np.array(mean)), "centroid_permille": summarise(np.array(centroid))}


def measure(source: str, backend, frames: int, flow: bool = True, infer_every: int = 1,
            steady: bool = True) -> tuple[dict, dict]:
    """(filter off, filter on) figures of ``frames`` frames of ``source``; with ``infer_every`` > 1 also how far the
    reused outputs sit from the network's own on the same frames (``reuse``)."""
    from facenormals.realtime.sources.base import parse_spec
    from facenormals.realtime.stability import sample_photo_of
    from facenormals.temporal import TemporalFilter

    clip, info = read_clip(source, frames)
    is_sample = parse_spec(source).kind in ("sample", "sample-rgbd")
    photo_of = sample_photo_of(info.width, info.height, info.fps or 30.0) if is_sample else None
    recorded = record_outputs(clip, backend, flow=flow, infer_every=infer_every, steady=steady)
    out = []
    for temporal in (None, TemporalFilter()):
        figures = figures_of(*replay(recorded, temporal, photo_of), temporal is not None)
        figures["frames"] = len(recorded)
        out.append(figures)
    out[0]["smoothed_vs_raw_landmarks"] = landmark_offset(recorded)
    if infer_every > 1:
        fresh = record_outputs(clip, backend, flow=flow, steady=steady)
        out[0]["reuse"] = reuse_error(recorded, fresh)
        out[1]["reuse"] = reuse_error(filtered(recorded), filtered(fresh))
    if flow:
        out[0]["flow"] = out[1]["flow"] = flow_cost(clip, recorded)
    return out[0], out[1]


def filtered(recorded: list) -> list:
    """The recorded outputs through a fresh temporal filter (copies)."""
    from facenormals.temporal import TemporalFilter

    temporal = TemporalFilter()
    return [temporal(dataclasses.replace(result, frame=dataclasses.replace(result.frame, timings={}),
                                         crop_normals=None if result.crop_normals is None else result.crop_normals.copy()))
            for result in recorded]


def reuse_error(reused: list, fresh: list) -> dict:
    """Mean angle (degrees, over each face's crop mask) between the loop's outputs with reuse and the network's own
    on the same frames (the same landmarks and crops: the detector sees the same frames), on the frames that reused
    and over all frames; and the share of faces reused."""
    from facenormals.stability import summarise

    on_reused, on_all, faces, reused_faces = [], [], 0, 0
    for a, b in zip(reused, fresh, strict=True):
        if a.crop_normals is None or b.crop_normals is None:
            continue
        for i, (crop_a, crop_b) in enumerate(zip(a.crops, b.crops, strict=True)):
            mask = crop_a.mask & crop_b.mask
            cos = np.clip(np.einsum("chw,chw->hw", a.crop_normals[i], b.crop_normals[i])[mask], -1.0, 1.0)
            angle = float(np.degrees(np.arccos(cos)).mean()) if cos.size else 0.0
            was_reused = bool(a.reused[i]) if i < len(a.reused) else False
            on_all.append(angle)
            faces += 1
            if was_reused:
                on_reused.append(angle)
                reused_faces += 1
    return {"vs_network_deg_reused_frames": summarise(np.array(on_reused)) if on_reused else None,
            "vs_network_deg_all_frames": summarise(np.array(on_all)), "faces": faces, "faces_reused": reused_faces}


FACTORS = ("still", "light", "rotation", "scale", "shift", "all")


def factor_poses(factor: str, frames: int) -> list:
    """The clip's poses with only ``factor`` moving (``still``: pose 0 throughout, only the sensor noise changes)."""
    from facenormals.realtime.sources.sample import sample_pose

    base = sample_pose(0)
    moving = {"still": (), "light": ("gain", "light_slope"), "rotation": ("angle_deg",), "scale": ("scale",),
              "shift": ("shift",), "all": ("angle_deg", "shift", "scale", "gain", "light_slope")}[factor]
    return [dataclasses.replace(base, **{name: getattr(sample_pose(i), name) for name in moving}) for i in range(frames)]


def decompose(backend, frames: int, flow: bool = True, steady: bool = True) -> dict:
    """Deviation from the temporal median with one factor of the clip moving at a time, filter off and on."""
    from facenormals.realtime.sources.sample import frame_from_photo_matrix
    from facenormals.temporal import TemporalFilter

    out = {}
    for factor in FACTORS:
        poses = factor_poses(factor, frames)
        matrices = [frame_from_photo_matrix(p, 640, 480) for p in poses]
        recorded = record_outputs(synthetic_frames(poses), backend, flow=flow, steady=steady)
        row = {}
        for label, temporal in (("off", None), ("on", TemporalFilter())):
            photo = figures_of(*replay(recorded, temporal, matrices.__getitem__), False)["photo"]
            row[label] = {k: photo[k]["mean"] for k in ("deviation_from_median_deg", "fast_deg", "slow_deg",
                                                          "frame_to_frame_deg")}
        out[factor] = row
        print(f"decompose {factor}: off {row['off']}, on {row['on']}", flush=True)
    return out


def _runs(results: dict) -> list[tuple[str, dict, str, str]]:
    """(label, run, colour, line style) of each measured combination of image-motion following and filter."""
    sets = [(results, results.get("flow", True))]
    if "without_flow" in results:
        sets.append((results["without_flow"], False))
    out = []
    for runs, flow in sets:
        for label, colour in (("off", "#d6604d"), ("on", "#4393c3")):
            out.append((f"{'flow' if flow else 'no flow'}, filter {label}", runs[label], colour, "-" if flow else ":"))
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = results.get("decomposition")
    if parts:
        fig, (ax, bars) = plt.subplots(1, 2, figsize=(12, 3.6), gridspec_kw={"width_ratios": [3, 2]})
    else:
        fig, ax = plt.subplots(figsize=(7.5, 3.4))
    for label, run, colour, style in _runs(results):
        series = run.get("photo", {}).get("per_frame")
        if series:
            ax.plot(series["id"], series["deviation_deg"], color=colour, ls=style, lw=1.2,
                    label=f"{label}: mean {run['photo']['deviation_from_median_deg']['mean']:.2f}°")
        else:
            per = run["per_frame"]
            ax.plot(per["id"], per["aligned_change_deg"], color=colour, ls=style, lw=1.2,
                    label=f"{label}: mean {run['aligned_frame_to_frame_deg']['mean']:.2f}°")
    photo = "photo" in results["on"]
    ax.set(xlabel="frame", ylabel="deviation from temporal median (°)" if photo else "aligned frame-to-frame change (°)",
           title=f"{results['source']}, {results['model']} {results.get('precision', '')} ({results['backend']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if parts:
        columns = [("no flow, filter off", results.get("without_flow", {}).get("decomposition"), "off", "#d6604d"),
                   ("no flow, filter on", results.get("without_flow", {}).get("decomposition"), "on", "#f4a582"),
                   ("flow, filter off", parts, "off", "#92c5de"), ("flow, filter on", parts, "on", "#4393c3")]
        columns = [c for c in columns if c[1]]
        names = list(parts)
        x = np.arange(len(names))
        width = 0.8 / len(columns)
        for k, (label, table, key, colour) in enumerate(columns):
            bars.bar(x + (k - (len(columns) - 1) / 2) * width, [table[n][key]["deviation_from_median_deg"] for n in names],
                     width, color=colour, label=label)
        bars.set_xticks(x, names, fontsize=8)
        bars.set(ylabel="deviation from median (°)", title="one factor of the clip at a time")
        bars.grid(alpha=0.3, axis="y")
        bars.legend(fontsize=7)
    fig.tight_layout()
    from facenormals.atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def measure_all(args: argparse.Namespace, backend, flow: bool) -> dict:
    """Filter off and on (with the step lag on the sample), and ``--decompose``'s table, for one landmark setting."""
    out: dict = {"flow": flow, "steady_landmarks": not args.plain_landmarks}
    every, steady = args.infer_every, not args.plain_landmarks
    out["off"], out["on"] = measure(args.source, backend, args.frames, flow, every, steady)
    if args.source.startswith("sample"):
        from facenormals.temporal import TemporalFilter

        recorded, matrices = step_sequence(backend, flow, every, steady)
        out["off"]["lag"] = step_lag_figures(recorded, matrices, None)
        out["on"]["lag"] = step_lag_figures(recorded, matrices, TemporalFilter())
        out["off"]["tracked_lighting"] = tracked_lighting_figures(backend, flow, None, every, steady)
        out["on"]["tracked_lighting"] = tracked_lighting_figures(backend, flow, TemporalFilter(), every, steady)
        if args.decompose:
            out["decomposition"] = decompose(backend, args.frames, flow, steady)
    return out


def print_runs(runs: dict, title: str) -> None:
    for label in ("off", "on"):
        run = runs[label]
        line = (f"{title}filter {label}: aligned frame-to-frame {run['aligned_frame_to_frame_deg']['mean']}° "
                f"(landmarks rigid {run['landmark_motion_rigid']['mean']} ‰, non-rigid "
                f"{run['landmark_motion_nonrigid']['mean']} ‰)")
        if "photo" in run:
            line += (f"; photo: deviation {run['photo']['deviation_from_median_deg']['mean']}° (fast "
                     f"{run['photo']['fast_deg']['mean']}°, slow {run['photo']['slow_deg']['mean']}°), frame to frame "
                     f"{run['photo']['frame_to_frame_deg']['mean']}°; lag {run['lag']['lag_frames']} frames; light "
                     f"switch {run['tracked_lighting']['at_switch_deg']}° → settled {run['tracked_lighting']['settled_deg']}°")
        if run.get("filter_cpu_ms_per_face"):
            line += (f"; filter {run['filter_cpu_ms_per_face']['mean']} CPU ms/face "
                     f"(p95 {run['filter_cpu_ms_per_face']['p95']}; wall {run['filter_wall_ms_per_face']['mean']})")
        if run.get("reuse"):
            reuse = run["reuse"]
            on_reused = reuse["vs_network_deg_reused_frames"]
            line += (f"; reused {reuse['faces_reused']} / {reuse['faces']} faces, "
                     f"{on_reused['mean'] if on_reused else '—'}° from the network's own on those frames "
                     f"(p95 {on_reused['p95'] if on_reused else '—'})")
        if label == "off":
            gap = run["smoothed_vs_raw_landmarks"]
            line += (f"; smoothed − raw landmarks {gap['mean_permille']['mean']} ‰ (p95 {gap['mean_permille']['p95']}, "
                     f"centroid {gap['centroid_permille']['mean']} ‰)")
        if run.get("flow") and label == "off":
            cost = run["flow"]["cpu_ms_per_face"]
            line += f"; image motion {cost['mean']} CPU ms/face (p95 {cost['p95']})"
        print(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default="sample")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--model")
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--infer-every", type=int, default=1, metavar="N",
                        help="the loop's motion-adaptive inference rate (facenormals.reuse; default 1: every frame); "
                             "> 1 also scores the reused outputs against the network's own")
    parser.add_argument("--decompose", action="store_true", help="sample: one factor of the clip at a time")
    flow = parser.add_mutually_exclusive_group()
    flow.add_argument("--no-flow", action="store_true", help="landmark smoothing without the faces' image motion")
    flow.add_argument("--compare-flow", action="store_true", help="also measure without it (under without_flow)")
    parser.add_argument("--plain-landmarks", action="store_true",
                        help="MediaPipe's landmarks as they come (default: steadied against light, facenormals.mesh_input)")
    parser.add_argument("--cost-only", action="store_true",
                        help="only time the image-motion step per face (no network; for an idle machine)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)
    if args.cost_only:
        clip, _ = read_clip(args.source, args.frames)
        for attempt in range(3):  # the first pass warms caches
            cost = flow_cost(clip, detected(clip))["cpu_ms_per_face"]
            print(f"pass {attempt + 1}: image motion {cost['mean']} CPU ms/face (p95 {cost['p95']}, n {cost['n']})")
        for attempt in range(2):
            plain, steady = mesh_cost(clip, steady=False), mesh_cost(clip, steady=True)
            mirrored = mesh_cost(clip, steady=True, mirror=True)
            print(f"pass {attempt + 1}: face mesh (tracking) {plain['mean']} CPU ms/frame (p95 {plain['p95']}) plain, "
                  f"{steady['mean']} (p95 {steady['p95']}) steadied against light (the loop's default), "
                  f"{mirrored['mean']} (p95 {mirrored['p95']}) also averaged with the mirror image")
        return 0
    from facenormals.export.prepare import create_backend
    from facenormals.runtime.backends import warm_up

    backend = create_backend(args.backend, args.model, **({"threads": args.threads} if args.threads else {}))
    warm_up(backend)
    model = args.model or getattr(backend, "metadata", {}).get("name") or "default"
    results: dict = {"source": args.source, "backend": backend.name, "model": str(model),
                     "precision": getattr(backend, "metadata", {}).get("precision", "fp32"),
                     "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    results.update(measure_all(args, backend, flow=not args.no_flow))
    if args.compare_flow:
        results["without_flow"] = measure_all(args, backend, flow=False)
    if args.source.startswith("sample"):
        # still images: no smoothing, no flow; both landmark settings (the default steadies them against light)
        results["lighting_sensitivity"] = lighting_figures(backend, steady=not args.plain_landmarks)
        results["lighting_sensitivity_single_pass"] = lighting_figures(backend, steady=not args.plain_landmarks,
                                                                       mirror=False)
        if not args.plain_landmarks:
            results["lighting_sensitivity_plain_landmarks"] = lighting_figures(backend, steady=False, mirror=False)
    else:
        results["lighting_sensitivity"] = "not measured: a real video has no frames that differ only in light"
    print_runs(results, "flow on, " if results["flow"] else "flow off, ")
    if "without_flow" in results:
        print_runs(results["without_flow"], "flow off, ")
    if isinstance(results["lighting_sensitivity"], dict):
        print(f"lighting sensitivity: {results['lighting_sensitivity']['mean_deg']}° "
              f"(one network pass {results['lighting_sensitivity_single_pass']['mean_deg']}°"
              + (f", plain landmarks and one pass {results['lighting_sensitivity_plain_landmarks']['mean_deg']}°"
                 if "lighting_sensitivity_plain_landmarks" in results else "") + ")")
    if args.json:
        write_text_atomic(args.json, json.dumps(results, indent=2))
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot:
        plot(results, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
