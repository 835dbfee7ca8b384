"""Where the constants of ``facenormals.keypoint_pose`` come from: measured on training renders, never on val sets.

    python -m facenormals.benchmarks.profile_fallback_calibrate /work/datasets/ict_profile_v3:500 \\
        /work/datasets/ict_paired_v6:200 [--gates /work/datasets/ict_profile_v3:600] [--json OUT.json]

1. ``KEYPOINTS_CM``: for every render (``DIR:N``, its first N images) whose face the detection finds, the 6 keypoints
   and the render's true head rotation (params/NAME.json ``rotation_matrix``, the frame of ``IctFit.rotation``).
   Weak perspective ``u = s·R[:2]·X_k + t``: alternate per-face (s, t) and per-keypoint X_k, both linear least
   squares, reweighted by 1/√max(residual, 5 px). A shared shift and scale of all X_k are unobservable (t and s
   absorb them): the eyes, nose and mouth keypoints are anchored on the centroid and RMS spread of the ICT face's
   own landmarks for them (their surface points: iris centres 468, 473, nose tip 1, lips 13/14).
2. ``BOX_TO_CROP`` / ``BOX_OFFSET``: the rendered image is the data engine's crop (what the network trained on):
   its side and centre relative to the detection box, per |yaw| bin and (the constants) over the renders whose
   mesh failed (no stored landmarks); and, where the mesh found the face, the landmark square's side (the crop
   ``geometry.face_crop`` takes) relative to the box.
3. The gates (``--gates``, renders where the mesh failed): for detections the mesh rejects, on the face (box centre
   inside the true mask) or off it, the share kept by the keypoint rms, fitted |yaw| and score thresholds.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402 (after the thread limits: BLAS reads them at import)

FACE_LANDMARKS = (468, 473, 1, 13, 14)  # MediaPipe: iris centres, nose tip, inner lips (the anchor)


def _sets(specs: list[str]) -> list[tuple[Path, int]]:
    out = []
    for spec in specs:
        root, _, count = spec.rpartition(":")
        out.append((Path(root), int(count)))
    return out


def _on_face_boxes(finder: object, image: np.ndarray, mask: np.ndarray) -> list:
    rows, cols = np.nonzero(mask)
    return [b for b in finder.find_boxes(image) if abs(b.cx - cols.mean()) < b.side and abs(b.cy - rows.mean()) < b.side]


def collect(finder: object, sets: list[tuple[Path, int]]) -> dict[str, np.ndarray]:
    from facenormals.dataset import load_sample, scan_dataset
    from facenormals.geometry import square_box
    from facenormals.mesh_prior import read_stored_landmarks

    rotations, keypoints, ratio, offset, yaw, no_mesh, landmark_ratio = [], [], [], [], [], [], []
    for root, count in sets:
        for files in [f for f in scan_dataset(root) if f.image is not None][:count]:
            sample = load_sample(files)
            boxes = _on_face_boxes(finder, sample.image, sample.mask.astype(bool))
            if not boxes:
                continue
            box, side = boxes[0], sample.image.shape[0]
            params = json.loads((root / "params" / f"{files.name}.json").read_text())
            rotations.append(np.array(params["rotation_matrix"]))
            keypoints.append(np.stack([box.keypoints[:, 0], -box.keypoints[:, 1]], axis=1))  # y up
            ratio.append(side / box.side)
            offset.append((((side - 1) / 2 - box.cx) / box.side, ((side - 1) / 2 - box.cy) / box.side))
            yaw.append(abs(params["yaw_deg"]))
            landmarks = read_stored_landmarks(root, files.name)
            no_mesh.append(landmarks is None)
            landmark_ratio.append(np.nan if landmarks is None else  # the landmark square face_crop takes
                                  square_box(landmarks[:, :2] * np.array(sample.image.shape[1::-1])).side / box.side)
    return {"rotations": np.array(rotations), "keypoints": np.array(keypoints), "ratio": np.array(ratio),
            "offset": np.array(offset), "yaw": np.array(yaw), "no_mesh": np.array(no_mesh, dtype=bool),
            "landmark_ratio": np.array(landmark_ratio)}


def triangulate(rotations: np.ndarray, keypoints: np.ndarray, iterations: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """The keypoints on the model (6×3, cm, up to a shared shift and scale) and their median residual (px) per
    keypoint."""
    from facenormals.keypoint_pose import KEYPOINTS_CM

    count = len(rotations)
    points = KEYPOINTS_CM.copy()
    weights = np.ones((count, 6))
    residual = np.zeros((count, 6))
    for _ in range(iterations):
        projected = np.einsum("nij,kj->nki", rotations[:, :2], points)
        scale, shift = np.zeros(count), np.zeros((count, 2))
        for i in range(count):
            design = np.zeros((12, 3))
            design[:, 0], design[0::2, 1], design[1::2, 2] = projected[i].reshape(-1), 1.0, 1.0
            w = np.repeat(weights[i], 2)
            scale[i], *shift[i] = np.linalg.lstsq(design * w[:, None], keypoints[i].reshape(-1) * w, rcond=None)[0]
        for k in range(6):
            w = np.repeat(weights[:, k], 2)
            design = (scale[:, None, None] * rotations[:, :2]).reshape(-1, 3)
            points[k] = np.linalg.lstsq(design * w[:, None], (keypoints[:, k] - shift).reshape(-1) * w, rcond=None)[0]
        points -= points[:4].mean(axis=0)  # the unobservable shared shift: fixed by the anchor below
        residual = np.linalg.norm(scale[:, None, None] * np.einsum("nij,kj->nki", rotations[:, :2], points)
                                  + shift[:, None] - keypoints, axis=2)
        weights = 1.0 / np.sqrt(np.maximum(residual, 5.0))
    return points, np.median(residual, axis=0)


def anchor(points: np.ndarray) -> np.ndarray:
    """``points`` (6×3, up to a shared shift and scale) placed on the ICT face: the first 4 keypoints (eyes, nose,
    mouth) get the centroid and RMS spread of the ICT face's own landmarks for them."""
    from facenormals.ict_fit import load_ict_face

    face = load_ict_face()
    v = face.landmark_points(face.neutral.astype(np.float64))[list(FACE_LANDMARKS)]
    ict = np.array([v[0], v[1], v[2], (v[3] + v[4]) / 2])
    centre, ict_centre = points[:4].mean(axis=0), ict.mean(axis=0)
    spread = np.sqrt(((points[:4] - centre) ** 2).sum(axis=1).mean())
    ict_spread = np.sqrt(((ict - ict_centre) ** 2).sum(axis=1).mean())
    return (points - centre) * (ict_spread / spread) + ict_centre


