"""Building what a runtime backend needs before it runs: a checkpoint's ONNX export, the fp16-cast graph of an fp32
ONNX, a TensorRT engine rebuilt on this machine. The runtime (``facenormals.runtime``) never builds; tools above it
(``facenormals run``/``bench``, the benchmarks, the GPU check) create their backends here so that ``--backend ort-cpu
--model CKPT`` exports once and runs.

    backend = create_backend("auto", "my.safetensors")   # = runtime.create_backend(..., prepare=onnx_for)
"""

from __future__ import annotations

import warnings
from pathlib import Path

from facenormals.fileio import file_sha256
from facenormals.runtime.backends import Backend
from facenormals.runtime.backends import create_backend as create_runtime_backend
from facenormals.runtime.engine_header import EngineMismatchError, check_engine, compatibility_problems, read_header
from facenormals.runtime.machine import cache_dir
from facenormals.runtime.onnx_info import read_metadata


def onnx_for_checkpoint(checkpoint: Path, fp16: bool = False) -> Path:
    """Export (once) and cache the ONNX of a checkpoint; keyed by the checkpoint's content hash."""
    from facenormals.export.onnx_export import export_onnx

    digest = file_sha256(checkpoint)[:16]
    target = cache_dir() / "onnx" / f"{checkpoint.stem}-{digest}{'-fp16' if fp16 else ''}.onnx"
    if not target.is_file():
        export_onnx(checkpoint, target, fp16=fp16, check_parity=False)
    return target


def fp16_onnx(onnx_path: Path) -> Path:
    """The fp16-cast graph of an fp32 ONNX (``export/fp16.py``), cached by content hash; fp16 and INT8 files as is."""
    import onnx

    from facenormals.atomic import write_bytes_atomic
    from facenormals.export.fp16 import to_fp16
    from facenormals.export.onnx_export import set_metadata

    if read_metadata(onnx_path).get("precision", "fp32") != "fp32":
        return onnx_path
    target = cache_dir() / "onnx" / f"{onnx_path.stem}-{file_sha256(onnx_path)[:16]}-fp16.onnx"
    if not target.is_file():
        model = to_fp16(onnx.load(str(onnx_path)))
        set_metadata(model, {"precision": "fp16"})
        write_bytes_atomic(target, model.SerializeToString())
    return target


def onnx_for(model: Path, fp16: bool = False) -> Path:
    """The runtime's ``prepare``: the ONNX that runs ``model`` (a checkpoint's export, or an fp32 ONNX's fp16 cast)."""
    model = Path(model)
    if model.suffix.lower() == ".onnx":
        return fp16_onnx(model) if fp16 else model
    return onnx_for_checkpoint(model, fp16=fp16)


def ensure_engine(engine: Path, onnx_path: Path, device: int = 0) -> None:
    """Rebuild ``engine`` from ``onnx_path`` on this GPU when it was built for another TensorRT version or GPU (or has
    no valid sidecar), keeping its precision and batch profile; an engine that runs here is left alone."""
    from facenormals.export.tensorrt_build import build_engine
    from facenormals.runtime.tensorrt import gpu_identity, import_tensorrt

    trt = import_tensorrt()
    gpu_name, capability = gpu_identity(device)
    try:
        check_engine(engine, trt.__version__, capability, gpu_name)
        return
    except (EngineMismatchError, FileNotFoundError):
        pass
    try:
        old = read_header(engine, verify_hash=False)
        precision, batch = old.precision, old.batch
        reason = "; ".join(compatibility_problems(old, trt.__version__, capability)) or "sidecar mismatch"
    except (EngineMismatchError, FileNotFoundError) as err:
        precision, batch, reason = "fp16", (1, 4, 8), str(err)
    warnings.warn(f"{engine}: rebuilding from {onnx_path} ({reason})", RuntimeWarning, stacklevel=3)
    build_engine(onnx_path, engine, precision=precision, batch=batch, device=device)


def create_backend(name: str, model: str | Path | None = None, rebuild_from: str | Path | None = None,
                   **options: object) -> Backend:
    """:func:`facenormals.runtime.create_backend`, building what it needs first: the ONNX of a checkpoint for ONNX
    Runtime, the fp16 cast, and (``rebuild_from=ONNX``) a TensorRT engine rebuilt when it does not run here."""
    if rebuild_from is not None and model is not None:
        ensure_engine(Path(model), Path(rebuild_from), device=int(options.get("device_id", 0)))
    return create_runtime_backend(name, model, prepare=onnx_for, **options)
