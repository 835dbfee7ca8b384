"""Reading and writing the project's files: RGB images, normal maps, masks, depth.

Every reader raises :class:`DataError` naming the file and what is wrong with it.
Images are returned as RGB uint8 H×W×3 (never BGR), normal maps as float32 H×W×3 in the
convention of :mod:`facenormals.conventions`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np

from facenormals.atomic import atomic_path
from facenormals.conventions import UNIT_TOLERANCE, decode_normals, encode_normals


class DataError(ValueError):
    """A data file is missing, unreadable or violates the project's conventions."""


def file_sha256(path: str | Path) -> str:
    """The file's SHA-256, hex (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _imread(path: Path, flags: int) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, flags) if data.size else None
    if image is None:
        raise DataError(f"{path}: not a readable image")
    return image


def three_channels(image: np.ndarray) -> np.ndarray:
    """An H×W, H×W×1, H×W×3 or H×W×4 image as C-contiguous H×W×3: grey repeated, alpha dropped, order kept."""
    if image.ndim == 2 or image.shape[2] == 1:
        return np.repeat(image.reshape(image.shape[:2])[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


# 8- or 16-bit, grey or colour as stored, alpha dropped, and turned upright by its EXIF orientation: phone photos
# are stored sideways with a tag that every viewer applies (IMREAD_UNCHANGED ignores it)
_PHOTO_FLAGS = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image as RGB uint8, upright as viewers show it (EXIF orientation applied); grayscale is replicated to
    3 channels, alpha dropped, 16-bit scaled to 8."""
    path = Path(path)
    image = _imread(path, _PHOTO_FLAGS)
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.dtype != np.uint8:
        raise DataError(f"{path}: unsupported image dtype {image.dtype}")
    colour = three_channels(image)
    return colour if image.ndim == 2 else cv2.cvtColor(colour, cv2.COLOR_BGR2RGB)


