"""Static INT8 quantisation of the image→normal ONNX, calibrated on real face crops.

Q/DQ format (QuantizeLinear/DequantizeLinear pairs around each quantised op), the form both ONNX Runtime
CPU (fused into QLinearConv at load) and TensorRT explicit quantisation read:
* weights: signed int8, symmetric, per output channel;
* activations: unsigned uint8 (QUInt8), asymmetric, per tensor. On this AVX-512 VNNI CPU QUInt8 activations
  run 2.6–3.3× faster than fp32 while signed activations are slower (shared/MEASUREMENTS.md);
* the last 1×1 conv and the L2 normalisation stay fp32 (``onnx_export.head_nodes``): quantised normalisation
  gives NaN, and a quantised head zeroes pixels whose pre-normalisation values fall below one quantum.

Calibration methods (ONNX Runtime's calibrators) are compared by their angular deviation from fp32.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from tqdm import tqdm

from facenormals.atomic import atomic_path, write_bytes_atomic
from facenormals.timing import median_ms

METHODS = ("minmax", "entropy", "percentile")
TARGETS = ("cpu", "trt")
CALIBRATION_CHUNK = 8  # crops per collect_data call


@dataclass(frozen=True)
class Int8Accuracy:
    """INT8 vs fp32 on one set of crops: deviation between the two, and each one's error against ground truth."""

    n_images: int
    mean_deviation_deg: float  # mean over all masked pixels of angle(int8, fp32)
    p99_deviation_deg: float
    nonfinite_pixels: int
    fp32_error_deg: float | None = None  # paper metric (mean of per-image means) against ground truth, if any
    int8_error_deg: float | None = None

    @property
    def error_increase_deg(self) -> float | None:
        if self.fp32_error_deg is None or self.int8_error_deg is None:
            return None
        return self.int8_error_deg - self.fp32_error_deg

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "error_increase_deg": self.error_increase_deg}


@dataclass(frozen=True)
class CpuSpeed:
    batch: int
    fp32_ms: float
    int8_ms: float

    @property
    def speedup(self) -> float:
        return self.fp32_ms / self.int8_ms


class CropReader:
    """ONNX Runtime ``CalibrationDataReader`` over a float32 crop array, in small batches."""

    def __init__(self, images: np.ndarray, input_name: str, batch: int = 4) -> None:
        self.images, self.input_name, self.batch = images, input_name, batch
        self._iter: Iterator[dict[str, np.ndarray]] | None = None

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._iter is None:
            self._iter = ({self.input_name: self.images[i:i + self.batch]}
                          for i in range(0, len(self.images), self.batch))
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = None


# Calibrator settings per method. ORT's histogram calibrators default to 128 bins with 128 quantised bins,
# which leaves the entropy search a single candidate (the full range, i.e. MinMax). 512 bins give it room;
# its search is quadratic in the bin count (2048 bins: a minute per 64² model here).
CALIBRATOR_OPTIONS: dict[str, dict[str, object]] = {
    "minmax": {},
    "entropy": {"num_bins": 512, "num_quantized_bins": 128},
    "percentile": {"num_bins": 2048, "percentile": 99.99},
}


def _calibration_method(name: str) -> object:
    from onnxruntime.quantization import CalibrationMethod

    if name not in METHODS:
        raise ValueError(f"unknown calibration method {name!r}; choose one of {', '.join(METHODS)}")
    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[name]


def calibrate_ranges(fp32_onnx: str | Path, images: np.ndarray, method: str, cache: str | Path) -> Path:
    """Activation ranges of ``fp32_onnx`` on ``images`` with one method, saved to ``cache`` (ORT's JSON format).

    An existing cache is reused: calibration is the slow part, and a rerun (another method, a crash) skips it.
    """
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    cache = Path(cache)
    calibration_method = _calibration_method(method)
    if cache.is_file():
        return cache
    if not len(images):
        raise ValueError("no calibration images")
    model = onnx.load(str(fp32_onnx), load_external_data=False)
    with tempfile.TemporaryDirectory(prefix="facenormals-calib-") as tmp:
        calibrator = create_calibrator(Path(fp32_onnx), None, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=calibration_method, extra_options=CALIBRATOR_OPTIONS[method])
        # ORT keeps every intermediate tensor of the batches it is given until collect_data returns (~100 MB
        # per 256² crop); feeding chunks bounds memory, and both calibrator kinds merge across calls.
        for start in tqdm(range(0, len(images), CALIBRATION_CHUNK), desc=f"calibrate {method}", leave=False):
            calibrator.collect_data(CropReader(images[start:start + CALIBRATION_CHUNK], model.graph.input[0].name))
        ranges = calibrator.compute_data()
    with atomic_path(cache) as tmp_cache:
        save_tensors_data(ranges, tmp_cache)
    return cache


