"""Inference backends: one call signature for torch, ONNX Runtime (CPU, CUDA, TensorRT EP) and TensorRT engines.

Every backend maps a float32 batch N×C×S×S, RGB in [0, 1], to float32 N×3×S×S unit normals in the
project's camera convention (+x right, +y up, +z toward the camera). ``C`` (``in_chans``) and ``S``
(``input_size``) come from the model (checkpoint config, ONNX metadata or engine sidecar), never assumed.

    backend = create_backend("auto")            # the shipped default model, best provider that really runs
    warm_up(backend)
    normals = backend(batch)

``providers`` lists what is *actually* active (``session.get_providers()`` for ONNX Runtime): asking
for CUDA on a machine without it warns and falls back, or raises with ``strict=True``.

The runtime runs files and never builds them: torch runs a ``.safetensors`` checkpoint, ONNX Runtime an ``.onnx``
(fp32, fp16-cast or INT8 Q/DQ), TensorRT an ``.engine``. An ONNX Runtime backend on a checkpoint (or the fp16-cast
graph of an fp32 ONNX) needs an ONNX made from it first: pass ``prepare`` (``facenormals.export.prepare.onnx_for``
exports once and caches by content), or export it yourself (``facenormals export onnx``). Without ``prepare``,
``auto`` runs a checkpoint on torch (or on the shipped INT8 twin, a file that exists).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from facenormals.prior import source_of
from facenormals.runtime.errors import BackendError
from facenormals.runtime.machine import cache_dir, no_nvidia_driver, physical_cores
from facenormals.runtime.onnx_info import onnx_model_info, read_header

# (model file, fp16) → an ONNX file that runs it: a checkpoint's export or an fp32 ONNX's fp16-cast graph
# (facenormals.export.prepare.onnx_for); the runtime calls it only when given one.
Prepare = Callable[[Path, bool], Path]

BACKEND_NAMES = ("torch", "ort-cpu", "ort-cuda", "ort-trt", "tensorrt", "auto")

# ONNX Runtime execution providers each ORT backend asks for, best first (CPU is the last resort).
ORT_PROVIDERS: dict[str, tuple[str, ...]] = {
    "ort-cpu": ("CPUExecutionProvider",),
    "ort-cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "ort-trt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
}


@runtime_checkable
class Backend(Protocol):
    """N×C×S×S float32 RGB [0, 1] → N×3×S×S float32 unit normals."""

    name: str
    input_size: int
    in_chans: int
    prior_source: str | None  # the coarse face a prior model's channels 3–6 carry (facenormals.prior); None: RGB
    providers: list[str]

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


def _check_batch(batch: np.ndarray, in_chans: int, size: int, name: str) -> np.ndarray:
    if not isinstance(batch, np.ndarray) or batch.ndim != 4 or batch.shape[1:] != (in_chans, size, size):
        shape = getattr(batch, "shape", type(batch).__name__)
        raise ValueError(f"{name}: expected a batch N×{in_chans}×{size}×{size}, got {shape}")
    return np.ascontiguousarray(batch, dtype=np.float32)


def _model_kind(model: Path) -> str:
    suffix = model.suffix.lower()
    if suffix == ".safetensors":
        return "checkpoint"
    if suffix == ".onnx":
        return "onnx"
    if suffix in (".engine", ".plan", ".trt"):
        return "engine"
    raise ValueError(f"{model}: unknown model file type {suffix!r} (expected .safetensors, .onnx or .engine)")


def _resolve(model: str | Path | None) -> Path:
    from facenormals.fileio import check_model_file
    from facenormals.zoo import resolve_model

    path = resolve_model(None if model is None else str(model))
    # The one check of every model file (format, face-normal I/O, metadata): run, eval, the API and
    # calibration all refuse a file that is not a facenormals model the same way, naming it.
    return check_model_file(path, "model")


# ---------------------------------------------------------------------------------------------- torch


class TorchBackend:
    """The reference: ``ImageToNormal`` from a checkpoint, fp32 (or fp16 autocast on CUDA)."""

    def __init__(self, checkpoint: Path, device: str = "cpu", fp16: bool = False,
                 threads: int | None = None) -> None:
        import torch

        from facenormals.checkpoint import load_image_to_normal

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendError("torch: CUDA requested but torch.cuda.is_available() is False")
        if device == "cpu" and threads:
            # torch's intra-op pool is process-wide: change it only when asked (its default is the physical cores).
            torch.set_num_threads(threads)
        self.torch = torch
        self.device = torch.device(device)
        self.fp16 = fp16 and self.device.type == "cuda"
        self.module = load_image_to_normal(checkpoint, map_location=self.device)
        self.input_size = self.module.cfg.input_size
        self.in_chans = self.module.cfg.in_chans
        self.prior_source = self.module.cfg.input_prior
        self.name = "torch"
        self.providers = [f"torch-{self.device.type}" + ("-fp16" if self.fp16 else "")]
        self.precision = "fp16-autocast" if self.fp16 else "fp32"
        self.max_batch: int | None = None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = _check_batch(batch, self.in_chans, self.input_size, self.name)
        torch = self.torch
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.fp16):
                out = self.module(x)
            return out.float().cpu().numpy()


# ---------------------------------------------------------------------------------------------- ONNX Runtime


TRT_EP_BATCH = (1, 4, 8)  # the TensorRT EP's optimisation profile: one engine serves every batch in 1..8


def provider_options(provider: str, fp16: bool = False, int8: bool = False, device_id: int = 0,
                     cache: Path | None = None, input_shape: tuple[str, int, int] | None = None,
                     model_key: str | None = None) -> dict[str, object]:
    """Documented ONNX Runtime provider options: TensorRT EP engine/timing caches and precision, CUDA EP device.

    ``input_shape`` = (input name, channels, size) gives the TensorRT EP an explicit batch profile, so a
    new batch size inside it does not trigger an engine rebuild. ``model_key`` (:func:`engine_cache_key`)
    names the engine cache folder: the EP keys engines by file name, tensor names and versions, not by
    weights, so a retrained model under the same name would otherwise reuse the old engine.
    ``fp16`` sets ``trt_fp16_enable`` (weak typing: the head may run fp16); the backends pass the
    fp16-cast graph instead and leave it off (:func:`create_backend`).
    """
    if provider == "TensorrtExecutionProvider":
        root = cache or cache_dir() / "trt-ep"
        engines = root / "engines" / model_key if model_key else root / "engines"
        timing = root / "timing"  # timing caches are per layer and GPU, safe to share across models
        for folder in (engines, timing):
            folder.mkdir(parents=True, exist_ok=True)
        profile = {}
        if input_shape is not None:
            name, chans, size = input_shape
            for key, n in zip(("min", "opt", "max"), TRT_EP_BATCH, strict=True):
                profile[f"trt_profile_{key}_shapes"] = f"{name}:{n}x{chans}x{size}x{size}"
        return {**profile,
            "device_id": device_id,
            "trt_fp16_enable": fp16,
            "trt_int8_enable": int8,  # with a Q/DQ model TensorRT uses the explicit scales, no calibration table
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(engines),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(timing),
            "trt_builder_optimization_level": 3,
        }
    if provider == "CUDAExecutionProvider":
        return {"device_id": device_id, "cudnn_conv_algo_search": "EXHAUSTIVE", "do_copy_in_default_stream": True}
    return {}


def engine_cache_key(onnx_path: Path, precision: str) -> str:
    """The TensorRT EP engine folder of one model file: its content hash and precision (never its name)."""
    from facenormals.fileio import file_sha256

    return f"{file_sha256(onnx_path)[:16]}-{precision}"


def ort_errors() -> tuple[type[BaseException], ...]:
    """ONNX Runtime's own exceptions (``Fail``, ``EPFail``, ``InvalidGraph``, ...): plain ``Exception``s, not
    ``RuntimeError``, so a TensorRT EP build failure would otherwise escape every ``except RuntimeError``."""
    try:
        from onnxruntime.capi import onnxruntime_pybind11_state as state
    except ImportError:
        return ()
    return tuple(v for v in vars(state).values() if isinstance(v, type) and issubclass(v, Exception))


_GPU_LIBRARIES_LOADED = False


def load_gpu_libraries() -> None:
    """Put pip-installed TensorRT/CUDA libraries in the process before a GPU session: ``import tensorrt`` loads
    libnvinfer, ``onnxruntime.preload_dlls()`` (ORT ≥ 1.21) the CUDA/cuDNN wheels; neither is on the loader path."""
    global _GPU_LIBRARIES_LOADED
    if _GPU_LIBRARIES_LOADED:
        return
    _GPU_LIBRARIES_LOADED = True
    import importlib.util

    import onnxruntime as ort

    if importlib.util.find_spec("tensorrt") is not None:
        try:
            import tensorrt  # noqa: F401
        except (ImportError, OSError) as err:  # a broken wheel: the session will say which provider dropped
            warnings.warn(f"import tensorrt failed ({err}); the TensorRT EP will not load", RuntimeWarning, stacklevel=3)
    if hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()
        except (OSError, RuntimeError) as err:
            warnings.warn(f"onnxruntime.preload_dlls() failed ({err})", RuntimeWarning, stacklevel=3)


class OrtBackend:
    """An ONNX Runtime session over an exported model (fp32, fp16-cast or INT8 Q/DQ)."""

    def __init__(self, name: str, onnx_path: Path, fp16: bool = False, threads: int | None = None,
                 strict: bool = False, device_id: int = 0, cache: Path | None = None) -> None:
        import onnxruntime as ort

        wanted = ORT_PROVIDERS[name]
        available = set(ort.get_available_providers())
        header = read_header(onnx_path)  # one read of the file for its metadata and input
        in_chans, size, meta = onnx_model_info(onnx_path, header)
        int8 = meta.get("precision") == "int8"
        requested = [p for p in wanted if p in available]
        missing = [p for p in wanted if p not in available]
        if wanted[0] not in available:
            message = (f"{name}: {wanted[0]} is not in this onnxruntime build (available: {sorted(available)}); "
                       "install the 'gpu' extra (onnxruntime-gpu)")
            if strict:
                raise BackendError(message)
            warnings.warn(message + f"; falling back to {requested[0]}", RuntimeWarning, stacklevel=3)
        if name == "ort-trt" and int8 and meta.get("int8_target") != "trt":
            warnings.warn(f"{onnx_path}: this INT8 model was quantised for CPU (uint8 activations); TensorRT needs "
                          "'facenormals calibrate int8 --target trt', unsupported nodes fall back to CUDA/CPU",
                          RuntimeWarning, stacklevel=3)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or physical_cores()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # spinning intra-op threads starve the capture/detect threads on small CPUs (measured: ~2× realtime FPS)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        input_name = header.input_name
        precision = meta.get("precision", "fp32")
        if any(p != "CPUExecutionProvider" for p in requested):
            load_gpu_libraries()
        key = engine_cache_key(onnx_path, precision) if "TensorrtExecutionProvider" in requested else None
        providers = [(p, provider_options(p, fp16=fp16, int8=int8, device_id=device_id, cache=cache,
                                          input_shape=(input_name, in_chans, size), model_key=key))
                     for p in requested]
        try:
            self.session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=providers)
        except ort_errors() as err:  # e.g. EPFail from a TensorRT engine build: let auto try the next backend
            raise BackendError(f"{name}: ONNX Runtime could not create a session on {requested}: "
                               f"{type(err).__name__}: {err}") from err
        self.strict = strict
        self.requested = requested
        # A provider can be available in the build yet fail to load (no CUDA driver, missing libcudnn).
        dropped = [p for p in requested if p not in self.providers]
        if dropped and not missing:
            message = f"{name}: requested {dropped} but ONNX Runtime runs on {self.providers}"
            if strict:
                raise BackendError(message)
            warnings.warn(message, RuntimeWarning, stacklevel=3)
        self.name = name
        self.model_path = onnx_path
        self.metadata = meta
        # What the graph carries; with the TensorRT EP also what runs (no precision flags are set, see create_backend).
        self.precision = precision + ("+trt_fp16_enable" if fp16 and "TensorrtExecutionProvider" in requested else "")
        self.in_chans = in_chans
        self.prior_source = source_of(in_chans, meta.get("prior_source"))
        self.input_size = size
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    @property
    def providers(self) -> list[str]:
        """Re-read on every access: after an ``EPFail`` at run time ONNX Runtime moves the session to CUDA/CPU."""
        return list(self.session.get_providers())

    @property
    def max_batch(self) -> int | None:
        """The TensorRT EP's profile maximum (a larger batch would rebuild the engine mid-stream); None: unlimited."""
        return TRT_EP_BATCH[-1] if "TensorrtExecutionProvider" in self.providers else None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = _check_batch(batch, self.in_chans, self.input_size, self.name)
        limit = self.max_batch
        if limit is not None and len(batch) > limit:
            raise ValueError(f"{self.name}: batch of {len(batch)} exceeds the TensorRT profile maximum {limit} "
                             f"(batch 1..{limit}); split it or lower --max-faces")
        return self.session.run([self.output_name], {self.input_name: batch})[0]


