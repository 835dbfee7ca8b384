"""``facenormals convert-official``: the authors' released ``model.pth`` → a facenormals checkpoint.

The official network (github.com/boukhayma/face_normals, CC BY-NC 4.0) is this project's ``paper`` width,
``full`` variant, layer for layer; ``facenormals.official_keys`` maps every key. Conversion accounts
for each of the official state dict's entries: renamed weights and BN buffers, ``base_model.*`` aliases
(checked equal to what they duplicate), and unused parameters (shapes checked, then dropped). Anything
else (a missing or unknown key, a wrong shape, a file that is not a PyTorch checkpoint) raises
:class:`OfficialCheckpointError` listing what differs.

    facenormals convert-official data/model.pth --out official.safetensors
    facenormals run --model official.safetensors        # every --model option accepts the result

The weights are never shipped or downloaded by this project; users fetch them from the authors.
"""

from __future__ import annotations

import argparse
import datetime as dt
import pickle
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from facenormals.checkpoint import CheckpointError, load_state_into, save_checkpoint
from facenormals.fileio import file_sha256
from facenormals.model import CrossModalNet, ModelCfg
from facenormals.official_keys import DROPPED, OPTIONAL_SUFFIX, alias_target, official_name

OFFICIAL_REPO = "https://github.com/boukhayma/face_normals"
LICENCE = "CC BY-NC 4.0 (https://creativecommons.org/licenses/by-nc/4.0/): weights by Abrevaya, Boukhayma, Torr, Boyer"
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "weights")
SHOW = 8  # keys listed per kind of difference


class OfficialCheckpointError(ValueError):
    """The file is not the authors' ``ResNetUNet`` checkpoint, or differs from it; the message lists how."""


@dataclass
class ConversionReport:
    """What happened to each official key."""

    mapped: int = 0
    aliases: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    filled: list[str] = field(default_factory=list)  # num_batches_tracked absent from old files

    def summary(self) -> str:
        return (f"{self.mapped} tensors mapped, {len(self.aliases)} base_model.* aliases checked, "
                f"{len(self.dropped)} unused keys dropped ({', '.join(self.dropped)})"
                + (f", {len(self.filled)} num_batches_tracked filled with 0" if self.filled else ""))


# --------------------------------------------------------------------------------------------- reading


def _sniff(path: Path) -> None:
    """Reject files that cannot be a torch.save output before unpickling anything."""
    with path.open("rb") as handle:
        head = handle.read(16)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):
        return  # zip archive (torch >= 1.6) or legacy pickle (the authors' PyTorch 0.3/0.4 era)
    if len(head) >= 10 and head[8:10] == b'{"':
        raise OfficialCheckpointError(
            f"{path}: a safetensors file, not a PyTorch .pth; a facenormals checkpoint needs no conversion")
    raise OfficialCheckpointError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle)")


def load_official_file(path: str | Path, allow_pickle: bool = False) -> Mapping[str, torch.Tensor]:
    """Read ``model.pth`` on the CPU with ``weights_only=True``; unwrap common containers.

    ``allow_pickle`` permits a full unpickle (arbitrary code: only for files you trust), needed
    only when the file stores more than tensors and plain containers.
    """
    path = Path(path)
    if not path.is_file():
        raise OfficialCheckpointError(f"{path}: file not found")
    _sniff(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as err:
        if allow_pickle:
            raise OfficialCheckpointError(f"{path}: not a readable PyTorch checkpoint ({err})") from err
        raise OfficialCheckpointError(
            f"{path}: torch.load(weights_only=True) refused it: the file holds Python objects besides tensors "
            f"({str(err).splitlines()[-1][:200]}). If you trust where it came from, rerun with --allow-pickle") from err
    except (RuntimeError, EOFError, ValueError, KeyError, OSError) as err:
        raise OfficialCheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: {err})") from err
    return unwrap_state_dict(obj, path)


def unwrap_state_dict(obj: object, source: str | Path) -> dict[str, torch.Tensor]:
    """A bare state dict from what torch.load returned: nn.Module, {'state_dict': ...}, 'module.' prefixes."""
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise OfficialCheckpointError(f"{source}: holds a {type(obj).__name__}, not a state dict")
    if not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), (Mapping, torch.nn.Module)):
                return unwrap_state_dict(obj[key], f"{source}['{key}']")
        raise OfficialCheckpointError(f"{source}: no tensors at the top level and none under {list(WRAPPER_KEYS)}; "
                                      f"top-level keys: {sorted(map(str, obj))[:SHOW]}")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    others = sorted(str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor))
    if others:
        raise OfficialCheckpointError(f"{source}: entries that are not tensors: {others[:SHOW]}")
    for prefix in ("module.", "model."):  # DataParallel / wrapper modules
        if tensors and all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix):]: v for k, v in tensors.items()}
    return tensors


# ------------------------------------------------------------------------------------------ conversion


def _listing(label: str, items: list[str]) -> str:
    more = f" ... (+{len(items) - SHOW})" if len(items) > SHOW else ""
    return f"  {label} ({len(items)}): " + ", ".join(items[:SHOW]) + more


