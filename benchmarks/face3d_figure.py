"""The paper's Fig. 11 for facenormals (issue 20): input | fitted ICT face | refined face, each from two viewpoints.

Rows: crops with stored MediaPipe landmarks (``facenormals data prior``) from dataset folders — real photos
(no ground truth) and rendered ICT faces. The coarse mesh is the ICT face fitted to the landmarks, the refined
one its depth refined by the shipped network's normals (:mod:`facenormals.face3d`); both drawn by ``--view 3d``'s
renderer (orthographic z-buffer, Lambert) from a light at the upper left, frontal and turned 40° about the vertical.

    python -m facenormals.benchmarks.face3d_figure --image /work/datasets/photos_image_only:obama_f0 \\
        --image /work/datasets/photos_image_only:single_face_f0 --image /work/datasets/val_ict_v2:ict_000002 \\
        --out docs/face3d.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from facenormals import face3d, ict_fit, mesh_prior, prior
from facenormals.fileio import read_rgb, write_rgb
from facenormals.geometry import hull_mask

LIGHT = np.array([-0.4, 0.5, 0.77])
TILE = 256


def render(mesh: face3d.Mesh, yaw_deg: float, px_per_m: float, size: int = TILE) -> np.ndarray:
    """``--view 3d``'s renderer (orthographic z-buffer, Lambert) of a metric mesh turned by ``yaw_deg``: RGB uint8."""
    from facenormals.realtime.view3d import render_mesh, turn_matrix

    image, _ = render_mesh(mesh, turn_matrix(yaw_deg, 0.0), LIGHT / np.linalg.norm(LIGHT), size, span_m=size / px_per_m)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def row(root: Path, name: str, backend, face: ict_fit.IctFace) -> np.ndarray:
    image = read_rgb(root / "images" / f"{name}.png")
    size = image.shape[0]
    landmarks = mesh_prior.read_stored_landmarks(root, name)
    if landmarks is None:
        raise SystemExit(f"{root}:{name}: no stored landmarks")
    points = mesh_prior.landmarks_in_crop(landmarks, image.shape, prior.IDENTITY)
    fit = ict_fit.fit_landmarks(points, face)
    rgb = image.transpose(2, 0, 1)[None].astype(np.float32) / 255.0
    if backend.prior_source is not None:  # from the model's metadata, not its channel count
        normals_p, coverage_p = prior.stored_prior(root, name, image.shape, backend.prior_source)
        rgb = np.concatenate([rgb, normals_p.transpose(2, 0, 1)[None], coverage_p[None, None]], axis=1)
    network = np.ascontiguousarray(backend(rgb.astype(np.float32))[0].transpose(1, 2, 0))
    hull = hull_mask(points[:, :2] * [1, -1], (size, size))
    result = face3d.face_3d(fit, network, hull, face=face)
    px_per_m = 0.8 * fit.scale * 100 * TILE / size
    tiles = [cv2.resize(image, (TILE, TILE), interpolation=cv2.INTER_AREA)]
    for yaw in (0.0, 40.0):
        # the coarse mesh is trimmed to the refined one's extent (the ICT head's rim and eyeballs left out)
        tiles += [render(trim(result.coarse_mesh, result.mesh), yaw, px_per_m), render(result.mesh, yaw, px_per_m)]
    return np.concatenate(tiles, axis=1)


def trim(mesh: face3d.Mesh, like: face3d.Mesh) -> face3d.Mesh:
    """The faces of ``mesh`` whose vertices all lie within ``like``'s x/y extent and not behind its depth range."""
    lo, hi = like.vertices.min(axis=0), like.vertices.max(axis=0)
    inside = np.all((mesh.vertices[:, :2] >= lo[:2]) & (mesh.vertices[:, :2] <= hi[:2]), axis=1)
    inside &= mesh.vertices[:, 2] >= lo[2] - 0.005
    keep = inside[mesh.faces].all(axis=1)
    return face3d.Mesh(mesh.vertices, mesh.faces[keep], mesh.normals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", action="append", required=True, metavar="DATASET:NAME")
    parser.add_argument("--model", help="checkpoint; default: the shipped model")
    parser.add_argument("--out", type=Path, default=Path("docs/face3d.png"))
    args = parser.parse_args()
    from facenormals.export.prepare import create_backend

    torch.set_num_threads(1)
    backend = create_backend("torch", args.model)
    face = ict_fit.load_ict_face()
    rows = []
    for spec in args.image:
        root, _, name = spec.rpartition(":")
        rows.append(row(Path(root), name, backend, face))
    header = np.full((28, rows[0].shape[1], 3), 255, np.uint8)
    for i, label in enumerate(("input", "fitted ICT face", "refined", "fitted, 40 deg", "refined, 40 deg")):
        cv2.putText(header, label, (i * TILE + 8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    write_rgb(args.out, np.concatenate([header, *rows], axis=0))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
