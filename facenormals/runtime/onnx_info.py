"""What an exported ONNX file says about itself (metadata, input name, channels, size), read without running it.

Read through ONNX Runtime (a session with every graph optimisation off: ~30–70 ms for the shipped INT8 files), so
the CPU routes do not import the ``onnx`` package (~0.9 s of start-up); a graph ONNX Runtime cannot load on the CPU
(an fp16 cast without CPU kernels) is read with ``onnx`` instead. A header is read once per file version (cached by
path, size, inode and modification time): the API's start-up asks for the INT8 twin's twice (the zoo, then the backend).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from facenormals.runtime.errors import BackendError

Dims = list[int | str]  # a tensor's shape: sizes, or the names ("?" when unnamed) of dynamic dimensions


@dataclass(frozen=True)
class OnnxHeader:
    metadata: dict[str, str]  # metadata_props: arch, precision, prior_source, source_sha256, ...
    inputs: dict[str, Dims]  # graph inputs in order
    outputs: dict[str, Dims]

    @property
    def input_name(self) -> str:
        return next(iter(self.inputs))

    @property
    def input_dims(self) -> tuple[int, ...]:
        """The first input's shape, 0 for a dynamic dimension."""
        return tuple(d if isinstance(d, int) else 0 for d in next(iter(self.inputs.values())))


def read_header(path: str | Path) -> OnnxHeader:
    """The file's metadata, inputs and outputs (a fresh copy: callers may edit its dicts)."""
    path = Path(path).resolve()
    stat = path.stat()  # a missing file raises here, as the readers would
    cached = _cached_header(str(path), stat.st_size, stat.st_ino, stat.st_mtime_ns)
    return OnnxHeader(dict(cached.metadata), {k: list(v) for k, v in cached.inputs.items()},
                      {k: list(v) for k, v in cached.outputs.items()})


@lru_cache(maxsize=16)
def _cached_header(path: str, _size: int, _inode: int, _mtime_ns: int) -> OnnxHeader:
    """One read per file version: the stat fields are the cache key, so a rewritten file is read again."""
    return _header_from_runtime(Path(path)) or _header_from_onnx(Path(path))


def _header_from_runtime(path: Path) -> OnnxHeader | None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3  # errors only: a failure here falls back to the onnx package
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception:  # any load failure (no CPU kernel, an odd opset, not ONNX): read the file with onnx instead
        return None

    def dims(arg: object) -> Dims:
        return [d if isinstance(d, int) else (d or "?") for d in arg.shape]

    return OnnxHeader(dict(session.get_modelmeta().custom_metadata_map),
                      {i.name: dims(i) for i in session.get_inputs()}, {o.name: dims(o) for o in session.get_outputs()})


def _header_from_onnx(path: Path) -> OnnxHeader:
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def dims(value_info: object) -> Dims:
        return [d.dim_value or d.dim_param or "?" for d in value_info.type.tensor_type.shape.dim]

    return OnnxHeader({p.key: p.value for p in model.metadata_props}, {i.name: dims(i) for i in model.graph.input},
                      {o.name: dims(o) for o in model.graph.output})


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (arch, precision, prior_source, source_sha256, ...)."""
    return read_header(path).metadata


def onnx_model_info(onnx_path: Path, header: OnnxHeader | None = None) -> tuple[int, int, dict[str, str]]:
    """(in_chans, input_size, metadata) of an exported model, from its metadata or, failing that, its input shape
    (``header``: the file's, when already read)."""
    header = header or read_header(onnx_path)
    meta, dims = header.metadata, (*header.input_dims, 0, 0, 0, 0)
    in_chans = int(meta.get("in_chans") or dims[1] or 3)
    size = int(meta.get("size") or dims[2] or 0)
    if not size:
        raise BackendError(f"{onnx_path}: input size unknown (no 'size' metadata and a dynamic height)")
    return in_chans, size, meta