def convert_state_dict(official: Mapping[str, torch.Tensor], model: CrossModalNet,
                       source: str | Path = "state dict") -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Official keys → ``model``'s keys (a ``paper``/``full`` model); every official key is accounted for."""
    if model.cfg.arch != "paper" or model.cfg.variant != "full":
        raise ValueError(f"the official network is arch 'paper', variant 'full'; got {model.cfg.arch!r}/{model.cfg.variant!r}")
    ours = model.state_dict()
    report = ConversionReport()
    converted: dict[str, torch.Tensor] = {}
    missing: list[str] = []
    wrong: list[str] = []
    used: set[str] = set()
    for key, target in ours.items():
        name = official_name(key)
        tensor = official.get(name)
        if tensor is None:
            if key.endswith(OPTIONAL_SUFFIX):
                converted[key] = torch.zeros_like(target)
                report.filled.append(name)
            else:
                missing.append(name)
            continue
        used.add(name)
        if tuple(tensor.shape) != tuple(target.shape):
            wrong.append(f"{name}: file {tuple(tensor.shape)} vs expected {tuple(target.shape)}")
            continue
        converted[key] = tensor.detach().to(target.dtype).clone()
        report.mapped += 1
    unexpected: list[str] = []
    differing: list[str] = []
    for name, tensor in official.items():
        if name in used:
            continue
        if name in DROPPED:
            if tuple(tensor.shape) != DROPPED[name]:
                wrong.append(f"{name}: file {tuple(tensor.shape)} vs expected {DROPPED[name]}")
            report.dropped.append(name)
            continue
        twin = alias_target(name)
        if twin is None or (twin not in used and not twin.endswith(OPTIONAL_SUFFIX)):
            unexpected.append(name)
            continue
        report.aliases.append(name)
        original = official.get(twin)
        if original is not None and (original.shape != tensor.shape or not torch.equal(original, tensor)):
            differing.append(f"{name} ≠ {twin}")
    absent_dropped = [k for k in DROPPED if k not in official]
    if missing or wrong or unexpected or differing:
        present = len(used) + len(report.aliases) + len(report.dropped)
        lines = [f"{source}: not the official face_normals ResNetUNet checkpoint "
                 f"({present} of {len(official)} keys recognised)"]
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong),
                             ("aliases that differ from the tensor they duplicate", differing)):
            if items:
                lines.append(_listing(label, items))
        raise OfficialCheckpointError("\n".join(lines))
    if absent_dropped:  # harmless, but not the released file's layout: say so in the report
        report.dropped.extend(f"{k} (absent)" for k in absent_dropped)
    return converted, report


def official_cfg(source: Path, sha256: str) -> ModelCfg:
    return ModelCfg(arch="paper", variant="full", extra={
        "weights": "official face_normals model.pth (Abrevaya et al., CVPR 2020)",
        "licence": LICENCE,
        "source_repo": OFFICIAL_REPO,
        "source_file": source.name,
        "source_sha256": sha256,
    })


def convert_official(path: str | Path, out: str | Path, allow_pickle: bool = False,
                     half: bool = False, inference_only: bool = False) -> ConversionReport:
    """Read the authors' ``model.pth`` and write a facenormals checkpoint at ``out``."""
    path, out = Path(path), Path(out)
    state = load_official_file(path, allow_pickle)
    sha256 = file_sha256(path)
    model = CrossModalNet(official_cfg(path, sha256))
    converted, report = convert_state_dict(state, model, path)
    try:
        load_state_into(model, converted, path)
    except CheckpointError as err:  # cannot happen when the key map is complete; kept loud
        raise OfficialCheckpointError(str(err)) from err
    provenance = {
        "converted_from": str(path.resolve()),
        "source_sha256": sha256,
        "converted_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "converter": "facenormals convert-official",
        "licence": LICENCE,
        "dropped_keys": report.dropped,
        "aliases": len(report.aliases),
        "filled_num_batches_tracked": len(report.filled),
    }
    save_checkpoint(model.eval(), out, provenance=provenance, half=half, inference_only=inference_only)
    return report


# ------------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pth", type=Path, help="the authors' model.pth (github.com/boukhayma/face_normals)")
    parser.add_argument("--out", type=Path, required=True, help="facenormals checkpoint to write (.safetensors)")
    parser.add_argument("--half", action="store_true", help="store fp16 weights")
    parser.add_argument("--inference-only", action="store_true",
                        help="keep only the image→normal path (E_I, skips, D_N): what export and realtime use")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="full unpickle when weights_only loading refuses the file (runs code from it: trusted files only)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def main(args: argparse.Namespace) -> int:
    from facenormals.atomic import check_output

    check_output(args.out, "--out", overwrite=args.overwrite, inputs=[args.pth])  # before reading 300 MB of weights
    report = convert_official(args.pth, args.out, allow_pickle=args.allow_pickle, half=args.half,
                              inference_only=args.inference_only)
    print(f"{args.pth} → {args.out}: {report.summary()}")
    print(f"licence of these weights: {LICENCE}", file=sys.stderr)
    return 0
