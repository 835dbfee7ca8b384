"""What an exported ONNX file says about itself (metadata, input name, channels, size), read without running it."""

from __future__ import annotations

from pathlib import Path

from facenormals.runtime.errors import BackendError


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (arch, precision, prior_source, source_sha256, ...)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def onnx_input_name(onnx_path: Path) -> str:
    """The name of the graph's (one) input tensor."""
    import onnx

    return onnx.load(str(onnx_path), load_external_data=False).graph.input[0].name


def onnx_model_info(onnx_path: Path) -> tuple[int, int, dict[str, str]]:
    """(in_chans, input_size, metadata) of an exported model, from its metadata or, failing that, its input shape."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    in_chans = int(meta.get("in_chans") or dims[1] or 3)
    size = int(meta.get("size") or dims[2] or 0)
    if not size:
        raise BackendError(f"{onnx_path}: input size unknown (no 'size' metadata and a dynamic height)")
    return in_chans, size, meta