def quantize_int8(fp32_onnx: str | Path, out: str | Path, calibration_images: np.ndarray,
                  method: str = "minmax", source_label: str = "", cache: str | Path | None = None,
                  target: str = "cpu") -> Path:
    """Write the Q/DQ INT8 model of ``fp32_onnx`` to ``out`` (atomically); metadata records how it was made.

    ``target``: "cpu" = uint8 asymmetric activations (fastest for ONNX Runtime on x86 VNNI); "trt" = int8
    symmetric activations with zero points 0, the only Q/DQ form TensorRT's explicit quantisation accepts.
    """
    if target not in TARGETS:
        raise ValueError(f"unknown INT8 target {target!r}; choose one of {', '.join(TARGETS)}")
    activation_symmetric = target == "trt"
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from facenormals.export.onnx_export import head_nodes, set_metadata
    from facenormals.runtime.onnx_info import read_metadata

    fp32_onnx, out = Path(fp32_onnx), Path(out)
    model = onnx.load(str(fp32_onnx))
    meta = {p.key: p.value for p in model.metadata_props}
    if meta.get("precision", "fp32") != "fp32":
        raise ValueError(f"{fp32_onnx}: quantise the fp32 export, not a {meta['precision']} one")
    with tempfile.TemporaryDirectory(prefix="facenormals-int8-") as tmp:
        ranges = calibrate_ranges(fp32_onnx, calibration_images, method, cache or Path(tmp) / f"{method}.json")
        tmp_out = Path(tmp) / "int8.onnx"
        quantize_static(
            str(fp32_onnx), str(tmp_out), None, calibration_cache_path=str(ranges),
            quant_format=QuantFormat.QDQ, weight_type=QuantType.QInt8, per_channel=True,
            activation_type=QuantType.QInt8 if activation_symmetric else QuantType.QUInt8,
            calibrate_method=_calibration_method(method), nodes_to_exclude=head_nodes(model),
            # TensorRT takes float biases (it folds them into its INT8 kernels) and rejects INT32 Q/DQ.
            extra_options={"ActivationSymmetric": activation_symmetric, "WeightSymmetric": True,
                           "QuantizeBias": not activation_symmetric},
        )
        quantized = onnx.load(str(tmp_out))
    set_metadata(quantized, {**read_metadata(fp32_onnx), "precision": "int8",
                             "int8_calibration": f"{method}, {len(calibration_images)} face crops {source_label}".strip(),
                             "int8_target": target,
                             "int8_scheme": "QDQ, weights int8 symmetric per-channel, activations "
                                            + ("int8 symmetric" if activation_symmetric else "uint8 asymmetric")
                                            + " per-tensor"})
    onnx.checker.check_model(quantized, full_check=True)
    write_bytes_atomic(out, quantized.SerializeToString())
    return out


def qdq_summary(path: str | Path) -> dict[str, int]:
    """Counts of Q/DQ nodes and of ops that stay float (the head): a check that the graph is explicit-quantised."""
    model = onnx.load(str(path))
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def compare_accuracy(fp32_run: object, int8_run: object, images: np.ndarray, masks: np.ndarray,
                     targets: np.ndarray | None = None, batch: int = 4) -> Int8Accuracy:
    """Deviation of INT8 from fp32 over the masks; with ground-truth normals also both paper errors."""
    from facenormals.export.parity import angular_deviation_deg, run_batched
    from facenormals.metrics import MetricAccumulator

    ref = run_batched(fp32_run, images, batch)
    got = run_batched(int8_run, images, batch)
    deviation = angular_deviation_deg(ref, got, masks)
    nonfinite = int((~np.isfinite(got)).any(axis=1)[masks].sum())
    fp32_error = int8_error = None
    if targets is not None:
        fp32_acc, int8_acc = MetricAccumulator(), MetricAccumulator()
        for r, g, t, m in zip(ref, got, targets, masks, strict=True):
            fp32_acc.add(r.transpose(1, 2, 0), t.transpose(1, 2, 0), m)
            int8_acc.add(np.nan_to_num(g).transpose(1, 2, 0), t.transpose(1, 2, 0), m)
        fp32_error, int8_error = fp32_acc.result().mean_deg, int8_acc.result().mean_deg
    return Int8Accuracy(len(images), float(deviation.mean()), float(np.percentile(deviation, 99)), nonfinite,
                        fp32_error, int8_error)


