"""facenormals: real-time surface normals of human faces from a colour camera, fused with RGB-D depth.

Implements "Cross-modal Deep Face Normals with Deactivable Skip Connections" (Abrevaya, Boukhayma,
Torr, Boyer, CVPR 2020). Normal convention: camera space, +x right, +y up, +z toward the camera.

This package is the core: cameras (``camera``), faces and the one MediaPipe wrapper (``faces``), crops and the
per-frame engine (``crops``, ``engine``), the fusion stage (``fusion_stage`` over ``fusion``), the API (``api``), the
model and checkpoints, the shipped-model registry (``zoo``), the inference runtime that runs model files and never
builds them (``runtime``), and the coarse-face priors. It imports none of ``realtime``, ``training``, ``export``,
``calibration`` or ``benchmarks`` (``tests/test_architecture.py``); the ``facenormals`` CLI dispatcher (``cli``)
sits above all.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["FaceNormals", "__version__", "create_model"]


def __getattr__(name: str):  # lazy: `import facenormals` must not pull in torch
    if name == "create_model":
        from facenormals.model import create_model

        return create_model
    if name == "FaceNormals":
        from facenormals.api import FaceNormals

        return FaceNormals
    raise AttributeError(f"module 'facenormals' has no attribute {name!r}")
