"""Plausibility of broader ICT identities and of the detail field (issue 14): the figures and contact sheet behind
``facenormals data render --identity-scale/--detail-mm``.

    python -m facenormals.benchmarks.identity_plausibility [--faces 30] [--sheet docs/identity_scale_sheet.jpg]

For fixed identity scales (N(0, 1)·s, neutral expression, no fold bound) and detail amplitudes, on ``--faces``
random identities: the share of face triangles turned over against the neutral head (a self-intersection proxy),
whether MediaPipe finds a face on a frontal grey render (landmark detectability) and how well its outline matches
the mesh's (IoU of the FACE_OVAL hulls), and for the detail the change of the face's triangle normals. The last
row is the sampling ict_paired_v4 uses (s uniform in 1–1.6 under the fold bound, detail ≤ 2 mm). The sheet shows
the first 8 faces of every row (rows: scales, then detail amplitudes, then the v4 sampling).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import cv2  # noqa: E402 (after the thread limits)
import numpy as np  # noqa: E402

from facenormals.faces import FaceMesh  # noqa: E402
from facenormals.geometry import hull_mask  # noqa: E402
from facenormals.training.data import ict  # noqa: E402
from facenormals.training.data.sources import FACE_OVAL_LANDMARKS, IctSource, frontal_render  # noqa: E402


def _angles_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.degrees(np.arccos(np.clip(np.sum(a * b, axis=1), -1, 1)))


def measure_row(source: IctSource, landmarker: FaceMesh, faces: int, scale: float | None, detail_mm: float,
                thumbs: list[np.ndarray]) -> dict:
    model = source.model
    face_tris = model.faces[model.face_region == ict.FACE]
    found, ious, folds, dev_mean, dev_p99, kept = 0, [], [], [], [], []
    for i in range(faces):
        rng = np.random.default_rng([4242, i])
        if scale is None:  # the v4 sampling: drawn scale, fold bound, detail peak uniform in [0, 2] mm
            s = float(rng.uniform(*source.identity_scale))
            shape = model.sample(rng, identity_scale=s, p_active=0.0)
            s = source.keep_plausible(shape, s) if s > 1.0 else s
        else:
            s = scale
            shape = model.sample(rng, identity_scale=s, p_active=0.0)
        kept.append(s)
        verts = shape.vertices
        if detail_mm > 0 or scale is None:
            if scale is None:
                verts, _peak = source.add_detail(verts, rng)
            else:
                d = source.detail.sample(rng, detail_mm) / 10.0
                verts = verts + ict_normals(model, verts) * d[:, None]
            moved = np.abs(verts - shape.vertices).max(1)[face_tris].max(1) > 0
            ang = _angles_deg(_tri(verts, face_tris), _tri(shape.vertices, face_tris))[moved]
            dev_mean.append(float(ang.mean()))
            dev_p99.append(float(np.percentile(ang, 99)))
        folds.append(model.folded_share(verts))
        image, xy, _frags, _front = frontal_render(verts, model.faces, None, None, None, None, size=384)
        hits = [f.points for f in landmarker.find(image)]
        if hits:
            found += 1
            a = hull_mask(hits[0][list(FACE_OVAL_LANDMARKS)], image.shape[:2])
            b = hull_mask(xy[np.array(ict.FACE_OVAL)], image.shape[:2])
            ious.append(float((a & b).sum() / max((a | b).sum(), 1)))
        if i < 8:
            thumbs.append(cv2.resize(image, (160, 160), interpolation=cv2.INTER_AREA))
    row = {"scale": scale if scale is not None else "v4: U[1, 1.6] + fold bound", "detail_mm": detail_mm,
           "mean_scale_kept": round(float(np.mean(kept)), 3), "mediapipe_found": found / faces,
           "oval_iou_mean": round(float(np.mean(ious)), 3) if ious else None,
           "oval_iou_min": round(float(np.min(ious)), 3) if ious else None,
           "folded_mean_pct": round(100 * float(np.mean(folds)), 3), "folded_max_pct": round(100 * max(folds), 3)}
    if dev_mean:
        row.update(normal_change_mean_deg=round(float(np.mean(dev_mean)), 2),
                   normal_change_p99_deg=round(float(np.mean(dev_p99)), 2))
    return row


def _tri(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    return np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])


def ict_normals(model: ict.IctModel, verts: np.ndarray) -> np.ndarray:
    from facenormals.training.data.renderer import vertex_normals

    return vertex_normals(verts, model.faces)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=30)
    parser.add_argument("--sheet", type=Path, default=None, help="write the contact sheet (PNG) here")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    source = IctSource(None, identity_scale=(1.0, 1.6), detail_mm=2.0)
    landmarker = FaceMesh(max_faces=1)
    rows, sheet = [], []
    plan = [(s, 0.0) for s in (1.0, 1.3, 1.6, 2.0, 2.5)] + [(1.0, d) for d in (1.0, 2.0, 3.0)] + [(None, 2.0)]
    try:
        for scale, detail_mm in plan:
            thumbs: list[np.ndarray] = []
            row = measure_row(source, landmarker, args.faces, scale, detail_mm, thumbs)
            rows.append(row)
            sheet.append(np.hstack(thumbs))
            print(json.dumps(row, ensure_ascii=False), flush=True)
    finally:
        landmarker.close()
    if args.sheet:
        args.sheet.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(args.sheet), cv2.cvtColor(np.vstack(sheet), cv2.COLOR_RGB2BGR))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