def cpu_speed(fp32_run: object, int8_run: object, in_chans: int, size: int, batch: int = 1,
              runs: int = 10) -> CpuSpeed:
    """Median latency of both models on the same zero-free input (warm-up excluded)."""
    x = np.random.default_rng(0).random((batch, in_chans, size, size), dtype=np.float32)

    def median_of(run: object) -> float:
        return median_ms(lambda: run(x), runs)

    # Interleave the two so machine load drifts affect both alike.
    fp32_ms, int8_ms = [], []
    for _ in range(2):
        fp32_ms.append(median_of(fp32_run))
        int8_ms.append(median_of(int8_run))
    return CpuSpeed(batch, min(fp32_ms), min(int8_ms))


@dataclass(frozen=True)
class EvalSet:
    images: np.ndarray  # N×3×S×S float32
    masks: np.ndarray  # N×S×S bool
    targets: np.ndarray | None  # N×3×S×S unit normals when every sample is paired
    names: list[str]


def load_eval_set(root: str | Path, size: int, limit: int | None = None) -> EvalSet:
    """Samples of a dataset folder with an image (paired or image-only), resized to ``size`` if needed."""
    import cv2

    from facenormals.dataset import SampleKind, load_sample, scan_dataset

    files = [f for f in scan_dataset(root) if f.kind in (SampleKind.PAIRED, SampleKind.IMAGE_ONLY)][:limit]
    if not files:
        raise ValueError(f"{root}: no samples with an image to evaluate on")
    with_targets = all(f.kind == SampleKind.PAIRED for f in files)
    images, masks, targets = [], [], []
    for f in files:
        sample = load_sample(f)
        image, mask, normals = sample.image, sample.mask, sample.normals
        if image.shape[:2] != (size, size):
            image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
            mask = cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST) > 0
            if normals is not None:
                normals = cv2.resize(normals, (size, size), interpolation=cv2.INTER_NEAREST)
        images.append(image.transpose(2, 0, 1).astype(np.float32) / 255.0)
        masks.append(mask.astype(bool))
        if with_targets:
            targets.append(normals.transpose(2, 0, 1).astype(np.float32))
    return EvalSet(np.stack(images), np.stack(masks), np.stack(targets) if with_targets else None,
                   [f.name for f in files])


def trt_qdq_problems(model: onnx.ModelProto) -> list[str]:
    """Why TensorRT's explicit quantisation would reject this Q/DQ graph (empty when it is acceptable).

    TensorRT reads QuantizeLinear/DequantizeLinear as symmetric INT8 only: zero points must be int8 zeros,
    scales positive, and per-channel weight scales on the output-channel axis (0) of a Conv weight.
    """
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    problems: list[str] = []
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if not qdq:
        return ["no QuantizeLinear/DequantizeLinear nodes: not a Q/DQ model"]
    for node in qdq:
        scale = numpy_helper.to_array(inits[node.input[1]]) if node.input[1] in inits else None
        if scale is not None and not (scale > 0).all():
            problems.append(f"{node.name}: non-positive scale")
        if len(node.input) > 2 and node.input[2]:
            zero = inits.get(node.input[2])
            if zero is None:
                problems.append(f"{node.name}: zero point is not a constant")
                continue
            if zero.data_type != onnx.TensorProto.INT8:
                problems.append(f"{node.name}: zero point of type {onnx.TensorProto.DataType.Name(zero.data_type)}, "
                                "TensorRT needs INT8")
            elif numpy_helper.to_array(zero).any():
                problems.append(f"{node.name}: non-zero zero point (asymmetric), TensorRT needs symmetric")
        if scale is not None and scale.size > 1:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            if axis != 0:
                problems.append(f"{node.name}: per-channel scale on axis {axis}, TensorRT expects 0 for Conv weights")
    return problems
