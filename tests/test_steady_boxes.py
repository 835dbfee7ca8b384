"""The still detector's light-steadied boxes (facenormals.faces.steady_box, StillFaceDetector(steady_boxes=True)):
through real MediaPipe on the embedded sample photo under the sample clip's two lighting extremes, the box a small
face's mesh view is cut around moves less with the light, and so do the landmarks the detector returns."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from facenormals.faces import FaceBox, StillFaceDetector, steady_box
from facenormals.mesh_input import flatten_light
from facenormals.realtime.sources.sample import frame_from_photo_matrix, render_pose_rgb, sample_pose

SAMPLE_LIGHTS = ((1.0, -0.25), (0.78, 0.25))  # (gain, light slope): the sample clip's extremes
SAMPLE_POSES = (0, 15, 30, 45)


def _lit(index: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The sample pose ``index`` under each of the two lights: (frame, its photo-from-frame affine 2×3)."""
    out = []
    for gain, slope in SAMPLE_LIGHTS:
        pose = dataclasses.replace(sample_pose(index), gain=gain, light_slope=slope)
        out.append((render_pose_rgb(pose, noise_index=index), cv2.invertAffineTransform(
            frame_from_photo_matrix(pose, 640, 480))))
    return out


def test_steady_box_takes_the_matching_box_framing_only() -> None:
    keypoints = np.arange(12, dtype=np.float32).reshape(6, 2)
    box = FaceBox(100.0, 80.0, 50.0, 0.9, keypoints)
    match, elsewhere = FaceBox(102.0, 79.0, 48.0, 0.5), FaceBox(300.0, 80.0, 50.0, 0.99)
    steadied = steady_box(box, [elsewhere, match])
    assert (steadied.cx, steadied.cy, steadied.side) == (102.0, 79.0, 48.0)
    assert steadied.score == 0.9 and steadied.keypoints is keypoints  # the face's own detection otherwise
    assert steady_box(box, [elsewhere]) is box and steady_box(box, []) is box


def test_flattened_frame_boxes_move_less_with_the_sample_light() -> None:
    """The sample face (box ~0.3 of the frame: the small-face path) in 4 poses: between the two lights the box
    found on the flattened frame moves far less than the frame's own (measured 3.6 vs 0.4 px of side + centre here)."""
    detector = StillFaceDetector(1)
    moves: dict[str, list[float]] = {"frame": [], "steadied": []}
    try:
        for index in SAMPLE_POSES:
            boxes = {"frame": [], "steadied": []}
            for rgb, _ in _lit(index):
                box = detector.find_boxes(rgb)[0]
                boxes["frame"].append(box)
                boxes["steadied"].append(detector.steadied_box(flatten_light(rgb), box))
            for name, (a, b) in boxes.items():
                moves[name].append(abs(a.side - b.side) + float(np.hypot(a.cx - b.cx, a.cy - b.cy)))
    finally:
        detector.close()
    assert all(np.isfinite(m).all() for m in moves.values())
    assert np.mean(moves["steadied"]) < 0.5 * np.mean(moves["frame"]), moves


def test_still_detector_landmarks_move_less_with_steady_boxes() -> None:
    """The still detector's landmarks on the photo move less between the two lights when the mesh view is cut
    around the steadied box, and sit where the unsteadied detector puts them on average. What the API returns
    (the steadied box, then the mesh again on the paper crop's view) moves less than the unsteadied view too."""
    shifts, offsets = {}, []
    on_photo = {}
    for steady, paper_view in ((False, False), (True, False), (True, True)):
        detector = StillFaceDetector(1, steady_boxes=steady, paper_view=paper_view)
        try:
            per_pose = []
            for index in SAMPLE_POSES:
                points = []
                for rgb, back in _lit(index):
                    faces = detector.detect(rgb)
                    assert len(faces) == 1 and faces[0].source == "mesh", f"pose {index}"
                    points.append(faces[0].landmarks[:468].astype(np.float64) @ back[:, :2].T + back[:, 2])
                per_pose.append(points)
        finally:
            detector.close()
        on_photo[steady, paper_view] = per_pose
        shifts[steady, paper_view] = float(np.mean([np.linalg.norm(a - b, axis=1).mean() for a, b in per_pose]))
    for plain, steadied in zip(on_photo[False, False], on_photo[True, False], strict=True):
        offsets.append(np.linalg.norm(np.mean(steadied, axis=0) - np.mean(plain, axis=0), axis=1).mean())
    assert shifts[True, False] < 0.7 * shifts[False, False], shifts  # measured 0.13 → 0.06 px
    assert shifts[True, True] < 0.7 * shifts[False, False], shifts  # measured 0.13 → 0.056 px
    assert np.mean(offsets) < 0.3, offsets  # the same face, framed as before (measured 0.07 photo px)
