"""Parity of an exported model against torch, on real face crops, over the facial mask.

Real crops come from (in this order of preference):
* a dataset folder (``images/`` + ``masks/``, facenormals.dataset format): the images already are crops;
* a folder of photos: every face MediaPipe's face mesh finds, cropped with ``facenormals.geometry.face_crop``;
* nothing given: scikit-image's astronaut photo (a real public-domain portrait shipped with the package).

Deviation is the per-pixel angle between the two normal maps (``conventions.angular_error_deg``); the
check uses the maximum over every masked pixel of every crop, the strictest summary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from facenormals.conventions import angular_error_deg
from facenormals.dataset import IMAGE_SUFFIXES
from facenormals.faces import FaceMesh
from facenormals.fileio import DataError, read_mask, read_rgb
from facenormals.geometry import face_crop

# Tolerances of the issue: maximum angular deviation from torch over the mask.
TOLERANCE_DEG = {"fp32": 0.1, "fp16": 0.5}


@dataclass(frozen=True)
class FaceCrops:
    """A batch of real face crops: images float32 N×3×S×S in [0, 1], masks bool N×S×S, their names."""

    images: np.ndarray
    masks: np.ndarray
    names: list[str]

    def __len__(self) -> int:
        return len(self.names)


@dataclass(frozen=True)
class ParityReport:
    precision: str
    n_crops: int
    max_deg: float
    mean_deg: float
    p99_deg: float
    tolerance_deg: float
    source: str

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.max_deg) and self.max_deg <= self.tolerance_deg)

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "passed": self.passed}

    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return (f"parity {self.precision} vs torch on {self.n_crops} face crops ({self.source}): "
                f"max {self.max_deg:.4f}°, p99 {self.p99_deg:.4f}°, mean {self.mean_deg:.4f}° "
                f"(tolerance {self.tolerance_deg}°) {verdict}")


# ---------------------------------------------------------------------------------------------- crops


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def detect_landmarks(images: list[np.ndarray], max_faces: int = 4) -> list[list[np.ndarray]]:
    """Per image, the 478×2 pixel landmarks of each face (:class:`facenormals.faces.FaceMesh`, still mode)."""
    with FaceMesh(max_faces, still=True) as face_mesh:
        return [[found.points for found in face_mesh.find(rgb)] for rgb in images]


def _crops_from_photos(photos: list[tuple[str, np.ndarray]], size: int) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    landmarks = detect_landmarks([rgb for _, rgb in photos])
    for (name, rgb), faces in zip(photos, landmarks, strict=True):
        for k, xy in enumerate(faces):
            crop = face_crop(rgb, xy, size=size)
            yield f"{name}#{k}", crop.image, crop.mask


def _crops_from_dataset(root: Path, size: int) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    for image_path in _image_files(root / "images"):
        mask_path = root / "masks" / f"{image_path.stem}.png"
        rgb = read_rgb(image_path)
        mask = read_mask(mask_path) if mask_path.is_file() else np.ones(rgb.shape[:2], bool)
        if rgb.shape[:2] != (size, size):
            rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
            mask = cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST) > 0
        yield image_path.stem, rgb, mask


def astronaut_photo() -> np.ndarray:
    """scikit-image's astronaut (Eileen Collins, NASA, public domain): a real face always at hand."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def load_face_crops(source: str | Path | None = None, size: int = 256, limit: int | None = None) -> FaceCrops:
    """Real face crops from a dataset folder, a photo folder, or (None) the astronaut photo."""
    if source is None:
        items = list(_crops_from_photos([("astronaut", astronaut_photo())], size))
        label = "skimage astronaut"
    else:
        root = Path(source)
        if not root.is_dir():
            raise DataError(f"{root}: face image folder not found")
        if (root / "images").is_dir():
            items = _take(_crops_from_dataset(root, size), limit)
        else:
            files = _image_files(root)
            if not files:
                raise DataError(f"{root}: no images (expected photos, or a dataset folder with images/)")
            items = _take(_crops_from_photos([(p.stem, read_rgb(p)) for p in files], size), limit)
        label = str(root)
    items = [item for item in items if item[2].any()]
    if not items:
        raise DataError(f"{label}: no face found to crop")
    names = [name for name, _, _ in items]
    images = np.stack([rgb.transpose(2, 0, 1) for _, rgb, _ in items]).astype(np.float32) / np.float32(255.0)
    masks = np.stack([mask for _, _, mask in items]).astype(bool)
    return FaceCrops(np.ascontiguousarray(images), masks, names)


def _take(items: Iterator[tuple[str, np.ndarray, np.ndarray]], limit: int | None) -> list:
    out = []
    for item in items:
        if limit is not None and len(out) >= limit:
            break
        out.append(item)
    return out


# ---------------------------------------------------------------------------------------------- comparison


def angular_deviation_deg(reference: np.ndarray, candidate: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Angles (degrees) between two N×3×S×S normal batches at the masked pixels, all crops together.

    A non-finite candidate pixel counts as 180° so NaN outputs can never pass a parity check.
    """
    if reference.shape != candidate.shape:
        raise ValueError(f"normal batches differ in shape: {reference.shape} vs {candidate.shape}")
    errors = []
    for ref, cand, mask in zip(reference, candidate, masks, strict=True):
        ref_hwc, cand_hwc = ref.transpose(1, 2, 0), cand.transpose(1, 2, 0)
        finite = np.isfinite(cand_hwc).all(axis=-1)
        angle = angular_error_deg(ref_hwc, np.nan_to_num(cand_hwc))
        angle = np.where(finite, angle, 180.0)
        errors.append(angle[mask])
    return np.concatenate(errors)


def run_batched(fn: Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch: int = 4) -> np.ndarray:
    return np.concatenate([fn(images[i:i + batch]) for i in range(0, len(images), batch)])


def torch_reference(checkpoint: str | Path) -> Callable[[np.ndarray], np.ndarray]:
    """The fp32 torch ``ImageToNormal`` of a checkpoint as a numpy function."""
    import torch

    from facenormals.checkpoint import load_image_to_normal

    module = load_image_to_normal(checkpoint)

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(np.ascontiguousarray(batch))).numpy()

    return run


def onnx_runner(onnx_path: str | Path, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """ONNX Runtime CPU session as a numpy function (graph optimisations on, as deployed)."""
    from facenormals.runtime.backends import OrtBackend

    return OrtBackend("ort-cpu", Path(onnx_path), threads=threads, strict=True)


def check_parity(checkpoint: str | Path, onnx_path: str | Path, precision: str = "fp32",
                 crops: FaceCrops | None = None, source_label: str | None = None) -> ParityReport:
    """Angular deviation of the ONNX file (under ORT CPU) from torch fp32, over the masks of real crops."""
    if precision not in TOLERANCE_DEG:
        raise ValueError(f"no parity tolerance for precision {precision!r}; known: {sorted(TOLERANCE_DEG)}")
    candidate = onnx_runner(onnx_path)
    if crops is None:
        crops = load_face_crops(None, size=candidate.input_size)
        source_label = "skimage astronaut"
    from facenormals.prior import network_inputs

    inputs = network_inputs(crops.images, candidate.in_chans, candidate.prior_source)  # + each crop's coarse face
    expected = run_batched(torch_reference(checkpoint), inputs)
    actual = run_batched(candidate, inputs)
    errors = angular_deviation_deg(expected, actual, crops.masks)
    return ParityReport(precision, len(crops), float(errors.max()), float(errors.mean()),
                        float(np.percentile(errors, 99)), TOLERANCE_DEG[precision], source_label or "given crops")