def write_rgb(path: str | Path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 image atomically (format from the suffix)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise DataError(f"{path}: expected RGB uint8 H×W×3, got {rgb.dtype} {rgb.shape}")
    _imwrite(Path(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _imwrite(path: Path, image: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), image):
            raise DataError(f"{path}: OpenCV could not write this image")


def read_normals(path: str | Path, check_unit: bool = True, mask: np.ndarray | None = None) -> np.ndarray:
    """Read a normal map from 16-bit/8-bit PNG or float32 .npy (H×W×3, our convention).

    Pixels where the encoded value is exactly zero in all channels are treated as "no normal".
    With ``check_unit``, the normals inside ``mask`` (or all non-empty pixels) must be unit length.
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        if not path.is_file():
            raise DataError(f"{path}: file not found")
        try:
            normals = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise DataError(f"{path}: not a readable .npy file ({err})") from err
        if normals.dtype != np.float32:
            raise DataError(f"{path}: .npy normal maps must be float32, got {normals.dtype}")
        if normals.ndim == 3 and normals.shape[0] == 3 and normals.shape[2] != 3:
            normals = np.moveaxis(normals, 0, -1)
    else:
        raw = _imread(path, cv2.IMREAD_UNCHANGED)
        if raw.ndim != 3 or raw.shape[2] != 3:
            raise DataError(f"{path}: normal maps need 3 channels, got shape {raw.shape}")
        if raw.dtype == np.uint16:
            scale = 65535.0
        elif raw.dtype == np.uint8:
            scale = 255.0
        else:
            raise DataError(f"{path}: normal PNGs must be 8- or 16-bit, got {raw.dtype}")
        encoded = cv2.cvtColor(raw, cv2.COLOR_BGR2RGB)
        empty = ~encoded.any(axis=2)
        normals = decode_normals(encoded.astype(np.float32) / scale)
        normals[empty] = 0.0
    if normals.ndim != 3 or normals.shape[2] != 3:
        raise DataError(f"{path}: normal maps must be H×W×3, got shape {normals.shape}")
    if not np.isfinite(normals).all():
        raise DataError(f"{path}: normal map contains NaN or infinite values")
    if check_unit:
        check_unit_normals(normals, mask, path)
    return normals.astype(np.float32, copy=False)


def check_unit_normals(normals: np.ndarray, mask: np.ndarray | None, source: str | Path) -> None:
    length = np.linalg.norm(normals, axis=2)
    region = mask.astype(bool) if mask is not None else length > 0
    bad = np.abs(length[region] - 1.0) > UNIT_TOLERANCE
    if bad.any():
        raise DataError(
            f"{source}: {int(bad.sum())} of {int(region.sum())} normals are not unit length "
            f"(lengths {length[region][bad].min():.3f}..{length[region][bad].max():.3f})"
        )


def write_normals(path: str | Path, normals: np.ndarray, mask: np.ndarray | None = None) -> None:
    """Write a normal map as 16-bit PNG or float32 .npy (by suffix); outside ``mask`` is stored as 0."""
    path = Path(path)
    normals = np.asarray(normals, dtype=np.float32)
    if normals.ndim != 3 or normals.shape[2] != 3:
        raise DataError(f"{path}: normal maps must be H×W×3, got shape {normals.shape}")
    empty = ~np.asarray(mask, dtype=bool) if mask is not None else ~np.any(normals != 0, axis=2)
    if path.suffix.lower() == ".npy":
        out = normals.copy()
        out[empty] = 0.0
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.save(handle, out)
        return
    encoded = np.clip(np.round(encode_normals(normals) * 65535.0), 1, 65535).astype(np.uint16)
    encoded[empty] = 0  # 0 in all channels = "no normal"; valid pixels never encode to all-zero
    _imwrite(path, cv2.cvtColor(encoded, cv2.COLOR_RGB2BGR))


def read_mask(path: str | Path) -> np.ndarray:
    """Read a facial mask PNG (255 = face) as bool H×W."""
    path = Path(path)
    raw = _imread(path, cv2.IMREAD_UNCHANGED)
    if raw.ndim == 3:
        raw = raw[..., 0]
    if raw.dtype != np.uint8:
        raise DataError(f"{path}: masks must be 8-bit, got {raw.dtype}")
    return raw > 127


def write_mask(path: str | Path, mask: np.ndarray) -> None:
    _imwrite(Path(path), np.where(np.asarray(mask, dtype=bool), 255, 0).astype(np.uint8))


def read_depth_mm(path: str | Path) -> np.ndarray:
    """Read a uint16 depth PNG in millimetres (0 = missing)."""
    path = Path(path)
    raw = _imread(path, cv2.IMREAD_UNCHANGED)
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise DataError(f"{path}: depth must be single-channel uint16 (mm), got {raw.dtype} {raw.shape}")
    return raw


def write_depth_mm(path: str | Path, depth_mm: np.ndarray) -> None:
    if depth_mm.dtype != np.uint16 or depth_mm.ndim != 2:
        raise DataError(f"{path}: depth must be uint16 H×W, got {depth_mm.dtype} {depth_mm.shape}")
    _imwrite(Path(path), depth_mm)


MODEL_SUFFIXES = (".safetensors", ".onnx", ".engine")
MIN_MODEL_SIZE = 32  # input side below which no face crop is meaningful


def check_model_file(path: str | Path, what: str = "--model") -> Path:
    """A model file that a backend can load as a face-normal model, or DataError naming the file and the fault.

    Checked before any backend starts: the file exists, parses in its format, and an ONNX graph is a
    face-normal model (input ``image`` N×C×S×S with C 3 or 7 and S ≥ 32 square, output ``normals`` N×3×S×S).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} {path}: file not found")
    suffix = path.suffix.lower()
    if suffix not in MODEL_SUFFIXES:
        raise DataError(f"{what} {path}: unknown model format; expected one of {', '.join(MODEL_SUFFIXES)}")
    if suffix == ".safetensors":
        _check_safetensors(path, what)
    elif suffix == ".onnx":
        _check_onnx(path, what)
    elif path.stat().st_size == 0:
        raise DataError(f"{what} {path}: empty TensorRT engine file")
    return path


def _check_safetensors(path: Path, what: str) -> None:
    import json
    import struct

    with path.open("rb") as f:
        head = f.read(8)
        size = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        ok = 0 < size <= path.stat().st_size - 8
        try:
            header = json.loads(f.read(size)) if ok else None
        except (UnicodeDecodeError, ValueError):
            header = None
    if not isinstance(header, dict):
        raise DataError(f"{what} {path}: not a safetensors checkpoint (unreadable header)")


def _check_onnx(path: Path, what: str) -> None:
    from facenormals.runtime.onnx_info import read_header

    try:
        header = read_header(path)
    except Exception as err:  # protobuf raises DecodeError and others: any failure means "not ONNX"
        raise DataError(f"{what} {path}: not a readable ONNX model ({type(err).__name__}: {err})") from err
    inputs, outputs = header.inputs, header.outputs
    if "image" not in inputs or "normals" not in outputs:
        raise DataError(f"{what} {path}: not a facenormals model: it needs input 'image' and output 'normals', "
                        f"has inputs {inputs} and outputs {outputs} (export one with 'facenormals export onnx')")
    image, normals = inputs["image"], outputs["normals"]
    if len(image) != 4 or image[1] not in (3, 7) or len(normals) != 4 or normals[1] != 3:
        raise DataError(f"{what} {path}: not a facenormals model: input 'image' is {image} (want N×3×S×S or N×7×S×S), "
                        f"output 'normals' is {normals} (want N×3×S×S)")
    meta = header.metadata
    if "convention" not in meta:  # the normals' axes are unknown without it: drawing them could be silently wrong
        raise DataError(f"{what} {path}: no 'convention' metadata, so this is not a facenormals export (the axes of its "
                        "output are unknown); export the model with 'facenormals export onnx'")
    size = int(meta.get("size") or 0) or (image[2] if isinstance(image[2], int) else 0)
    sides = [d for d in image[2:] if isinstance(d, int)]
    if len(set(sides)) > 1 or (size and size < MIN_MODEL_SIZE):
        raise DataError(f"{what} {path}: input 'image' is {image}: facenormals models take square crops of at "
                        f"least {MIN_MODEL_SIZE} pixels")
