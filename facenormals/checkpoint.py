"""Model checkpoints: one safetensors file, its JSON config in the file's metadata.

    metadata["facenormals"] = {"format": 1, "config": ModelCfg, "provenance": {...}}

Loading checks that the file is safetensors, that it is ours, and that its tensors match the
config exactly; each failure names the file and what differs.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from facenormals.atomic import atomic_path
from facenormals.conventions import CONVENTION_VERSION
from facenormals.model import CrossModalNet, ImageToNormal, ModelCfg

FORMAT_VERSION = 1
METADATA_KEY = "facenormals"


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, foreign or does not match its config."""


INFERENCE_PREFIXES = ("image_encoder.", "skip_connections.", "normal_decoder.")


def save_checkpoint(model: CrossModalNet, path: str | Path, provenance: dict | None = None,
                    half: bool = False, inference_only: bool = False) -> None:
    """Write ``model`` atomically.

    ``half`` stores fp16 weights (BN running stats included); ``inference_only`` keeps only the
    image→normal path (E_I, skips, D_N): half the size, all that export and realtime need.
    """
    tensors = {}
    for key, value in model.state_dict().items():
        if inference_only and not key.startswith(INFERENCE_PREFIXES):
            continue
        value = value.detach().cpu().contiguous()
        if half and value.is_floating_point():
            value = value.half()
        tensors[key] = value
    header = {"format": FORMAT_VERSION, "config": model.cfg.to_dict(), "provenance": provenance or {},
              "parts": "image_to_normal" if inference_only else "all"}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(header)})


def read_header(path: str | Path) -> dict:
    """The facenormals header of a checkpoint, validated."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    if METADATA_KEY not in metadata:
        raise CheckpointError(f"{path}: a safetensors file, but not a facenormals checkpoint (no '{METADATA_KEY}' metadata)")
    try:
        header = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: corrupt facenormals metadata ({err})") from err
    if header.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {header.get('format')!r}, this version reads {FORMAT_VERSION}")
    config = header.get("config", {})
    if config.get("convention_version") != CONVENTION_VERSION:
        raise CheckpointError(f"{path}: normal convention version {config.get('convention_version')!r}, "
                              f"expected {CONVENTION_VERSION}")
    return header


def read_config(path: str | Path) -> ModelCfg:
    try:
        return ModelCfg.from_dict(read_header(path)["config"])
    except (TypeError, ValueError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"{path}: invalid model config ({err})") from err


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: corrupt tensor data ({err})") from err


def load_state_into(module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str | Path) -> None:
    """Strict load with a readable list of missing/unexpected keys and shape mismatches."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(expected[k].shape)}"
             for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        lines = [f"{source}: weights do not match the model config"]
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if items:
                lines.append(f"  {label} ({len(items)}): " + ", ".join(items[:8]) + (" ..." if len(items) > 8 else ""))
        raise CheckpointError("\n".join(lines))
    casted = {k: v.to(expected[k].dtype) for k, v in tensors.items()}
    module.load_state_dict(casted, strict=True)


def is_inference_only(path: str | Path) -> bool:
    """A shipped file: the image→normal path only (``save_checkpoint(inference_only=True)``)."""
    return read_header(path).get("parts") == "image_to_normal"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> CrossModalNet:
    """Rebuild the full network from a checkpoint (eval mode, fp32)."""
    path = Path(path)
    if is_inference_only(path):
        raise CheckpointError(f"{path}: an inference-only checkpoint (image→normal path only); "
                              "load it with load_image_to_normal, or train from a full checkpoint")
    model = CrossModalNet(read_config(path))
    load_state_into(model, _load_tensors(path), path)
    return model.to(map_location).eval()


def init_from_image_to_normal(model: CrossModalNet, path: str | Path) -> list[str]:
    """Start a full network from an inference-only checkpoint (a shipped model): E_I, skips and D_N are loaded;
    E_N starts as a copy of E_I's trunk (its first layer from E_I's prior-normal channels when E_I has them, so
    it begins able to read normals); D_I keeps its fresh initialisation. Returns the parts not loaded."""
    path = Path(path)
    tensors = {k: v for k, v in _load_tensors(path).items() if k.startswith(INFERENCE_PREFIXES)}
    load_state_into(model.image_to_normal_path, tensors, path)
    fresh = ["image_decoder"] if model.image_decoder is not None else []
    if model.normal_encoder is not None:
        target = model.normal_encoder.state_dict()
        copied = {}
        for key, value in target.items():
            source = tensors.get(f"image_encoder.{key}")
            if source is not None and key == "conv1.weight" and source.shape[1] == value.shape[1] + 4:
                source = source[:, value.shape[1]:2 * value.shape[1]]  # the prior-normal input channels
            copied[key] = source.to(value.dtype) if source is not None and source.shape == value.shape else value
        model.normal_encoder.load_state_dict(copied, strict=True)
    return fresh


def load_network(path: str | Path) -> CrossModalNet:
    """The full network from a full checkpoint, or from an inference-only one with E_N and D_I filled in by
    :func:`init_from_image_to_normal` (for tools that write the image→normal path back: averaging, shipping)."""
    if not is_inference_only(path):
        return load_checkpoint(path)
    model = CrossModalNet(read_config(path))
    init_from_image_to_normal(model, path)
    return model.eval()


def load_image_to_normal(path: str | Path, map_location: str | torch.device = "cpu") -> ImageToNormal:
    """Only the inference path E_I → D_N: D_I and E_N weights are never materialised."""
    path = Path(path)
    cfg = read_config(path)
    full = CrossModalNet(cfg)
    path_module = full.image_to_normal_path
    tensors = {k: v for k, v in _load_tensors(path).items() if k.startswith(INFERENCE_PREFIXES)}
    load_state_into(path_module, tensors, path)
    return path_module.to(map_location).eval()
