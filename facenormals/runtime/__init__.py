"""facenormals.runtime: the inference runtime. Runs shipped and exported model files — ``.safetensors`` on torch,
``.onnx`` on ONNX Runtime (CPU, CUDA, TensorRT EP), ``.engine`` on TensorRT — behind one call signature, and never
builds them (building is ``facenormals.export``; ``facenormals.export.prepare`` builds what a backend needs and then
creates it here). Owns the backends, the TensorRT engine sidecar format, ONNX metadata reading and the machine report.
"""

from __future__ import annotations

from facenormals.runtime.backends import BACKEND_NAMES, Backend, Prepare, create_backend, warm_up
from facenormals.runtime.errors import BackendError

__all__ = ["BACKEND_NAMES", "Backend", "BackendError", "Prepare", "create_backend", "warm_up"]
