"""Run a TensorRT engine on torch CUDA tensors: ``set_tensor_address`` + ``execute_async_v3``, no pycuda.

The engine's sidecar is checked before deserialisation: an engine from another TensorRT version or GPU
raises ``EngineMismatchError`` with the fix, or is rebuilt from ``rebuild_from`` (the ONNX) when given.
Output buffers are torch tensors on the runner's stream, so results stay on the GPU for callers that
continue there (``run``) and come back to numpy only on request (``run_numpy``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facenormals.export.engine_header import EngineHeader, EngineMismatchError, check_engine, compatibility_problems
from facenormals.export.engine_header import read_header as read_engine_header
from facenormals.export.tensorrt_build import build_engine, gpu_identity, import_tensorrt


class TensorRTRunner:
    def __init__(self, engine_path: str | Path, rebuild_from: str | Path | None = None, device: int = 0) -> None:
        import torch

        trt = import_tensorrt()
        if not torch.cuda.is_available():
            raise RuntimeError("TensorRT runner: no CUDA GPU visible to torch")
        self.torch = torch
        self.device = torch.device("cuda", device)
        # Deserialisation, the execution context and every buffer belong to one device: TensorRT uses the
        # current one, torch the one named, so on a multi-GPU machine both must be the selected device.
        with torch.cuda.device(self.device):
            self._load(trt, Path(engine_path), rebuild_from)

    def _load(self, trt: object, engine_path: Path, rebuild_from: str | Path | None) -> None:
        torch = self.torch
        gpu_name, capability = gpu_identity(self.device.index)
        try:
            header = check_engine(engine_path, trt.__version__, capability, gpu_name)
        except EngineMismatchError:
            if rebuild_from is None:
                raise
            header = self._rebuild(engine_path, Path(rebuild_from), trt.__version__, capability, self.device.index)
        self.header: EngineHeader = header
        self.in_chans, self.input_size = header.in_chans, header.size
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise EngineMismatchError(f"{engine_path}: TensorRT could not deserialize the engine")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise EngineMismatchError(f"{engine_path}: expected one input and one output, got {inputs} / {outputs}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.stream = torch.cuda.Stream(device=self.device)

    @staticmethod
    def _rebuild(engine_path: Path, onnx_path: Path, trt_version: str, capability: str, device: int) -> EngineHeader:
        try:
            old = read_engine_header(engine_path, verify_hash=False)
            precision, batch = old.precision, old.batch
            reason = "; ".join(compatibility_problems(old, trt_version, capability)) or "sidecar mismatch"
        except (EngineMismatchError, FileNotFoundError) as err:
            precision, batch, reason = "fp16", (1, 4, 8), str(err)
        import warnings

        warnings.warn(f"{engine_path}: rebuilding from {onnx_path} ({reason})", RuntimeWarning, stacklevel=3)
        return build_engine(onnx_path, engine_path, precision=precision, batch=batch, device=device)

    def run(self, batch: object) -> object:
        """float32 CUDA tensor N×C×S×S → float32 CUDA tensor N×3×S×S (synchronised on the runner's stream)."""
        torch = self.torch
        lo, _, hi = self.header.batch
        n = int(batch.shape[0])
        if not lo <= n <= hi:
            raise ValueError(f"batch of {n} outside the engine's profile {lo}..{hi}; rebuild with --batch")
        with torch.cuda.device(self.device):  # enqueue on the engine's device, not whichever is current
            x = batch.to(self.device, torch.float32).contiguous()
            out = torch.empty((n, 3, self.input_size, self.input_size), dtype=torch.float32, device=self.device)
            self.stream.wait_stream(torch.cuda.current_stream(self.device))  # x was written on the current stream
            self.context.set_input_shape(self.input_name, tuple(x.shape))
            self.context.set_tensor_address(self.input_name, x.data_ptr())
            self.context.set_tensor_address(self.output_name, out.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            x.record_stream(self.stream)
            out.record_stream(self.stream)
            self.stream.synchronize()
        return out

    def run_numpy(self, batch: np.ndarray) -> np.ndarray:
        x = self.torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).pin_memory()
        return self.run(x.to(self.device, non_blocking=True)).cpu().numpy()
