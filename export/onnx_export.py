"""ONNX export of the image→normal path (E_I → D_N; neither D_I nor E_N).

    input  'image'   float32 N×C×S×S, RGB in [0, 1] (C = the model's in_chans, 3 for RGB)
    output 'normals' float32 N×3×S×S, unit vectors, camera space +x right, +y up, +z toward the camera

Batch is dynamic, S is fixed at export. One self-contained file (no external data), ``onnx.checker``
clean (full check with shape inference), simplified with onnxslim when that removes nodes, and the
model's config in ``metadata_props`` so a runtime needs nothing else (see ``METADATA_KEYS``).
"""

from __future__ import annotations

import io
import json
import warnings
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import onnx

from facenormals.atomic import atomic_path

INPUT_NAME = "image"
OUTPUT_NAME = "normals"
OPSET = 17
CONVENTION = "camera space unit normals: +x right, +y up, +z toward the camera; input RGB float [0,1] N×C×H×W"
METADATA_KEYS = ("arch", "variant", "size", "in_chans", "convention", "convention_version", "precision",
                 "source_sha256", "source_name", "producer", "prior")
# "prior" (issue 9): "none", or "absolute"/"residual" — then channels 3..6 of the input are the MediaPipe mesh
# normals (zero where uncovered) and their coverage: facenormals.model.with_prior / facenormals.mesh_prior.


@dataclass(frozen=True)
class ExportResult:
    path: Path
    precision: str
    size: int
    nodes: int
    bytes: int
    slimmed_from: int | None
    parity: object | None  # ParityReport

    def summary(self) -> str:
        slim = f", onnxslim {self.slimmed_from}→{self.nodes} nodes" if self.slimmed_from else f", {self.nodes} nodes"
        return f"wrote {self.path} ({self.precision}, {self.size}², {self.bytes / 1e6:.1f} MB{slim})"


def head_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the last Conv (the 1×1 to three channels) and every node after it (the L2 normalisation).

    These stay fp32 in the fp16 export and unquantised in INT8: quantised normalisation gives NaN and a
    quantised head turns pixels into zero vectors (the head's range is set by outliers).
    """
    nodes = list(model.graph.node)  # ONNX graphs are topologically sorted
    convs = [i for i, node in enumerate(nodes) if node.op_type == "Conv"]
    if not convs:
        raise ValueError("graph has no Conv node: not an ImageToNormal export")
    last = nodes[convs[-1]]
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    picked, queue = {last.name: last}, deque([last])
    while queue:
        for out in queue.popleft().output:
            for node in consumers.get(out, []):
                if node.name not in picked:
                    picked[node.name] = node
                    queue.append(node)
    return [node.name for node in nodes if node.name in picked]


def _name_nodes(model: onnx.ModelProto) -> None:
    """Unique names for every node: block lists and quantisation exclusions address nodes by name."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)


def _torch_to_onnx(module: object, in_chans: int, size: int) -> onnx.ModelProto:
    import torch

    dummy = torch.rand(1, in_chans, size, size)
    buffer = io.BytesIO()
    # The TorchScript exporter: deterministic, needs no onnxscript, and handles bilinear align_corners Resize.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "legacy exporter" notice: chosen on purpose
        torch.onnx.export(module, (dummy,), buffer, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                          opset_version=OPSET, do_constant_folding=True, dynamo=False)
    return onnx.load_from_string(buffer.getvalue())


def _slim(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int | None]:
    """onnxslim's folding and fusion, kept only when it removes nodes and the result still checks."""
    import onnxslim

    before = len(model.graph.node)
    try:
        slimmed = onnxslim.slim(model)
        onnx.checker.check_model(slimmed, full_check=True)
    except Exception:  # slimming is an optional improvement; the unslimmed graph is valid
        return model, None
    if len(slimmed.graph.node) >= before:
        return model, None
    return slimmed, before


def set_metadata(model: onnx.ModelProto, values: dict[str, object]) -> None:
    existing = {p.key: p for p in model.metadata_props}
    for key, value in values.items():
        prop = existing.get(key) or model.metadata_props.add()
        prop.key, prop.value = key, value if isinstance(value, str) else json.dumps(value)


def build_onnx(checkpoint: str | Path, size: int | None = None, fp16: bool = False) -> tuple[onnx.ModelProto, int | None]:
    """The checked ONNX model of a checkpoint's image→normal path (not yet written)."""
    from facenormals.checkpoint import load_image_to_normal
    from facenormals.fileio import file_sha256

    checkpoint = Path(checkpoint)
    module = load_image_to_normal(checkpoint)
    cfg = module.cfg
    size = int(size or cfg.input_size)
    if size <= 0 or size % 32:
        raise ValueError(f"--size must be a positive multiple of 32 (the encoder downsamples 32×), got {size}")
    model = _torch_to_onnx(module, cfg.in_chans, size)
    model, slimmed_from = _slim(model)
    _name_nodes(model)
    if fp16:
        from facenormals.export.fp16 import to_fp16

        model = to_fp16(model)
    import facenormals

    set_metadata(model, {
        "arch": cfg.arch, "variant": cfg.variant, "size": str(size), "in_chans": str(cfg.in_chans),
        "convention": CONVENTION, "convention_version": str(cfg.convention_version),
        "precision": "fp16" if fp16 else "fp32", "source_sha256": file_sha256(checkpoint),
        "source_name": checkpoint.name, "producer": f"facenormals {getattr(facenormals, '__version__', '?')}",
        "prior": cfg.prior, "prior_source": cfg.input_prior or "",
    })
    model.producer_name = "facenormals"
    onnx.checker.check_model(model, full_check=True)
    return model, slimmed_from


class ParityFailed(ValueError):
    """The export deviates from torch beyond tolerance: nothing was written at the output (``report`` says by how much)."""

    def __init__(self, out: Path, report: object) -> None:
        super().__init__(f"{out}: not written: the export fails the parity check against torch "
                         f"({report.summary()}); pass --keep-failed to write it anyway for inspection")
        self.out, self.report = out, report


def export_onnx(checkpoint: str | Path, out: str | Path, size: int | None = None, fp16: bool = False,
                check_parity: bool = True, parity_images: str | Path | None = None,
                keep_failed: bool = False) -> ExportResult:
    """Write the ONNX file atomically; with ``check_parity`` also measure it against torch on real face crops.

    The parity check runs on the file before it is renamed into place, so an export that fails it never
    appears at ``out`` (an existing file there is left as it was): :class:`ParityFailed` is raised instead,
    unless ``keep_failed`` (then the result's ``parity.passed`` is False).
    """
    out = Path(out)
    model, slimmed_from = build_onnx(checkpoint, size, fp16)
    data = model.SerializeToString()
    if len(data) >= 2**31:
        raise ValueError(f"{out}: model of {len(data)} bytes exceeds the 2 GB single-file protobuf limit")
    precision = "fp16" if fp16 else "fp32"
    size = int({p.key: p.value for p in model.metadata_props}["size"])
    parity = None
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
        if check_parity:
            from facenormals.export.parity import check_parity as run_parity
            from facenormals.export.parity import load_face_crops

            crops = load_face_crops(parity_images, size=size, limit=16) if parity_images else None
            parity = run_parity(checkpoint, tmp, precision, crops,
                                source_label=str(parity_images) if parity_images else None)
            if not parity.passed and not keep_failed:
                raise ParityFailed(out, parity)  # atomic_path removes the temporary file; ``out`` is untouched
    return ExportResult(out, precision, size, len(model.graph.node), len(data), slimmed_from, parity)
