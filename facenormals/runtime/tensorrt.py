"""Run a TensorRT engine on torch CUDA tensors: ``set_tensor_address`` + ``execute_async_v3``, no pycuda.

The engine's sidecar is checked before deserialisation: an engine from another TensorRT version or GPU
raises ``EngineMismatchError`` with the fix. The runtime never builds: rebuilding a foreign engine from its ONNX
is ``facenormals.export.prepare.ensure_engine`` (what ``create_backend(..., rebuild_from=ONNX)`` in
``facenormals.export.prepare`` does before loading).
Output buffers are torch tensors on the runner's stream, so results stay on the GPU for callers that
continue there (``run``) and come back to numpy only on request (``run_numpy``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facenormals.runtime.engine_header import EngineHeader, EngineMismatchError, check_engine


def import_tensorrt() -> object:
    try:
        import tensorrt as trt
    except ImportError as err:
        raise RuntimeError("TensorRT is not installed (pip install 'facenormals[gpu]' on a machine with an NVIDIA GPU "
                           f"and driver): {err}") from err
    return trt



def gpu_identity(device: int = 0) -> tuple[str, str]:
    """(name, "major.minor" compute capability) of CUDA device ``device``."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA GPU visible to torch: TensorRT engines are built on the GPU they will run on")
    major, minor = torch.cuda.get_device_capability(device)
    return torch.cuda.get_device_name(device), f"{major}.{minor}"


class TensorRTRunner:
    def __init__(self, engine_path: str | Path, device: int = 0) -> None:
        import torch

        trt = import_tensorrt()
        if not torch.cuda.is_available():
            raise RuntimeError("TensorRT runner: no CUDA GPU visible to torch")
        self.torch = torch
        self.device = torch.device("cuda", device)
        # Deserialisation, the execution context and every buffer belong to one device: TensorRT uses the
        # current one, torch the one named, so on a multi-GPU machine both must be the selected device.
        with torch.cuda.device(self.device):
            self._load(trt, Path(engine_path))

    def _load(self, trt: object, engine_path: Path) -> None:
        torch = self.torch
        gpu_name, capability = gpu_identity(self.device.index)
        header = check_engine(engine_path, trt.__version__, capability, gpu_name)
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
