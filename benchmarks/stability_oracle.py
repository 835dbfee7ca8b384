"""Where the sample's temporal deviation comes from: the crop, or the landmarks that place the prior? (issue 16)

    python -m facenormals.benchmarks.stability_oracle [--factor all|shift|rotation|scale|light|still] [--frames 90]
        [--no-flow] [--json out.json]

The sample clip (a still photo under a known motion) through the real detector (MediaPipe, One-Euro smoothing,
following the image unless ``--no-flow``) and the real network, one frame at a time with no temporal filter, while
parts of the input are swapped for **oracle** versions that follow the known motion exactly: the oracle landmarks
are the detector's landmarks mapped onto the photo, their median over the clip, mapped back into each frame (and
MediaPipe's depth the same way). Each variant's outputs are scored on the photo like the stability benchmark
(deviation from the temporal median, its fast / slow parts, frame-to-frame change):

* ``loop``: as the realtime loop (crop, prior and mask from the smoothed landmarks);
* ``crop oracle``: crop square and mask from the oracle landmarks, prior from the loop's;
* ``prior oracle``: the prior from the oracle landmarks and depth, crop and mask from the loop's;
* ``prior raw``: the prior from the raw (unsmoothed) landmarks;
* ``all oracle``: crop, mask and prior from the oracle landmarks;
* ``rolled crop`` / ``rolled crop, all oracle``: the crop turned with the face's in-plane rotation (the landmark
  similarity to the first frame), so the network sees an upright face; its normals' x/y rotated back.

``--lighting``: the stability benchmark's lighting pairs (one pose under the clip's two lighting extremes, each image
detected on its own) scored three ways — each image with its own landmarks (the benchmark's figure), both with the
first light's landmarks (only the pixels change), and the first light's pixels with each light's landmarks (only
the landmarks change) — and how far the two lights' landmarks lie apart.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from facenormals.atomic import write_text_atomic

VARIANTS = ("loop", "crop oracle", "prior oracle", "prior raw", "all oracle", "rolled crop", "rolled crop, all oracle")


def _rolled_matrix(landmarks: np.ndarray, first: np.ndarray, size: int) -> np.ndarray:
    """Frame → crop for a square crop turned with the face: centre of the landmark box, side of the first frame's
    box times the landmark similarity's scale, rotated by its angle."""
    from facenormals.geometry import SquareBox, crop_matrix, square_box
    from facenormals.temporal import compose, similarity

    motion = similarity(first, landmarks)
    box, first_box = square_box(landmarks), square_box(first)
    scale = float(np.hypot(motion[0, 0], motion[1, 0]))
    upright = cv2.getRotationMatrix2D((box.cx, box.cy), float(np.degrees(np.arctan2(motion[1, 0], motion[0, 0]))), 1.0)
    return compose(crop_matrix(SquareBox(box.cx, box.cy, first_box.side * scale), size), upright)


def run_variant(frames: list, faces: list, photo_to_frame: list, backend, crop_of: Callable, prior_of: Callable,
                rolled: bool = False) -> dict:
    """One variant over the clip: ``crop_of(i)`` landmarks for the crop and mask, ``prior_of(i)`` (landmarks, depth)."""
    from facenormals.geometry import crop_matrix, hull_mask, square_box, transform_points
    from facenormals.prior import prior_input
    from facenormals.realtime.stability import to_photo
    from facenormals.stability import deviation_from_median, fast_slow, frame_to_frame
    from facenormals.temporal import rotate_normals_xy

    size, source = backend.input_size, backend.prior_source
    channels = 7 if source else 3
    maps, fit = [], None
    for i, rgb in enumerate(frames):
        landmarks = crop_of(i)
        matrix = _rolled_matrix(landmarks, crop_of(0), size) if rolled else crop_matrix(square_box(landmarks), size)
        inputs = np.empty((1, channels, size, size), np.float32)
        inputs[0, :3] = cv2.warpAffine(rgb, matrix, (size, size), flags=cv2.INTER_LINEAR).transpose(2, 0, 1) / 255.0
        if source:
            _, fit = prior_input(*prior_of(i), matrix, size, source, out=inputs[0, 3:], previous=fit)
        normals = backend(inputs)[0]
        if rolled:  # crop axes → frame axes
            normals = rotate_normals_xy(normals, cv2.invertAffineTransform(matrix)[:, :2])
        mask = hull_mask(transform_points(landmarks, matrix), (size, size))
        maps.append(to_photo(normals, mask, matrix, photo_to_frame[i]))
    normals, valid = np.stack([m[0] for m in maps]), np.stack([m[1] for m in maps])
    deviation, _ = deviation_from_median(normals, valid)
    fast, slow = fast_slow(normals, valid)
    return {"deviation_deg": round(float(np.nanmean(deviation)), 3), "fast_deg": round(float(np.nanmean(fast)), 3),
            "slow_deg": round(float(np.nanmean(slow)), 3),
            "frame_to_frame_deg": round(float(np.nanmean(frame_to_frame(normals, valid))), 3)}


