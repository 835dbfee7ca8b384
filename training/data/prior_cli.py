"""``facenormals data prior --in DIR``: MediaPipe mesh priors for the images of dataset folders.

For every sample with an image, FaceMesh (static image mode, iris refinement) runs on the image; the
landmarks go to ``DIR/priors/NAME.npy`` (float32 478×3, x/y normalised to the image, z by its width) and
``DIR/priors/index.csv`` records ``name,found`` for every image (found = 0: no face, the model gets the
empty prior). Storing landmarks rather than normal maps keeps a sample at 6 KB; the loader rasterises
them (``facenormals.mesh_prior.stored_prior``, ~0.5 ms). Resumable: images already in the index are
skipped unless ``--force`` (every image) or ``--retry-missed`` (those recorded as no face: a folder made
before the crop's second, zoomed-out look, :func:`facenormals.mesh_prior.crop_landmarks`); Ctrl-C keeps what
is done. Normal-only samples need no stored prior (the model smooths their ground truth instead,
``facenormals.model.coarse_prior``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facenormals import mesh_prior
from facenormals.atomic import atomic_path, write_text_atomic
from facenormals.dataset import scan_dataset
from facenormals.fileio import DataError, read_rgb


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--in", dest="inputs", type=Path, nargs="+", required=True, help="dataset folders")
    parser.add_argument("--force", action="store_true", help="recompute images already in priors/index.csv")
    parser.add_argument("--retry-missed", action="store_true",
                        help="recompute the images priors/index.csv records as no face (found = 0)")


def read_index(root: Path) -> dict[str, bool]:
    path = root / mesh_prior.PRIORS_DIR / mesh_prior.PRIOR_INDEX
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as f:
        return {row["name"]: row["found"] == "1" for row in csv.DictReader(f)}


def write_index(root: Path, index: dict[str, bool]) -> None:
    out = io.StringIO()
    out.write("name,found\n")
    for name in sorted(index):
        out.write(f"{name},{int(index[name])}\n")
    write_text_atomic(root / mesh_prior.PRIORS_DIR / mesh_prior.PRIOR_INDEX, out.getvalue())


def compute_priors(root: Path, force: bool = False, retry_missed: bool = False) -> tuple[int, int, int]:
    """Priors for every image of dataset folder ``root``: returns (found, not found, skipped). Images already in
    the index are skipped, unless ``force`` (all) or ``retry_missed`` (those recorded as no face)."""
    import mediapipe

    samples = [s for s in scan_dataset(root) if s.image is not None]
    if not samples:
        raise DataError(f"{root}: no images to compute priors for (normal-only folders need none)")
    (root / mesh_prior.PRIORS_DIR).mkdir(exist_ok=True)
    write_text_atomic(root / mesh_prior.PRIORS_DIR / "meta.json", json.dumps({
        "what": "MediaPipe face-mesh landmarks per image: x, y normalised to the image, z by its width",
        "mediapipe": mediapipe.__version__, "static_image_mode": True, "refine_landmarks": True}, indent=2) + "\n")
    index = {} if force else read_index(root)
    found = missing = skipped = 0
    try:
        with mesh_prior.create_face_mesh() as face_mesh:
            for files in tqdm(samples, desc=f"priors {root.name}", unit="img"):
                if files.name in index and not (retry_missed and not index[files.name]):
                    skipped += 1
                    continue
                try:
                    landmarks = mesh_prior.crop_landmarks(read_rgb(files.image), face_mesh)
                except ValueError as error:  # not a square crop
                    raise DataError(f"{files.image}: {error}") from error
                path = mesh_prior.stored_prior_path(root, files.name)
                if landmarks is not None:
                    with atomic_path(path) as tmp, open(tmp, "wb") as f:
                        np.save(f, landmarks.astype(np.float32))
                    found += 1
                else:
                    path.unlink(missing_ok=True)
                    missing += 1
                index[files.name] = landmarks is not None
    finally:
        write_index(root, index)  # also on Ctrl-C: the next run resumes after the last image done
    return found, missing, skipped


def main(args: argparse.Namespace) -> int:
    for root in args.inputs:
        if not Path(root).is_dir():
            raise DataError(f"{root}: dataset folder not found")
    for root in args.inputs:
        found, missing, skipped = compute_priors(Path(root), args.force, args.retry_missed)
        total = found + missing
        rate = f"{100.0 * found / total:.1f} %" if total else "n/a"
        print(f"{root}: mesh found {found}, no face {missing} ({rate} found), already done {skipped}")
    return 0
