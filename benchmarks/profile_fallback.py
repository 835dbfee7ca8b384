"""Faces the face mesh misses (profiles): what the API returns for them, before and after the detector-only fallback.

    python -m facenormals.benchmarks.profile_fallback DIR [DIR ...] [--no-fallback] [--limit N] [--json OUT.json]

The API path as a user runs it: ``FaceNormals()`` (the shipped model, the default backend, the
:class:`~facenormals.faces.StillFaceDetector`) on each dataset image as a whole (the sets' images are 256² renders
with ground-truth normals and masks). Per set, and on ``val_profile``-style sets split by whether the dataset has
stored MediaPipe landmarks for the image (the mesh found the face on the crop):

* ``found``: images where a returned face's mask overlaps the ground-truth mask (the best-overlapping face is the
  one scored), ``missed`` the others; ``false_faces``: returned faces that overlap no ground-truth pixel;
* ``mean_deg``: mean over found images of the per-image mean angle to the truth over (truth mask ∩ face mask);
* ``coverage``: mean over *all* images of the share of truth-mask pixels that get a normal (a miss counts 0);
* ``detector_only``: found faces that came from the face detection alone (no mesh; ``FaceResult.source``).

``--no-fallback``: the detector as before (faces whose mesh fails are dropped).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402 (after the thread limits: BLAS reads them at import)


def score_image(faces: list, truth: np.ndarray, mask: np.ndarray) -> dict:
    """One image's faces against its truth: the best-overlapping face's error and coverage, false faces."""
    from facenormals.metrics import masked_errors

    overlaps = [int((face.mask & mask).sum()) for face in faces]
    false_faces = sum(1 for o in overlaps if o == 0)
    if not faces or max(overlaps) == 0:
        return {"found": False, "coverage": 0.0, "false_faces": false_faces}
    best = faces[int(np.argmax(overlaps))]
    inside = best.mask & mask
    errors = masked_errors(np.nan_to_num(best.normals), truth, inside)
    return {"found": True, "coverage": float(inside.sum() / mask.sum()), "mean_deg": float(errors.mean()),
            "source": getattr(best, "source", "mesh"), "false_faces": false_faces}


def summarise(rows: list[dict]) -> dict:
    found = [r for r in rows if r["found"]]
    return {"images": len(rows), "found": len(found), "missed": len(rows) - len(found),
            "false_faces": int(sum(r["false_faces"] for r in rows)),
            "detector_only": sum(1 for r in found if r["source"] == "detector"),
            "mean_deg": round(float(np.mean([r["mean_deg"] for r in found])), 3) if found else None,
            "coverage": round(float(np.mean([r["coverage"] for r in rows])), 4) if rows else None}


def measure(folder: Path, api: object, limit: int) -> dict:
    from facenormals.dataset import load_sample, scan_dataset
    from facenormals.mesh_prior import read_stored_landmarks

    files = [f for f in scan_dataset(folder) if f.image is not None and f.normals is not None]
    if limit:
        files = files[:limit]
    rows = []
    t0 = time.perf_counter()
    for f in files:
        sample = load_sample(f)
        row = score_image(api(sample.image), sample.normals, sample.mask.astype(bool))
        row["name"] = f.name
        row["landmarks"] = read_stored_landmarks(folder, f.name) is not None
        rows.append(row)
    result = {"folder": str(folder), "all": summarise(rows), "seconds": round(time.perf_counter() - t0, 1)}
    if not all(r["landmarks"] for r in rows):
        result["with_landmarks"] = summarise([r for r in rows if r["landmarks"]])
        result["no_landmarks"] = summarise([r for r in rows if not r["landmarks"]])
    result["per_image"] = [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", type=Path, nargs="+")
    parser.add_argument("--no-fallback", action="store_true", help="drop faces whose mesh fails (the old detector)")
    parser.add_argument("--limit", type=int, default=0, help="first N images of each set (0: all)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    from facenormals.api import FaceNormals
    from facenormals.atomic import write_text_atomic
    from facenormals.faces import StillFaceDetector

    detector = StillFaceDetector(4, fallback=not args.no_fallback)
    results = []
    with FaceNormals(detector=detector) as api:
        print(f"backend {type(api.backend).__name__}, prior {api.prior_source}, fallback {not args.no_fallback}")
        for folder in args.folders:
            res = measure(folder, api, args.limit)
            results.append(res)
            for part in ("all", "with_landmarks", "no_landmarks"):
                if part in res:
                    s = res[part]
                    err = f"{s['mean_deg']:.2f}°" if s["mean_deg"] is not None else "—"
                    print(f"{folder.name:12s} {part:15s} {s['images']:4d} images: found {s['found']:4d} "
                          f"(detector-only {s['detector_only']}), missed {s['missed']:3d}, false {s['false_faces']}, "
                          f"error {err} over found, coverage {100 * s['coverage']:.1f} %")
    if args.json:
        write_text_atomic(args.json, json.dumps({"fallback": not args.no_fallback, "sets": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
