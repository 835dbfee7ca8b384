"""The authors' input/output conventions, and how they map onto this project's.

Input (their ``tester.py``): a PIL RGB face crop through torchvision ``ToTensor()``: float32 RGB in
[0, 1], N×3×H×W, no mean/std normalisation, H and W multiples of 32 (256² in practice). This is
exactly this project's input convention; no conversion is needed.

Output: ``ResNetUNet.forward(x, 0)`` returns *raw* normals (no activation, no normalisation).
``tester.py`` divides them by their L2 length over the channel axis (no epsilon), then writes
``127.5·(n + 1)`` with ``cv2.imwrite(path, cv2.cvtColor(out, cv2.COLOR_RGB2BGR))``: OpenCV stores BGR
order, so the swap makes the *file's* red channel hold channel 0, green channel 1, blue channel 2;
float data is rounded to 8 bits (JPEG in ``tester.py``; lossy).

Axes: channel 0 = +x image right, channel 1 = +y image up, channel 2 = +z toward the camera, the
same as this project (``facenormals.conventions``). The official repository never states this; it is
inferred from downstream code that consumes these normals: Neural Head Avatars (Grassal et al., CVPR
2022, ``nha/data/real.py``) reads the official output images and negates only the y channel to match
its own renderer's normals, which are +x right, +y down, +z toward the camera (PyTorch3D view space
negated). So ``OFFICIAL_TO_OURS`` is the identity, and a saved official normal image decodes with the
same (n + 1)/2 RGB rule this project uses; the one difference is 8-bit quantisation.

>>> import numpy as np
>>> raw = np.array([[[[0.0]], [[3.0]], [[4.0]]]], dtype=np.float32)   # N×3×1×1, not unit
>>> official_raw_to_normals(raw)[0, :, 0, 0].tolist()
[0.0, 0.6000000238418579, 0.800000011920929]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facenormals.conventions import normalize
from facenormals.fileio import DataError, read_rgb, write_rgb

# rows: our x, y, z; columns: official channels 0, 1, 2 (ours = OFFICIAL_TO_OURS @ official)
OFFICIAL_TO_OURS = np.eye(3, dtype=np.float32)


def official_raw_to_normals(raw: np.ndarray, axis: int = 1) -> np.ndarray:
    """The official network's raw output → unit normals in this project's convention (same layout).

    ``axis`` is the channel axis: 1 for N×3×H×W (the network's layout), -1 for H×W×3.
    """
    raw = np.asarray(raw, dtype=np.float32)
    if raw.shape[axis] != 3:
        raise ValueError(f"expected 3 normal channels on axis {axis}, got shape {raw.shape}")
    moved = np.moveaxis(raw, axis, -1) @ OFFICIAL_TO_OURS.T
    return np.moveaxis(normalize(moved, axis=-1), -1, axis)


def write_official_normal_image(path: str | Path, normals: np.ndarray) -> None:
    """Write H×W×3 unit normals (our convention) the way ``tester.py`` does: 8-bit, 127.5·(n + 1), R = x."""
    normals = np.asarray(normals, dtype=np.float32)
    if normals.ndim != 3 or normals.shape[2] != 3:
        raise DataError(f"{path}: normal maps must be H×W×3, got shape {normals.shape}")
    official = normals @ np.linalg.inv(OFFICIAL_TO_OURS).T
    encoded = np.clip(np.rint(127.5 * (official + 1.0)), 0, 255).astype(np.uint8)  # cv2's float→8U rounding
    write_rgb(path, encoded)


def read_official_normal_image(path: str | Path) -> np.ndarray:
    """Decode a normal image written by the authors' ``tester.py`` → H×W×3 unit normals in our convention.

    Every pixel is decoded (``tester.py`` writes the whole crop, no mask); lengths are renormalised
    to undo the 8-bit (and JPEG) rounding.
    """
    rgb = read_rgb(path).astype(np.float32)
    official = rgb / 127.5 - 1.0
    return official_raw_to_normals(official, axis=-1)