# ---------------------------------------------------------------------------------------------- TensorRT


class TensorRTBackend:
    """A serialized TensorRT engine run with ``execute_async_v3`` on torch CUDA tensors."""

    def __init__(self, engine_path: Path, device: int = 0) -> None:
        from facenormals.runtime.tensorrt import TensorRTRunner

        self.runner = TensorRTRunner(engine_path, device=device)
        self.name = "tensorrt"
        self.in_chans = self.runner.in_chans
        self.prior_source = source_of(self.in_chans, self.runner.header.model.get("prior_source"))
        self.input_size = self.runner.input_size
        self.providers = [f"tensorrt-{self.runner.header.trt_version}-{self.runner.header.precision}"]
        typing = "strongly typed" if self.runner.header.strongly_typed else "weakly typed"
        self.precision = f"{self.runner.header.precision} ({typing})"
        self.max_batch = self.runner.header.batch[2]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = _check_batch(batch, self.in_chans, self.input_size, self.name)
        return self.runner.run_numpy(batch)


# ---------------------------------------------------------------------------------------------- factory


def _torch_cuda_available() -> bool:
    if no_nvidia_driver():
        return False  # no CUDA, and torch is not imported (~3 s of start-up) to learn it
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _onnx_path(name: str, model: Path, fp16: bool, prepare: Prepare | None) -> Path:
    """The ONNX an ORT backend runs for ``model``; made by ``prepare`` when it must be built (never here)."""
    kind = _model_kind(model)
    if kind == "engine":
        raise ValueError(f"{model}: a TensorRT engine runs only on the 'tensorrt' backend")
    if kind == "onnx" and not fp16:
        return model
    if kind == "onnx" and read_precision(model) != "fp32":
        return model  # already fp16 or INT8: run as is
    if prepare is None:
        what = "an fp16-cast graph" if kind == "onnx" else "an ONNX export"
        raise BackendError(f"{name}: {model.name} needs {what} first and the runtime never builds one: run "
                           f"'facenormals export onnx{' --fp16' if fp16 else ''}' and pass the .onnx, or pass "
                           "prepare=facenormals.export.prepare.onnx_for")
    return prepare(model, fp16)


