"""The machine the runtime runs on: CPU name and physical cores, the per-user cache folder, and what will really run
here (ONNX Runtime wheels and providers, TensorRT, CUDA) with the known bad combinations."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's marketing name, for benchmark reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def physical_cores() -> int:
    """Physical cores this process may use: SMT siblings count once (intra-op threads beyond that only contend)."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    cores: set[str] = set()
    for cpu in allowed:
        siblings = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            cores.add(siblings.read_text().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))


def no_nvidia_driver() -> bool:
    """True when this is Linux and no NVIDIA driver is loaded: no CUDA here, known without importing torch (~3 s)."""
    return platform.system() == "Linux" and not Path("/proc/driver/nvidia").exists()


def cache_dir() -> Path:
    """Per-user cache for exported ONNX files and TensorRT engine/timing caches (``FACENORMALS_CACHE`` overrides)."""
    root = os.environ.get("FACENORMALS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "facenormals")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _installed(prefix: str) -> dict[str, str]:
    """{distribution name: version} of installed wheels whose name starts with ``prefix``."""
    import importlib.metadata as metadata

    found = {}
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name.startswith(prefix):
            found[name] = dist.version
    return found


def system_report() -> dict[str, object]:
    """What will actually run here: ORT wheels and providers, TensorRT, CUDA, GPUs, and known bad combinations.

    ``onnxruntime`` and ``onnxruntime-gpu`` install into the same folder and the last one wins, so two ORT wheels
    can hide the GPU providers without an error; TensorRT 11 needs ORT ≥ 1.27 for the TensorRT EP.
    """
    import onnxruntime as ort

    ort_wheels = _installed("onnxruntime")
    trt_wheels = {k: v for k, v in _installed("tensorrt").items() if k in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13")}
    report: dict[str, object] = {"onnxruntime": ort.__version__, "onnxruntime_wheels": ort_wheels,
                                 "providers": ort.get_available_providers(), "tensorrt": trt_wheels, "cpu": cpu_model()}
    try:
        import torch

        report["torch"], report["torch_cuda"] = torch.__version__, torch.version.cuda
        report["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] \
            if torch.cuda.is_available() else []
    except ImportError:
        report["torch"], report["gpus"] = None, []
    report["problems"] = runtime_problems(report)
    return report


def runtime_problems(report: dict[str, object]) -> list[str]:
    """Why a GPU path would not run or would silently fall back, from a :func:`system_report`."""
    problems = []
    wheels = [w for w in report.get("onnxruntime_wheels", {}) if w in ("onnxruntime", "onnxruntime-gpu")]
    if len(wheels) > 1:
        problems.append(f"both {' and '.join(sorted(wheels))} are installed: they share one folder and the last "
                        "installed wins; pip uninstall -y onnxruntime onnxruntime-gpu, then install only onnxruntime-gpu")
    providers = set(report.get("providers", []))
    if report.get("gpus") and not providers & {"CUDAExecutionProvider", "TensorrtExecutionProvider"}:
        problems.append("a CUDA GPU is visible but this onnxruntime build has no GPU providers (CPU wheel)")
    trt_versions = list(report.get("tensorrt", {}).values())
    ort_version = tuple(int(x) for x in str(report.get("onnxruntime", "0.0")).split(".")[:2] if x.isdigit())
    if any(v.split(".")[0] == "11" for v in trt_versions) and ort_version < (1, 27):
        problems.append(f"TensorRT {trt_versions[0]} with onnxruntime {report.get('onnxruntime')}: the TensorRT EP "
                        "supports TensorRT 11 only from onnxruntime 1.27 (pin tensorrt<11 or upgrade onnxruntime-gpu)")
    if "TensorrtExecutionProvider" in providers and not trt_versions:
        problems.append("the TensorRT EP is listed but no tensorrt wheel is installed: sessions will fall back to CUDA")
    return problems
