"""The deterministic weight rule of the official-model fixture (``tests/data/official/``), written from its README.

The fixture ran the authors' code on synthetic weights that need no RNG and no download; regenerating
them here lets a test push them through the same converter as a real ``model.pth`` and compare outputs.

Rule, for entry ``k`` of ``keys.json["state_dict"]`` with ``n`` values and ``c = canonical_index[k]``
(aliases share their first entry's values)::

    q_i = (A·(i² mod P) + B·i + C·c) mod P      exact integers, P = 1000003
    u_i = sin(q_i · 2π/P)                         float64, reshaped C-order to the key's shape

then a per-kind formula in float64, cast to float32 (``num_batches_tracked`` are int64 zeros).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

P, A, B, C = 1_000_003, 414_214, 618_034, 732_051


def weight_kind(key: str, shape: tuple[int, ...], keys: set[str]) -> str:
    """The rule's kind from the key name (and shape): see the fixture README's table."""
    prefix = key.rsplit(".", 1)[0]
    if key.endswith(".num_batches_tracked"):
        return "bn_count"
    if key.endswith(".running_mean"):
        return "bn_mean"
    if key.endswith(".running_var"):
        return "bn_var"
    if key.endswith(".weight"):
        return "bn_weight" if len(shape) == 1 else "weight"
    if key.endswith(".bias"):
        return "bn_bias" if f"{prefix}.running_mean" in keys else "bias"
    raise ValueError(f"{key}: no weight rule for this key")


def _phase_values(n: int, c: int, squares: np.ndarray) -> np.ndarray:
    i = np.arange(n, dtype=np.int64)
    q = (A * squares[:n] + B * i + C * c) % P  # below 2**43: exact in int64
    return np.sin(q.astype(np.float64) * (2.0 * math.pi / P))


def _apply_kind(kind: str, u: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if kind == "bn_mean":
        return 0.1 * u
    if kind == "bn_var":
        return 1.0 + 0.25 * (1.0 + u)
    if kind == "bn_weight":
        return 1.0 + 0.1 * u
    if kind in ("bn_bias", "bias"):
        return 0.05 * u
    if kind == "weight":
        return u * (2.0 / math.sqrt(math.prod(shape[1:])))
    raise ValueError(f"unknown weight kind {kind!r}")


def fixture_weights(keys_json: str | Path) -> dict[str, np.ndarray]:
    """``{official key: array}`` for every entry of ``keys.json`` (aliases are the same array object)."""
    spec = json.loads(Path(keys_json).read_text())
    entries = [(key, tuple(shape)) for key, shape, _dtype in spec["state_dict"]]
    canonical = spec["canonical_index"]
    names = {key for key, _ in entries}
    largest = max(math.prod(shape) for _, shape in entries)
    squares = np.arange(largest, dtype=np.int64) ** 2 % P
    weights: dict[str, np.ndarray] = {}
    for k, (key, shape) in enumerate(entries):
        c = canonical[k]
        if c != k:  # an alias: identical values, like the shared storage of the real model
            weights[key] = weights[entries[c][0]]
            continue
        kind = weight_kind(key, shape, names)
        if kind == "bn_count":
            weights[key] = np.zeros(shape, dtype=np.int64)
            continue
        u = _phase_values(math.prod(shape), c, squares).reshape(shape)
        weights[key] = _apply_kind(kind, u, shape).astype(np.float32)
    return weights
