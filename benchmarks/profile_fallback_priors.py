"""Which crop, prior and mask a face the mesh misses should get (the detector-only face, ``facenormals.keypoint_pose``).

    python -m facenormals.benchmarks.profile_fallback_priors /work/datasets/val_profile [--limit N] [--json OUT.json]

Per image whose face the face detection finds on the whole 256² render (its best box near the true face), split
by whether the dataset has stored MediaPipe landmarks: the shipped network's mean angle to the truth over the
whole true mask (the network's crop normals pasted back without a mask), for

* crops: ``S`` the dataset's stored crop (the ideal framing: the image itself), ``L`` the detection box scaled
  1.24× and raised 0.04 sides (the landmark square's relation to the box), ``E`` 1.46× (the training crops'
  relation, shipped: :data:`~facenormals.keypoint_pose.BOX_TO_CROP`), ``W`` 1.60×;
* priors: ``Z`` the all-zero prior (shipped), ``P`` the ICT mean face posed on the 6 keypoints
  (:func:`~facenormals.keypoint_pose.fit_keypoints`), drawn like the ``ict-fit`` prior, ``O`` (stored crop
  only) the same face with the *true* head rotation (scale and shift fitted to the keypoints): an upper bound
  for a better pose from the same keypoints;
* each posed prior alone (no network; ``*_alone``);
* mask candidates on the ``E`` crop: the posed face's landmark hull (shipped), its drawn coverage, the
  detection box and an ellipse in it: share of the true mask covered and share of the candidate inside it.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402 (after the thread limits: BLAS reads them at import)

SIZE = 256
CROPS = {"L": (1.24, (0.0, -0.04)), "E": (1.46, (0.0, 0.0)), "W": (1.60, (0.0, 0.0))}
IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def posed_prior(fit: object) -> tuple[np.ndarray, np.ndarray]:
    """A posed ICT face as a prior on a SIZE² crop (drawn at the crop's size; ``ict-fit``'s smoothing)."""
    from facenormals.ict_fit import load_ict_face
    from facenormals.prior import draw_ict

    return draw_ict(fit, load_ict_face(), SIZE, SIZE)


def error_over_mask(crop_normals: np.ndarray, matrix: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """Mean angle (degrees) over the whole true mask of crop normals pasted back into the image."""
    from facenormals.geometry import paste_back
    from facenormals.metrics import masked_errors

    pasted, _ = paste_back(crop_normals, np.ones((SIZE, SIZE), bool), matrix, mask.shape)
    return float(masked_errors(np.nan_to_num(pasted), truth, mask).mean())


def oracle_fit(rotation: np.ndarray, keypoints_crop: np.ndarray, like: object) -> object:
    """The mean face with a given rotation, scale and shift fitted linearly to the keypoints."""
    from facenormals.ict_fit import IctFit
    from facenormals.keypoint_pose import KEYPOINTS_CM

    projected = KEYPOINTS_CM @ rotation[:2].T
    design = np.zeros((12, 3))
    design[:, 0], design[0::2, 1], design[1::2, 2] = projected.reshape(-1), 1.0, 1.0
    scale, tx, ty = np.linalg.lstsq(design, keypoints_crop.reshape(-1), rcond=None)[0]
    return IctFit(rotation, float(scale), np.array([tx, ty, 0.0]), like.identity, like.expression, 0.0)


def mask_scores(candidate: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    inside = float((candidate & mask).sum())
    return inside / mask.sum(), inside / max(candidate.sum(), 1)


def box_masks(box: object, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    square, ellipse = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    x0, y0 = round(box.cx - box.side / 2), round(box.cy - box.side / 2)
    cv2.rectangle(square, (x0, y0), (x0 + round(box.side) - 1, y0 + round(box.side) - 1), 1, -1)
    cv2.ellipse(ellipse, (round(box.cx), round(box.cy)), (round(box.side / 2), round(box.side * 0.575)), 0, 0, 360, 1, -1)
    return {"box": square > 0, "ellipse": ellipse > 0}


def measure_image(sample: object, params: dict, finder: object, backend: object) -> dict | None:
    from facenormals.geometry import crop_matrix, hull_mask
    from facenormals.keypoint_pose import detector_square, fit_keypoints, keypoints_in_crop, posed_landmarks

    image, truth, mask = sample.image, sample.normals, sample.mask.astype(bool)
    rows, cols = np.nonzero(mask)
    boxes = [b for b in finder.find_boxes(image)
             if abs(b.cx - cols.mean()) < b.side and abs(b.cy - rows.mean()) < b.side]
    if not boxes:
        return None
    box, row, inputs, names = boxes[0], {}, [], []
    matrices = {"S": IDENTITY, **{k: crop_matrix(detector_square(box.cx, box.cy, box.side, r, o), SIZE)
                                   for k, (r, o) in CROPS.items()}}
    for crop_name, matrix in matrices.items():
        rgb = cv2.warpAffine(image, matrix, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        keypoints = keypoints_in_crop(box.keypoints, matrix)
        fit = fit_keypoints(keypoints)
        priors = {"Z": (np.zeros((SIZE, SIZE, 3), np.float32), np.zeros((SIZE, SIZE), bool)), "P": posed_prior(fit)}
        if crop_name == "S":
            truth_rotation = np.array(params["rotation_matrix"])
            priors["O"] = posed_prior(oracle_fit(truth_rotation, keypoints, fit))
            row["yaw_error_deg"] = abs(fit.euler_deg()[0] - float(np.degrees(np.arctan2(truth_rotation[0, 2],
                                                                                          truth_rotation[2, 2]))))
        for prior_name, (normals, coverage) in priors.items():
            if prior_name != "Z":
                row[f"{crop_name}{prior_name}_alone"] = error_over_mask(normals, matrix, truth, mask)
            inputs.append(np.concatenate([rgb.transpose(2, 0, 1).astype(np.float32) / 255.0,
                                          normals.transpose(2, 0, 1), coverage[None].astype(np.float32)]))
            names.append((f"{crop_name}{prior_name}", matrix))
        if crop_name == "E":
            candidates = {"hull": hull_mask(posed_landmarks(fit, matrix), mask.shape), **box_masks(box, mask.shape)}
            drawn = cv2.warpAffine(priors["P"][1].astype(np.float32), cv2.invertAffineTransform(matrix),
                                   mask.shape[::-1], flags=cv2.INTER_LINEAR)
            candidates["coverage"] = drawn > 0.5
            for name, candidate in candidates.items():
                row[f"mask_{name}_covers"], row[f"mask_{name}_inside"] = mask_scores(candidate, mask)
    outputs = backend(np.stack(inputs))
    for (name, matrix), normals in zip(names, outputs, strict=True):
        row[name] = error_over_mask(normals.transpose(1, 2, 0), matrix, truth, mask)
    return row


def summarise(rows: list[dict]) -> dict:
    keys = sorted({k for r in rows for k in r if isinstance(r[k], float)})
    return {k: {"mean": round(float(np.mean([r[k] for r in rows])), 3),
                "median": round(float(np.median([r[k] for r in rows])), 3)} for k in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    from facenormals.atomic import write_text_atomic
    from facenormals.dataset import load_sample, scan_dataset
    from facenormals.faces import StillFaceDetector
    from facenormals.mesh_prior import read_stored_landmarks
    from facenormals.runtime.backends import create_backend

    backend, finder = create_backend("auto"), StillFaceDetector(4)
    files = [f for f in scan_dataset(args.folder) if f.image is not None and f.normals is not None]
    files = files[: args.limit] if args.limit else files
    parts: dict[str, list[dict]] = {"no_landmarks": [], "with_landmarks": []}
    counts = {"no_landmarks": 0, "with_landmarks": 0}
    for f in files:
        part = "with_landmarks" if read_stored_landmarks(args.folder, f.name) is not None else "no_landmarks"
        counts[part] += 1
        params = json.loads((args.folder / "params" / f"{f.name}.json").read_text())
        row = measure_image(load_sample(f), params, finder, backend)
        if row is not None:
            parts[part].append(row)
    result = {"folder": str(args.folder), "backend": type(backend).__name__}
    for part, rows in parts.items():
        result[part] = {"images": counts[part], "with_detection": len(rows), **summarise(rows)}
        print(f"{part}: {counts[part]} images, detection on {len(rows)}")
        for key, value in result[part].items():
            if isinstance(value, dict):
                print(f"  {key:22s} mean {value['mean']:7.3f}  median {value['median']:7.3f}")
    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