def gates(finder: object, sets: list[tuple[Path, int]]) -> dict:
    from facenormals.dataset import load_sample, scan_dataset
    from facenormals.geometry import CROP_SIZE, crop_matrix
    from facenormals.keypoint_pose import detector_square, fit_keypoints, keypoints_in_crop
    from facenormals.mesh_prior import read_stored_landmarks

    found = {True: [], False: []}
    for root, count in sets:
        for files in [f for f in scan_dataset(root) if f.image is not None][:count]:
            if read_stored_landmarks(root, files.name) is not None:
                continue  # the mesh found this face
            sample = load_sample(files)
            mask = sample.mask.astype(bool)
            for box in finder.find_boxes(sample.image):
                if finder._mesh_in(sample.image, box) is not None:
                    continue
                x, y = round(box.cx), round(box.cy)
                on_face = bool(0 <= x < mask.shape[1] and 0 <= y < mask.shape[0] and mask[y, x])
                matrix = crop_matrix(detector_square(box.cx, box.cy, box.side), CROP_SIZE)
                fit = fit_keypoints(keypoints_in_crop(box.keypoints, matrix))
                found[on_face].append((fit.rms_px, abs(fit.euler_deg()[0]), box.score))
    on, off = (np.array(found[k]).reshape(-1, 3) for k in (True, False))
    out: dict = {"on_face": len(on), "off_face": len(off)}
    for name, column, limits, keep_below in (("rms_px", 0, (8, 10, 12, 15), True), ("abs_yaw_deg", 1, (20, 40, 45, 50), False),
                                              ("score", 2, (0.55, 0.6, 0.7), False)):
        for limit in limits:
            on_kept = on[:, column] <= limit if keep_below else on[:, column] >= limit
            off_kept = off[:, column] <= limit if keep_below else off[:, column] >= limit
            out[f"{name} {'<=' if keep_below else '>='} {limit}"] = {
                "on_face_kept": round(float(on_kept.mean()), 3) if len(on) else None, "off_face_kept": int(off_kept.sum())}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sets", nargs="+", help="DIR:N rendered sets with params/NAME.json (training renders)")
    parser.add_argument("--gates", nargs="*", default=[], help="DIR:N renders for the gate statistics")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    from facenormals.atomic import write_text_atomic
    from facenormals.faces import StillFaceDetector

    finder = StillFaceDetector(4)
    data = collect(finder, _sets(args.sets))
    points, residual = triangulate(data["rotations"], data["keypoints"])
    points = anchor(points)
    result: dict = {"faces": len(data["yaw"]), "keypoints_cm": np.round(points, 2).tolist(),
                    "median_residual_px": np.round(residual, 2).tolist(), "crop_by_abs_yaw": []}
    for lo, hi in ((0, 30), (30, 50), (50, 70), (70, 91)):
        inside = (data["yaw"] >= lo) & (data["yaw"] < hi)
        if inside.any():
            result["crop_by_abs_yaw"].append({"abs_yaw": f"{lo}–{min(hi, 90)}", "faces": int(inside.sum()),
                                              "crop_over_box": round(float(np.median(data["ratio"][inside])), 3),
                                              "landmark_square_over_box": round(float(np.nanmedian(
                                                  data["landmark_ratio"][inside])), 3),
                                              "offset_box_sides": np.round(np.median(data["offset"][inside], 0), 3).tolist()})
    result["crop_over_box_all"] = round(float(np.median(data["ratio"])), 3)
    result["crop_over_box_no_mesh"] = round(float(np.median(data["ratio"][data["no_mesh"]])), 3)  # BOX_TO_CROP
    result["offset_no_mesh"] = np.round(np.median(data["offset"][data["no_mesh"]], 0), 3).tolist()  # BOX_OFFSET
    if args.gates:
        result["gates"] = gates(finder, _sets(args.gates))
    print(json.dumps(result, indent=1))
    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