def read_precision(onnx_path: Path) -> str:
    """fp32 | fp16 | int8, from the ONNX file's metadata (fp32 when it says nothing)."""
    from facenormals.runtime.onnx_info import read_metadata

    return read_metadata(onnx_path).get("precision", "fp32")


def create_backend(name: str, model: str | Path | None = None, *, prepare: Prepare | None = None,
                   **options: object) -> Backend:
    """Build a backend by name.

    ``model``: a checkpoint (``.safetensors``), an ``.onnx`` (fp32, fp16-cast or INT8 Q/DQ) or a TensorRT
    ``.engine``; None means the shipped default (``facenormals.zoo.resolve_model(None)``).
    Options: ``device`` ("cpu"/"cuda", torch), ``fp16`` (torch CUDA autocast; ORT TensorRT EP precision;
    fp16 export of a checkpoint for ORT CUDA), ``threads`` (CPU intra-op threads, default physical cores),
    ``strict`` (raise instead of falling back to another provider), ``device_id``, ``cache`` (TRT EP cache
    folder). ``prepare``: what makes the ONNX an ORT backend needs from a checkpoint (or the fp16-cast graph), see
    the module docstring; None: only files that exist run.
    """
    if name not in BACKEND_NAMES:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
    path = _resolve(model)
    fp16 = bool(options.pop("fp16", False))
    threads = options.pop("threads", None)
    if name == "auto":
        return _auto_backend(path, fp16=fp16, threads=threads, prepare=prepare, **options)
    if name == "torch":
        if _model_kind(path) != "checkpoint":
            raise ValueError(f"{path}: the torch backend needs a .safetensors checkpoint")
        device = str(options.pop("device", "cuda" if _torch_cuda_available() else "cpu"))
        _no_extra(name, options)
        return TorchBackend(path, device=device, fp16=fp16, threads=threads)
    if name == "tensorrt":
        if _model_kind(path) != "engine":
            raise ValueError(f"{path}: the tensorrt backend needs an engine; build one with 'facenormals export trt'")
        device_id = int(options.pop("device_id", 0))
        _no_extra(name, options)
        return TensorRTBackend(path, device=device_id)
    strict = bool(options.pop("strict", False))
    device_id = int(options.pop("device_id", 0))
    cache = options.pop("cache", None)
    _no_extra(name, options)
    # fp16 on a GPU EP means the fp16-cast graph (fp32 I/O and head): TensorRT 11 has no FP16 flag any more, and
    # TensorRT 10's flag (trt_fp16_enable) lets the builder run the L2-normalisation head in fp16, which underflows.
    onnx_path = _onnx_path(name, path, fp16 and name in ("ort-cuda", "ort-trt"), prepare)
    return OrtBackend(name, onnx_path, fp16=False, threads=threads, strict=strict, device_id=device_id,
                      cache=Path(cache) if cache else None)


