"""TensorRT engine build from an exported ONNX file, for TensorRT 10 and 11.

TensorRT 10 builds precision from builder flags (weak typing) or, opt-in, from the graph (strongly typed).
TensorRT 11 removed the precision flags: every network is strongly typed. Both are built strongly typed
here: FP16 from the FP16-cast ONNX (``export/fp16.py``), INT8 from a Q/DQ ONNX (``calibrate int8 --target
trt``). Weak typing's FP16 flag lets the builder run the normalisation head (ReduceL2 → Clip → Div) in
fp16, where the sum of squares and its epsilon underflow; the cast graph pins it to fp32. ``plan_build``
decides, from the ONNX metadata and the TensorRT major version, which ONNX to parse and which flags to
set; it needs no TensorRT and is tested on CPU. ``build_engine`` then drives the builder: an optimisation
profile over the batch, a persistent timing cache, and the JSON sidecar (``engine_header.py``).
"""

from __future__ import annotations

import hashlib
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx

from facenormals.atomic import write_bytes_atomic
from facenormals.runtime.engine_header import EngineHeader, write_header
from facenormals.runtime.machine import cache_dir
from facenormals.runtime.onnx_info import onnx_model_info
from facenormals.runtime.tensorrt import gpu_identity, import_tensorrt

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class BuildPlan:
    cast_fp16: bool  # parse the FP16-cast graph made from this fp32 ONNX
    strongly_typed: bool  # precisions come from the graph
    builder_flags: tuple[str, ...]  # names in trt.BuilderFlag (TensorRT 10 weak typing only)


def trt_major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError:
        raise ValueError(f"unparseable TensorRT version {version!r}") from None


def plan_build(onnx_meta: dict[str, str], qdq_problems: list[str], precision: str, major: int) -> BuildPlan:
    """Which graph and flags build ``precision`` on TensorRT ``major`` from an ONNX with this metadata."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if major < 10:
        raise ValueError(f"TensorRT {major}.x is not supported (10 or newer: name-based I/O, execute_async_v3)")
    source = onnx_meta.get("precision", "fp32")
    if precision == "int8":
        if source != "int8":
            raise ValueError(f"--int8 needs the Q/DQ model from 'facenormals calibrate int8 --target trt', "
                             f"this ONNX is {source}")
        if qdq_problems:
            raise ValueError("this Q/DQ model is not TensorRT-compatible (calibrate with --target trt): "
                             + "; ".join(qdq_problems[:3]) + (" ..." if len(qdq_problems) > 3 else ""))
        # Explicit quantisation, strongly typed on 10 too: the INT8+FP16 flags would let the fp32 head run fp16.
        return BuildPlan(False, True, ())
    if source == "int8":
        raise ValueError(f"this ONNX is INT8 Q/DQ; build it with --int8, or pass the fp32/fp16 export for {precision}")
    if precision == "fp32":
        if source != "fp32":
            raise ValueError(f"an fp32 engine needs the fp32 ONNX, this one is {source}")
        return BuildPlan(False, True, ())
    # fp16: the cast graph (I/O and head fp32) on 10 and 11 alike; 11 has no FP16 flag, 10's would cast the head
    return BuildPlan(source != "fp16", True, ())


def default_timing_cache(gpu_name: str, compute_capability: str, trt_version: str) -> Path:
    """Per GPU model, compute capability and TensorRT version: tactics timed on one card mislead another."""
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-").lower() or "gpu"
    return cache_dir() / "trt" / f"timing-{gpu}-sm{compute_capability.replace('.', '')}-trt{trt_version}.cache"


def attach_timing_cache(config: object, path: Path) -> object:
    """Load ``path`` into the builder config; a corrupt or mismatched file falls back to an empty cache."""
    try:
        cache = config.create_timing_cache(path.read_bytes() if path.is_file() else b"")
    except (OSError, RuntimeError, TypeError) as err:
        warnings.warn(f"{path}: unreadable timing cache ({err}); starting an empty one", RuntimeWarning, stacklevel=2)
        cache = None
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return cache
    if cache is not None:
        warnings.warn(f"{path}: timing cache rejected (other GPU or TensorRT); starting an empty one",
                      RuntimeWarning, stacklevel=2)
    cache = config.create_timing_cache(b"")
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        raise RuntimeError("TensorRT refused an empty timing cache")
    return cache


def build_engine(onnx_path: str | Path, out: str | Path, precision: str = "fp16",
                 batch: tuple[int, int, int] = (1, 4, 8), timing_cache: str | Path | None = None,
                 workspace_gb: float = 2.0, device: int = 0) -> EngineHeader:
    """Build and write ``out`` (a plain TensorRT plan) and its sidecar on CUDA device ``device``; returns the header."""
    onnx_path, out = Path(onnx_path), Path(out)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {onnx_path}")
    import_tensorrt()  # say how to get TensorRT before asking for a GPU
    gpu_identity(device)
    import torch

    with torch.cuda.device(device):  # the builder times tactics on the current device
        return _build_engine(onnx_path, out, precision, batch, timing_cache, workspace_gb, device)


def _build_engine(onnx_path: Path, out: Path, precision: str, batch: tuple[int, int, int],
                  timing_cache: str | Path | None, workspace_gb: float, device: int) -> EngineHeader:
    from facenormals.export.fp16 import to_fp16
    from facenormals.export.int8 import trt_qdq_problems

    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {onnx_path}")
    if not 1 <= batch[0] <= batch[1] <= batch[2]:
        raise ValueError(f"batch profile must satisfy 1 ≤ min ≤ opt ≤ max, got {batch}")
    model = onnx.load(str(onnx_path))
    in_chans, size, meta = onnx_model_info(onnx_path)
    problems = trt_qdq_problems(model) if meta.get("precision") == "int8" else []
    trt = import_tensorrt()
    plan = plan_build(meta, problems, precision, trt_major(trt.__version__))
    gpu_name, capability = gpu_identity(device)
    if plan.cast_fp16:
        model = to_fp16(model)
    onnx_bytes = model.SerializeToString()

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    strongly_typed_flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if plan.strongly_typed and strongly_typed_flag is not None:  # opt-in on 10.x; accepted and implied on 11.x
        flags |= 1 << int(strongly_typed_flag)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError(f"{onnx_path}: TensorRT's ONNX parser failed:\n  " + "\n  ".join(errors))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    for flag in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    input_name = network.get_input(0).name
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, *[(n, in_chans, size, size) for n in batch])
    config.add_optimization_profile(profile)

    cache_path = Path(timing_cache) if timing_cache else default_timing_cache(gpu_name, capability, trt.__version__)
    attach_timing_cache(config, cache_path)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"{onnx_path}: TensorRT failed to build a {precision} engine (see the log above)")
    engine_bytes = bytes(serialized)
    write_bytes_atomic(out, engine_bytes)  # the engine first: a failing cache write must not lose a long build
    header = EngineHeader(
        trt_version=trt.__version__, gpu_name=gpu_name, compute_capability=capability, precision=precision,
        strongly_typed=plan.strongly_typed, batch=tuple(batch), in_chans=in_chans, size=size,
        input_name=input_name, output_name=network.get_output(0).name,
        onnx_sha256=hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        engine_sha256=hashlib.sha256(engine_bytes).hexdigest(), model=meta)
    write_header(out, header)
    try:
        write_bytes_atomic(cache_path, bytes(config.get_timing_cache().serialize()))
    except (OSError, RuntimeError, AttributeError) as err:  # only a speed-up for the next build
        warnings.warn(f"{cache_path}: timing cache not saved ({err})", RuntimeWarning, stacklevel=2)
    return header
