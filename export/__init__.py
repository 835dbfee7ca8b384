"""facenormals.export: turning a checkpoint into deployable graphs — ONNX, FP16, INT8 (Q/DQ), TensorRT engines,
Triton repositories — plus parity checks and (for now) the inference backends that run them."""
