"""Real photos, no ground truth: what each model and the mesh baseline predict, side by side, in one PNG.

    python -m facenormals.benchmarks.photo_comparison --data /work/datasets/photos_image_only \\
        --model fast=facenormals/weights/fast.safetensors --model fast-prior=facenormals/weights/fast-prior.safetensors \\
        --out docs/photo_comparison.png --exclude single_face multi_face [--count 6]

Columns: the crop, the ``mediapipe-mesh`` baseline (MediaPipe's mesh normals on the crop, beyond the mesh the
nearest mesh normal), then each model; normals are drawn as (n+1)/2 inside the crop's mask, black outside. A
last column shows, for the last model, its angle to the mesh baseline (0° black → 30° white): where it adds detail
to the coarse mesh, or departs from it. Crops are picked one per source first (a photo, a video: the name without
its ``_fNNNNN`` frame and ``_fN`` face suffixes), then round-robin, so one long video does not fill the figure.
``--exclude``: sources left out — for a figure that is published, the shared photos and video whose provenance is
unknown (``single_face``, ``multi_face``; ``../shared/data/README.md``).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import cv2
import numpy as np

from facenormals.conventions import angular_error_deg
from facenormals.dataset import SampleKind, load_sample, scan_dataset
from facenormals.fileio import write_rgb
from facenormals.training.evaluation import fill_uncovered, load_predictor

TILE = 144
LABEL_HEIGHT = 22


def source_of(name: str) -> str:
    """A crop's source (photo or video): its name without the ``_fNNNNN`` frame and ``_fN`` face suffixes.

    >>> source_of("WolfgangLanger_Pexels_f00042_f0"), source_of("obama_f0")
    ('WolfgangLanger_Pexels', 'obama')
    """
    return re.sub(r"(_f\d{5})?(_f\d+)?$", "", name)


def round_robin_by_source(files: list) -> list:
    """Files reordered: the first of every source, then the second of every source, …"""
    sources: dict[str, list] = {}
    for f in files:
        sources.setdefault(source_of(f.name), []).append(f)
    queues = [iter(group) for group in sources.values()]
    ordered: list = []
    while queues:
        for queue in list(queues):
            item = next(queue, None)
            if item is None:
                queues.remove(queue)
            else:
                ordered.append(item)
    return ordered


def normals_tile(normals: np.ndarray, mask: np.ndarray) -> np.ndarray:
    rgb = np.clip((normals + 1.0) * 127.5, 0, 255).astype(np.uint8)
    return np.where(mask[..., None], rgb, 0).astype(np.uint8)


def difference_tile(a: np.ndarray, b: np.ndarray, mask: np.ndarray, top_deg: float = 30.0) -> np.ndarray:
    angle = np.nan_to_num(angular_error_deg(a, b), nan=0.0)
    grey = np.clip(angle / top_deg * 255.0, 0, 255).astype(np.uint8)
    return np.where(mask[..., None], np.repeat(grey[..., None], 3, axis=2), 0).astype(np.uint8)


def labelled(tile: np.ndarray, text: str) -> np.ndarray:
    tile = cv2.resize(tile, (TILE, TILE), interpolation=cv2.INTER_AREA)
    bar = np.full((LABEL_HEIGHT, TILE, 3), 255, np.uint8)
    cv2.putText(bar, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([bar, tile])


def mesh_baseline(image: np.ndarray, face_mesh: object) -> np.ndarray | None:
    from facenormals.mesh_prior import mesh_normals_for_crop

    normals, coverage, found = mesh_normals_for_crop(image, face_mesh)
    return fill_uncovered(normals, coverage) if found and coverage.any() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m facenormals.benchmarks.photo_comparison",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="dataset folder of real crops (images/, masks/)")
    parser.add_argument("--model", action="append", required=True, metavar="NAME=CKPT")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--count", type=int, default=6)
    parser.add_argument("--exclude", nargs="+", default=[], metavar="SOURCE",
                        help="sources to leave out (a crop's name without its frame and face suffixes)")
    args = parser.parse_args(argv)
    models = []
    for spec in args.model:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--model expects NAME=CKPT, got {spec!r}")
        models.append((name, load_predictor(path)))
    files = [f for f in scan_dataset(args.data) if f.kind in (SampleKind.IMAGE_ONLY, SampleKind.PAIRED)
             and source_of(f.name) not in args.exclude]
    if not files:
        raise SystemExit(f"{args.data}: no crops with an image (after --exclude {' '.join(args.exclude)})")
    picks = round_robin_by_source(files)[: args.count]

    from facenormals.mesh_prior import create_face_mesh

    rows = []
    with create_face_mesh() as face_mesh:
        for files_i in picks:
            sample = load_sample(files_i)
            image, mask = sample.image, sample.mask
            batch = (image.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)
            mesh = mesh_baseline(image, face_mesh)
            tiles = [labelled(image, files_i.name[:24]),
                     labelled(normals_tile(mesh, mask) if mesh is not None else np.zeros_like(image), "mediapipe-mesh")]
            last = None
            for name, predict in models:
                last = predict(batch)[0].transpose(1, 2, 0)
                tiles.append(labelled(normals_tile(last, mask), name))
            if last is not None and mesh is not None:
                tiles.append(labelled(difference_tile(last, mesh, mask), f"{models[-1][0]} - mesh 0..30 deg"))
            else:
                tiles.append(labelled(np.zeros_like(image), "no mesh"))
            rows.append(np.hstack(tiles))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_rgb(args.out, np.vstack(rows))
    print(f"wrote {args.out} ({len(rows)} crops × {len(models)} models + baseline)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
