"""The dataset folder format, shared by the data engine, training and evaluation.

    DIR/images/NAME.png|jpg     RGB (8-bit)
    DIR/normals/NAME.png|npy    normal map, see facenormals.conventions
    DIR/masks/NAME.png          facial region = 255
    DIR/depth/NAME.png          optional, uint16 millimetres

Which files exist for NAME decides its kind: image + normals → paired, image only → image-only,
normals only → normal-only. A mask is required for every sample.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facenormals.fileio import (
    DataError,
    check_unit_normals,
    read_depth_mm,
    read_mask,
    read_normals,
    read_rgb,
    write_depth_mm,
    write_mask,
    write_normals,
    write_rgb,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
NORMAL_SUFFIXES = (".png", ".npy")


class SampleKind(str, enum.Enum):
    PAIRED = "paired"
    IMAGE_ONLY = "image-only"
    NORMAL_ONLY = "normal-only"


@dataclass(frozen=True)
class SampleFiles:
    name: str
    kind: SampleKind
    mask: Path
    image: Path | None = None
    normals: Path | None = None
    depth: Path | None = None


@dataclass
class Sample:
    """One loaded sample; ``image`` RGB uint8, ``normals`` float32 H×W×3, ``mask`` bool H×W."""

    name: str
    kind: SampleKind
    mask: np.ndarray
    image: np.ndarray | None = None
    normals: np.ndarray | None = None
    depth_mm: np.ndarray | None = None


def _index(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """NAME → file, refusing two files for one NAME (e.g. normals/a.png and normals/a.npy)."""
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in suffixes:
            continue
        if path.stem in found:
            raise DataError(f"{folder}: two files for sample '{path.stem}': {found[path.stem].name}, {path.name}")
        found[path.stem] = path
    return found


def scan_dataset(root: str | Path) -> list[SampleFiles]:
    """List the samples of a dataset folder, classified by which files exist."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    images = _index(root / "images", IMAGE_SUFFIXES)
    normals = _index(root / "normals", NORMAL_SUFFIXES)
    masks = _index(root / "masks", (".png",))
    depth = _index(root / "depth", (".png",))
    names = sorted(set(images) | set(normals))
    if not names:
        raise DataError(f"{root}: no samples (expected images/ and/or normals/ with files)")
    missing_masks = [n for n in names if n not in masks]
    if missing_masks:
        raise DataError(f"{root}: {len(missing_masks)} samples have no mask in masks/, e.g. '{missing_masks[0]}'")
    samples = []
    for name in names:
        has_image, has_normals = name in images, name in normals
        kind = SampleKind.PAIRED if has_image and has_normals else (
            SampleKind.IMAGE_ONLY if has_image else SampleKind.NORMAL_ONLY)
        samples.append(SampleFiles(name, kind, masks[name], images.get(name), normals.get(name), depth.get(name)))
    return samples


def load_sample(files: SampleFiles) -> Sample:
    """Load and validate one sample: all its arrays must share one size, normals unit inside the mask."""
    mask = read_mask(files.mask)
    image = read_rgb(files.image) if files.image else None
    normals = read_normals(files.normals, check_unit=False) if files.normals else None
    depth = read_depth_mm(files.depth) if files.depth else None
    for label, array, path in (("image", image, files.image), ("normals", normals, files.normals),
                               ("depth", depth, files.depth)):
        if array is not None and array.shape[:2] != mask.shape:
            raise DataError(f"{path}: {label} size {array.shape[:2]} differs from its mask {files.mask} {mask.shape}")
    if normals is not None:
        check_unit_normals(normals, mask, files.normals)
    if not mask.any():
        raise DataError(f"{files.mask}: mask is empty")
    return Sample(files.name, files.kind, mask, image, normals, depth)


class DatasetWriter:
    """Writes samples into the folder format; each file lands atomically, so a crash leaves no half file."""

    def __init__(self, root: str | Path, normal_format: str = "png") -> None:
        if normal_format not in ("png", "npy"):
            raise ValueError(f"normal_format must be 'png' or 'npy', got {normal_format!r}")
        self.root = Path(root)
        self.normal_format = normal_format

    def exists(self, name: str) -> bool:
        """A sample counts as written once its mask exists (the mask is written last)."""
        return (self.root / "masks" / f"{name}.png").is_file()

    def write(self, name: str, mask: np.ndarray, image: np.ndarray | None = None,
              normals: np.ndarray | None = None, depth_mm: np.ndarray | None = None) -> None:
        if image is None and normals is None:
            raise DataError(f"sample '{name}': needs an image, normals or both")
        if image is not None:
            write_rgb(self.root / "images" / f"{name}.png", image)
        if normals is not None:
            write_normals(self.root / "normals" / f"{name}.{self.normal_format}", normals, mask)
        if depth_mm is not None:
            write_depth_mm(self.root / "depth" / f"{name}.png", depth_mm)
        write_mask(self.root / "masks" / f"{name}.png", mask)
