"""Mirror averaging for still images: the network on each crop and on its mirror image, the two outputs averaged.

A face and its mirror image are equally plausible inputs, and the network's errors on the two differ (its
reading of the shading, its response to where the coarse face sits): averaging them is the cheapest ensemble.
Measured on the validation renders (shipped ``fast-prior``, stored crops; session 9): ``val_ict_v2`` 14.12 →
14.09°, ``val_james`` 10.70 → 10.68°, ``val_profile`` 15.14 → 15.02° (better on 71 / 63 / 70 % of the
images); the lighting pairs' sensitivity 0.67 → 0.57° (README "Temporal stability"). It doubles the network's
cost, so it is for still images (the API, ``facenormals eval``), not the live loop (``facenormals run``).

A network input is RGB (3 channels) or RGB + the coarse face's normals + coverage (7 channels,
:func:`facenormals.model.with_prior`). Mirroring a crop left ↔ right flips its columns and negates the x
component of every normal in it (camera space, +x right); the mirrored output is brought back the same way.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

NORMAL_X_CHANNEL = 3  # the coarse face's x component in a 7-channel input (RGB first)


def mirror_inputs(inputs: np.ndarray) -> np.ndarray:
    """N×C×S×S network inputs (C = 3 or 7) → the same crops mirrored left ↔ right, prior normals' x negated.

    >>> crop = np.zeros((1, 7, 2, 2), np.float32)
    >>> crop[0, :3, :, 0] = 1.0  # RGB white in the left column
    >>> crop[0, 3:6, :, 0] = [[0.6], [0.0], [0.8]]  # the coarse face there faces right
    >>> crop[0, 6, :, 0] = 1.0  # covered
    >>> out = mirror_inputs(crop)
    >>> out[0, :3, 0].tolist(), out[0, 3:6, 0, 1].tolist(), out[0, 6, 0].tolist()
    ([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]], [-0.6000000238418579, 0.0, 0.800000011920929], [0.0, 1.0])
    """
    if inputs.ndim != 4 or inputs.shape[1] not in (3, 7):
        raise ValueError(f"mirror_inputs: expected N×3×S×S or N×7×S×S network inputs, got shape {inputs.shape}")
    out = np.ascontiguousarray(inputs[..., ::-1])
    if out.shape[1] == 7:
        out[:, NORMAL_X_CHANNEL] *= -1.0
    return out


def unmirror_normals(normals: np.ndarray) -> np.ndarray:
    """N×3×S×S normals predicted on mirrored crops → normals of the original crops (columns flipped, x negated)."""
    out = np.ascontiguousarray(normals[..., ::-1], dtype=np.float32)
    out[:, 0] *= -1.0
    return out


def average_normals(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The per-pixel mean direction of two N×3×S×S unit normal maps (renormalised; zero where they cancel)."""
    total = a + b
    length = np.linalg.norm(total, axis=1, keepdims=True)
    return np.divide(total, length, out=np.zeros_like(total), where=length > 1e-8).astype(np.float32)


def mirror_averaged(run: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """``run`` (network inputs → normals) as the average of itself on the inputs and on their mirror images.

    Two calls of N crops each rather than one of 2N: a backend built for at most N faces (a TensorRT profile)
    still runs.
    """

    def averaged(inputs: np.ndarray) -> np.ndarray:
        direct = np.asarray(run(inputs), dtype=np.float32)
        mirrored = unmirror_normals(np.asarray(run(mirror_inputs(inputs)), dtype=np.float32))
        return average_normals(direct, mirrored)

    return averaged
