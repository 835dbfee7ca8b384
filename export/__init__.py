"""facenormals.export: building deployable model files from a checkpoint — ONNX, FP16, INT8 (Q/DQ, calibrated on crops
from the one face mesh), TensorRT engines, Triton repositories — plus parity checks, and ``prepare``: what a runtime
backend needs built before it runs (``facenormals.runtime`` only runs files)."""