def measure(backend, factor: str, frames: int, flow: bool, variants: tuple[str, ...] = VARIANTS) -> dict:
    from facenormals.benchmarks.stability import factor_poses
    from facenormals.faces import create_detector
    from facenormals.geometry import transform_points
    from facenormals.realtime.sources.sample import frame_from_photo_matrix, render_pose_rgb

    poses = factor_poses(factor, frames)
    photo_to_frame = [frame_from_photo_matrix(p, 640, 480) for p in poses]
    clip = [render_pose_rgb(p, 640, 480, noise_index=i) for i, p in enumerate(poses)]
    detector = create_detector(1, flow=flow)
    try:
        faces = []
        for i, rgb in enumerate(clip):
            found = detector.detect(rgb, int(i * 1e9 / 30))
            if not found:
                raise RuntimeError(f"no face in frame {i} of the sample ({factor})")
            faces.append(found[0])
    finally:
        detector.close()
    back = [cv2.invertAffineTransform(m) for m in photo_to_frame]
    scales = [float(np.sqrt(abs(np.linalg.det(m[:, :2])))) for m in photo_to_frame]
    photo_landmarks = np.median(np.stack([transform_points(f.landmarks, b) for f, b in zip(faces, back, strict=True)]), 0)
    photo_depth = np.median(np.stack([f.depth / s for f, s in zip(faces, scales, strict=True)]), axis=0)
    oracle = [transform_points(photo_landmarks, m).astype(np.float32) for m in photo_to_frame]

    def loop(i):
        return faces[i].landmarks

    def oracle_lm(i):
        return oracle[i]

    def prior_loop(i):
        return faces[i].landmarks, faces[i].depth

    def prior_oracle(i):
        return oracle[i], (photo_depth * scales[i]).astype(np.float32)

    def prior_raw(i):
        return faces[i].raw_landmarks, faces[i].depth

    table = {"loop": (loop, prior_loop, False), "crop oracle": (oracle_lm, prior_loop, False),
             "prior oracle": (loop, prior_oracle, False), "prior raw": (loop, prior_raw, False),
             "all oracle": (oracle_lm, prior_oracle, False), "rolled crop": (loop, prior_loop, True),
             "rolled crop, all oracle": (oracle_lm, prior_oracle, True)}
    out = {}
    for name in variants:
        crop_of, prior_of, rolled = table[name]
        out[name] = run_variant(clip, faces, photo_to_frame, backend, crop_of, prior_of, rolled)
        print(f"{factor}, flow {'on' if flow else 'off'}, {name}: {out[name]}", flush=True)
    return out


def lighting(backend) -> dict:
    """Lighting pairs with the landmarks and the pixels swapped in turn (see the module)."""
    import dataclasses

    from facenormals.benchmarks.stability import LIGHT_POSES, LIGHTS
    from facenormals.faces import FaceMeshDetector
    from facenormals.geometry import crop_matrix, hull_mask, square_box, transform_points
    from facenormals.prior import prior_input
    from facenormals.realtime.sources.sample import frame_from_photo_matrix, render_pose_rgb, sample_pose
    from facenormals.realtime.stability import to_photo
    from facenormals.stability import pair_change

    size, source = backend.input_size, backend.prior_source
    detector = FaceMeshDetector(1, smoothing=None, still=True)  # each image on its own, as the benchmark's pairs
    cases = {"own landmarks": [], "first light's landmarks for both": [], "first light's pixels, own landmarks": []}
    apart = []

    def photo_normals(rgb, face, photo_to_frame):
        matrix = crop_matrix(square_box(face.landmarks), size)
        inputs = np.empty((1, 7 if source else 3, size, size), np.float32)
        inputs[0, :3] = cv2.warpAffine(rgb, matrix, (size, size), flags=cv2.INTER_LINEAR).transpose(2, 0, 1) / 255.0
        if source:
            prior_input(face.landmarks, face.depth, matrix, size, source, out=inputs[0, 3:])
        mask = hull_mask(transform_points(face.landmarks, matrix), (size, size))
        return to_photo(backend(inputs)[0], mask, matrix, photo_to_frame)

    try:
        for index in LIGHT_POSES:
            poses = [dataclasses.replace(sample_pose(index), gain=g, light_slope=k) for g, k in LIGHTS]
            images = [render_pose_rgb(p, noise_index=index) for p in poses]
            faces = [detector.detect(rgb, 0)[0] for rgb in images]
            matrix = frame_from_photo_matrix(poses[0], 640, 480)
            apart.append(float(np.linalg.norm(faces[0].landmarks - faces[1].landmarks, axis=1).mean()))
            for name, pair in (("own landmarks", ((0, 0), (1, 1))), ("first light's landmarks for both", ((0, 0), (1, 0))),
                               ("first light's pixels, own landmarks", ((0, 0), (0, 1)))):
                (a, va), (b, vb) = (photo_normals(images[i], faces[j], matrix) for i, j in pair)
                cases[name].append(pair_change(a, b, va, vb))
    finally:
        detector.close()
    out = {name: round(float(np.mean(v)), 3) for name, v in cases.items()}
    out["landmarks_apart_px"] = np.round(apart, 2).tolist()
    print(f"lighting pairs: {out}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--model")
    parser.add_argument("--factor", default="all", choices=("still", "light", "rotation", "scale", "shift", "all"))
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--no-flow", action="store_true", help="the detector's smoother without the image motion")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--lighting", action="store_true", help="the lighting pairs with landmarks / pixels swapped")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    from facenormals.export.prepare import create_backend
    from facenormals.runtime.backends import warm_up

    backend = create_backend(args.backend, args.model)
    warm_up(backend)
    results: dict = {"backend": backend.name, "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if args.lighting:
        results["lighting"] = lighting(backend)
    else:
        results.update({"factor": args.factor, "frames": args.frames, "flow": not args.no_flow,
                        "variants": measure(backend, args.factor, args.frames, not args.no_flow, tuple(args.variants))})
    if args.json:
        write_text_atomic(args.json, json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
