"""A contact sheet of a dataset folder: one row per sample, image | normals | mask."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facenormals.conventions import encode_normals
from facenormals.dataset import load_sample, scan_dataset
from facenormals.fileio import DataError, write_rgb


def contact_sheet(root: str | Path, out: str | Path, rows: int = 8, cell: int = 128, columns: int = 2) -> Path:
    """Write a PNG with ``rows``×``columns`` samples (evenly spread over the folder) as image | normals | mask."""
    files = scan_dataset(root)
    picks = np.unique(np.linspace(0, len(files) - 1, min(len(files), rows * columns)).round().astype(int))
    tiles = []
    for i in picks:
        try:
            sample = load_sample(files[i])
        except DataError:
            continue
        blank = np.full((cell, cell, 3), 64, np.uint8)
        image = cv2.resize(sample.image, (cell, cell), interpolation=cv2.INTER_AREA) if sample.image is not None \
            else blank
        if sample.normals is not None:
            enc = (encode_normals(sample.normals) * 255).round().astype(np.uint8)
            enc[~sample.mask] = 0
            normals = cv2.resize(enc, (cell, cell), interpolation=cv2.INTER_AREA)
        else:
            normals = blank
        mask = cv2.resize(sample.mask.astype(np.uint8) * 255, (cell, cell), interpolation=cv2.INTER_NEAREST)
        tiles.append(np.hstack([image, normals, np.repeat(mask[..., None], 3, 2)]))
    if not tiles:
        raise DataError(f"{root}: no loadable samples for a contact sheet")
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    grid = [np.hstack(tiles[r * columns:(r + 1) * columns]) for r in range(len(tiles) // columns)]
    sheet = np.vstack(grid)
    out = Path(out)
    write_rgb(out, sheet)
    return out