def _no_extra(name: str, options: dict[str, object]) -> None:
    if options:
        raise TypeError(f"backend {name!r} got unknown options {sorted(options)}")


def _auto_backend(path: Path, fp16: bool, threads: object, prepare: Prepare | None, **options: object) -> Backend:
    """The fastest backend that really runs: TensorRT engine > ORT TensorRT EP > ORT CUDA > torch CUDA > ORT CPU
    (on the CPU, a shipped checkpoint's INT8 twin when there is one: ``facenormals.zoo.int8_twin``; then the
    fp32 export, then torch on the CPU). Any failure to build one, ONNX Runtime's own exceptions included,
    moves on to the next with a warning. ORT on a checkpoint is a candidate only with ``prepare``."""
    import onnxruntime as ort

    kind = _model_kind(path)
    if kind == "engine":
        return create_backend("tensorrt", path, **options)
    available = set(ort.get_available_providers())
    onnx_runs = kind == "onnx" or prepare is not None  # ORT needs an ONNX; only prepare makes one
    candidates: list[tuple[str, Path, dict[str, object]]] = []
    if "TensorrtExecutionProvider" in available and onnx_runs:
        candidates.append(("ort-trt", path, {"fp16": True, "strict": True}))
    if "CUDAExecutionProvider" in available and onnx_runs:
        candidates.append(("ort-cuda", path, {"strict": True}))
    if kind == "checkpoint" and _torch_cuda_available():
        candidates.append(("torch", path, {"device": "cuda", "fp16": True}))
    if kind == "checkpoint":
        from facenormals.zoo import int8_twin

        twin = int8_twin(path)  # a shipped model's calibrated INT8: ~2× faster on the CPU
        if twin is not None:
            candidates.append(("ort-cpu", twin, {"strict": True}))
    if onnx_runs:
        candidates.append(("ort-cpu", path, {"strict": True}))
    if kind == "checkpoint":
        candidates.append(("torch", path, {"device": "cpu"}))
    errors = []
    for name, target, extra in candidates:
        try:
            return create_backend(name, target, prepare=prepare, threads=threads, **{**extra, **options})
        except (BackendError, ImportError, RuntimeError, OSError, *ort_errors()) as err:  # present but unusable here
            errors.append(f"{name} ({target.name}): {err}")
            warnings.warn(f"auto: {name} on {target.name} does not run here ({err}); trying the next backend",
                          RuntimeWarning, stacklevel=2)
    raise BackendError("auto: no backend runs here:\n  " + "\n  ".join(errors))


def warm_up(backend: Backend, batch_sizes: tuple[int, ...] = (1,), runs: int = 2) -> list[str]:
    """Run a few zero batches so first-call costs (allocations, kernel selection, TRT EP builds) are paid up front.

    Returns the providers active afterwards. A TensorRT EP that fails at its first run (``EPFail``) leaves the
    session on CUDA/CPU: that warns (raises ``BackendError`` for a strict backend), so rows are not mislabelled.
    """
    before = list(backend.providers)
    for n in batch_sizes:
        dummy = np.zeros((n, backend.in_chans, backend.input_size, backend.input_size), np.float32)
        for _ in range(runs):
            backend(dummy)
    after = list(backend.providers)
    if after != before:
        message = f"{backend.name}: providers changed during warm-up, {before} → {after}"
        if getattr(backend, "strict", False):
            raise BackendError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    return after
