"""The JSON sidecar of a TensorRT engine: what built it, for which GPU, from which model.

A serialized engine only runs on the TensorRT version that built it and on GPUs of the same compute
capability. ``model.engine`` stays a plain TensorRT plan (trtexec and Triton load it as is); the sidecar
``model.engine.json`` records the build so a loader can refuse a foreign engine with a clear message, or
rebuild it, instead of failing inside ``deserialize_cuda_engine``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from facenormals.atomic import write_text_atomic
from facenormals.fileio import file_sha256

HEADER_FORMAT = 1


class EngineMismatchError(RuntimeError):
    """The engine was built for another TensorRT version or GPU, or its files do not belong together."""


@dataclass(frozen=True)
class EngineHeader:
    trt_version: str
    gpu_name: str
    compute_capability: str  # "major.minor", e.g. "9.0" for H100
    precision: str  # fp32 | fp16 | int8
    strongly_typed: bool
    batch: tuple[int, int, int]  # optimisation profile min, opt, max
    in_chans: int
    size: int
    input_name: str
    output_name: str
    onnx_sha256: str
    engine_sha256: str
    model: dict[str, str]  # the ONNX metadata (arch, variant, source checkpoint hash, ...)
    format: int = HEADER_FORMAT

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "batch": list(self.batch)}


def sidecar_path(engine: str | Path) -> Path:
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def write_header(engine: str | Path, header: EngineHeader) -> Path:
    path = sidecar_path(engine)
    write_text_atomic(path, json.dumps(header.as_dict(), indent=2, sort_keys=True) + "\n")
    return path


def read_header(engine: str | Path, verify_hash: bool = True) -> EngineHeader:
    """The sidecar of ``engine``, validated; with ``verify_hash`` the engine file must be the one it describes."""
    engine = Path(engine)
    if not engine.is_file():
        raise FileNotFoundError(f"TensorRT engine not found: {engine}")
    path = sidecar_path(engine)
    if not path.is_file():
        raise EngineMismatchError(f"{engine}: no build sidecar {path.name}; rebuild it with 'facenormals export trt' "
                                  "so its TensorRT version and GPU are known")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise EngineMismatchError(f"{path}: corrupt engine sidecar ({err})") from err
    if not isinstance(data, dict) or data.get("format") != HEADER_FORMAT:
        raise EngineMismatchError(f"{path}: engine sidecar format {data.get('format') if isinstance(data, dict) else '?'}"
                                  f", this version reads {HEADER_FORMAT}")
    names = {f.name for f in fields(EngineHeader)}
    missing = sorted(names - set(data))
    if missing:
        raise EngineMismatchError(f"{path}: engine sidecar lacks {', '.join(missing)}")
    header = EngineHeader(**{**{k: data[k] for k in names}, "batch": tuple(data["batch"])})
    if verify_hash and file_sha256(engine) != header.engine_sha256:
        raise EngineMismatchError(f"{engine}: file does not match its sidecar {path.name} (engine replaced or "
                                  "corrupt); rebuild it")
    return header


def compatibility_problems(header: EngineHeader, trt_version: str, compute_capability: str) -> list[str]:
    """Why this engine cannot be deserialized here (empty when it can).

    Engines are tied to the exact TensorRT version and to the compute capability they were built for
    (no version- or hardware-compatibility build flags are used: they cost speed).
    """
    problems = []
    if header.trt_version != trt_version:
        problems.append(f"built with TensorRT {header.trt_version}, this is TensorRT {trt_version}")
    if header.compute_capability != compute_capability:
        problems.append(f"built for compute capability {header.compute_capability} ({header.gpu_name}), "
                        f"this GPU is {compute_capability}")
    return problems


def check_engine(engine: str | Path, trt_version: str, compute_capability: str, gpu_name: str = "") -> EngineHeader:
    """The engine's header if it runs here; otherwise ``EngineMismatchError`` saying why and how to fix it."""
    header = read_header(engine)
    problems = compatibility_problems(header, trt_version, compute_capability)
    if problems:
        raise EngineMismatchError(f"{engine}: " + "; ".join(problems) + ". Rebuild it on this machine with "
                                  "'facenormals export trt --onnx MODEL.onnx --out ENGINE', or pass rebuild_from=ONNX "
                                  "to facenormals.export.prepare.create_backend to rebuild it automatically")
    if gpu_name and header.gpu_name != gpu_name:
        import warnings

        warnings.warn(f"{engine}: built on {header.gpu_name}, running on {gpu_name} (same compute capability: "
                      "it runs, but tactics were timed on the other GPU)", RuntimeWarning, stacklevel=2)
    return header
