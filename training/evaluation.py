"""The paper's evaluation protocol on dataset folders of 256² crops with normals and masks.

For each set: per image, the mean angular error over the mask; the set reports mean ± std of those
means across images and the % of all mask pixels under 20°, 25°, 30° (``facenormals.metrics``).
Grayscale images are replicated to 3 channels by ``facenormals.fileio.read_rgb``.

Models: a facenormals checkpoint (the image→normal path in PyTorch) or an ONNX file run with a
plain ONNX Runtime session (input ``image`` N×3×H×W RGB in [0, 1], output ``normals`` N×3×H×W).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.ndimage import distance_transform_edt
from tqdm import tqdm

from facenormals.dataset import SampleFiles, SampleKind, load_sample, scan_dataset
from facenormals.fileio import check_model_file
from facenormals.mesh_prior import create_face_mesh
from facenormals.metrics import MetricAccumulator, SetMetrics
from facenormals.mirror_average import mirror_averaged
from facenormals.model import ImageToNormal
from facenormals.prior import prior_channels, prior_for_crop, source_of

# parameter-free coarse faces from MediaPipe's landmarks (facenormals.prior)
BASELINES = ("mediapipe-mesh", "ict-fit", "ict-blend")

Predictor = Callable[[np.ndarray], np.ndarray]  # N×3×H×W float32 images in [0, 1] → N×3×H×W normals


def _with_prior(source: str | None) -> Callable[[np.ndarray], np.ndarray]:
    """RGB crops → a model's input: prior models get their coarse face from MediaPipe run on each crop."""
    if source is None:
        return lambda images: images
    face_mesh = create_face_mesh()
    return lambda images: np.concatenate([images, prior_channels(images, face_mesh, source)], axis=1)


def torch_network(module: ImageToNormal, mirror: bool = True) -> Callable[[np.ndarray], np.ndarray]:
    """Network inputs (N×C×S×S, RGB and any coarse-face channels) → normals; ``mirror``: the output averaged with the
    network's on the mirrored crop, as the API does for photos."""
    module = module.eval()

    def network(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(np.ascontiguousarray(batch))).numpy()

    return mirror_averaged(network) if mirror else network


def torch_predictor(module: ImageToNormal, mirror: bool = True) -> Predictor:
    """RGB crops → normals, the coarse face drawn by MediaPipe on each crop for prior models (:func:`torch_network`)."""
    inputs = _with_prior(module.cfg.input_prior)
    run = torch_network(module, mirror)
    return lambda images: run(inputs(images))


def onnx_predictor(path: str | Path, mirror: bool = True) -> Predictor:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if "image" not in names or "normals" not in outputs:
        raise ValueError(f"{path}: ONNX model needs input 'image' and output 'normals', has {names} → {outputs}")
    dtype = np.float16 if session.get_inputs()[names.index("image")].type == "tensor(float16)" else np.float32
    meta = session.get_modelmeta().custom_metadata_map
    in_chans = 3 if meta.get("prior", "none") == "none" else 7
    inputs = _with_prior(source_of(in_chans, meta.get("prior_source")))

    def network(batch: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(["normals"], {"image": batch.astype(dtype)})[0], dtype=np.float32)

    run = mirror_averaged(network) if mirror else network
    return lambda images: run(inputs(images))


def onnx_input_size(path: Path) -> tuple[int | None, bool]:
    """(the square input side an ONNX model was exported at — metadata ``size``, else a fixed input height; None:
    any —, whether its graph takes that side only: a fixed input height rather than a symbolic one)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    image = next(i for i in model.graph.input if i.name == "image")
    height = image.type.tensor_type.shape.dim[2].dim_value
    return int(meta.get("size") or height or 0) or None, bool(height)


def at_model_size(predict: Predictor, size: int | None, model: Path,
                  note: Callable[[str], object] | None = None) -> Predictor:
    """Run ``predict`` on crops resized to the model's input side, the normals resized back and renormalised.

    A model sees faces at the scale it was trained on (the realtime path crops at that size too), and a
    side the encoder cannot halve five times (300 → 19 vs 20 at the skips) would not run at all. Only
    square crops are resized: stretching one axis would tilt every normal. ``size`` None: run as given.
    """
    told: set[tuple[int, int]] = set()

    def run(images: np.ndarray) -> np.ndarray:
        height, width = images.shape[2:]
        if size is None or (height, width) == (size, size):
            return predict(images)
        if height != width:
            raise ValueError(f"{model}: takes {size}×{size} crops; {width}×{height} crops are not square, and "
                             "resizing them would tilt the normals (crop them square)")
        if note is not None and (height, width) not in told:
            told.add((height, width))
            note(f"{model.name}: {width}×{height} crops resized to the model's {size}×{size} input (and back)")
        shrink = cv2.INTER_AREA if height > size else cv2.INTER_LINEAR
        small = np.stack([cv2.resize(np.ascontiguousarray(im.transpose(1, 2, 0)), (size, size), interpolation=shrink)
                          for im in images]).transpose(0, 3, 1, 2)
        normals = predict(np.ascontiguousarray(small, dtype=np.float32))
        back = np.stack([cv2.resize(np.ascontiguousarray(n.transpose(1, 2, 0)), (width, height),
                                    interpolation=cv2.INTER_LINEAR) for n in normals]).transpose(0, 3, 1, 2)
        return (back / np.maximum(np.linalg.norm(back, axis=1, keepdims=True), 1e-8)).astype(np.float32)

    return run


def load_predictor(spec: str | Path, note: Callable[[str], object] | None = None, mirror: bool = True,
                   input_size: int | None = None) -> Predictor:
    """A checkpoint (.safetensors) or an ONNX file (.onnx) → predictor at the model's input size; ``mirror``: each
    crop's output averaged with the mirrored crop's (:mod:`facenormals.mirror_average`, the API's default).

    The file passes the same check as every other model file first (``facenormals.fileio.check_model_file``);
    crops of another side are resized (:func:`at_model_size`; ``note`` is told once per crop size).
    ``input_size``: run the network at this side instead of the model's own (``eval --input-size``: a checkpoint
    is fully convolutional; an ONNX file must have been exported at that side), the normals resized back, so the
    errors are still computed at the dataset's resolution.
    """
    path = check_model_file(spec, "model")
    if path.suffix.lower() == ".engine":
        raise ValueError(f"model {path}: eval runs checkpoints (.safetensors) and ONNX files; score the ONNX the "
                         "engine was built from, or run the engine with 'facenormals run --backend tensorrt'")
    if input_size is not None and (input_size <= 0 or input_size % 32):
        raise ValueError(f"input size must be a positive multiple of 32 (the encoder halves it five times), "
                         f"got {input_size}")
    if path.suffix.lower() == ".onnx":
        exported, fixed = onnx_input_size(path)
        if input_size is not None and fixed and exported != input_size:
            raise ValueError(f"model {path}: exported at {exported}×{exported}; for {input_size}² export it at that "
                             f"side ('facenormals export onnx --size {input_size}') or score the checkpoint")
        return at_model_size(onnx_predictor(path, mirror), input_size or exported, path, note)
    from facenormals.checkpoint import load_image_to_normal

    module = load_image_to_normal(path)
    return at_model_size(torch_predictor(module, mirror), input_size or int(module.cfg.input_size), path, note)


def paired_samples(folder: str | Path) -> list[SampleFiles]:
    """The scorable samples (image + normals + mask) of a dataset folder."""
    samples = [s for s in scan_dataset(folder) if s.kind is SampleKind.PAIRED]
    if not samples:
        raise ValueError(f"{folder}: no paired samples (images/ + normals/ + masks/) to evaluate")
    return samples


@dataclass
class LoadedBatch:
    names: list[str]
    images: np.ndarray  # N×3×H×W float32 in [0, 1]
    images_u8: list[np.ndarray]  # H×W×3 RGB uint8 (for the baseline)
    normals: list[np.ndarray]  # H×W×3
    masks: list[np.ndarray]  # H×W bool


def batches(samples: list[SampleFiles], batch_size: int) -> Iterator[LoadedBatch]:
    """Load samples in batches of one image size (sizes may differ between batches)."""
    pending: list = []
    for files in samples:
        sample = load_sample(files)
        if pending and (len(pending) == batch_size or pending[0].image.shape != sample.image.shape):
            yield _stack(pending)
            pending = []
        pending.append(sample)
    if pending:
        yield _stack(pending)


def _stack(samples: list) -> LoadedBatch:
    images = np.stack([s.image.transpose(2, 0, 1) for s in samples]).astype(np.float32) / np.float32(255.0)
    return LoadedBatch([s.name for s in samples], images, [s.image for s in samples],
                       [s.normals for s in samples], [s.mask for s in samples])


@dataclass
class SetResult:
    metrics: SetMetrics
    per_image_deg: dict[str, float] = field(default_factory=dict)
    no_face: int = 0  # baseline only: images where MediaPipe found no face (left out of its metrics)
    coverage_pct: float = 100.0  # baseline only: % of mask pixels the rasterised mesh covers


ImageHook = Callable[[str, np.ndarray, np.ndarray, np.ndarray], object]  # (name, pred H×W×3, target, mask)


def evaluate_predictor(predictor: Predictor, samples: list[SampleFiles], batch_size: int = 8,
                       label: str = "eval", on_image: ImageHook | None = None) -> SetResult:
    """Score ``predictor`` on ``samples``; ``on_image`` also sees every scored image (``eval --diagnose``)."""
    accumulator = MetricAccumulator()
    per_image: dict[str, float] = {}
    with tqdm(total=len(samples), desc=label, unit="img", leave=False) as bar:
        for batch in batches(samples, batch_size):
            preds = predictor(batch.images).transpose(0, 2, 3, 1)
            for name, pred, target, mask in zip(batch.names, preds, batch.normals, batch.masks, strict=True):
                per_image[name] = accumulator.add(pred, target, mask)
                if on_image is not None:
                    on_image(name, pred, target, mask)
            bar.update(len(batch.names))
    return SetResult(accumulator.result(), per_image)


def fill_uncovered(normals: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Give each pixel outside ``covered`` the normal of the nearest covered pixel (the mesh edge, extended)."""
    if covered.all():
        return normals
    _, (rows, cols) = distance_transform_edt(~covered, return_indices=True)
    return normals[rows, cols]


def evaluate_baseline(samples: list[SampleFiles], label: str = "mediapipe-mesh",
                      on_image: ImageHook | None = None) -> SetResult:
    """A coarse-face baseline (``label``: one of :data:`BASELINES`) from MediaPipe run on the same crops.

    ``mediapipe-mesh``: MediaPipe's mesh normals rasterised (``facenormals.mesh_prior``); ``ict-fit``: an
    ICT-FaceKit face fitted to the same landmarks (``facenormals.ict_fit``), smoothed as the prior is. Mask
    pixels the face does not reach take the nearest normal; images where MediaPipe finds no face are counted
    in ``no_face`` and left out of the metrics.
    """
    if label not in BASELINES:
        raise ValueError(f"unknown baseline {label!r}; choose from {list(BASELINES)}")
    accumulator = MetricAccumulator()
    per_image: dict[str, float] = {}
    no_face, covered_px, mask_px = 0, 0, 0
    with create_face_mesh() as face_mesh:
        for files in tqdm(samples, desc=label, unit="img", leave=False):
            sample = load_sample(files)
            normals, coverage, found = prior_for_crop(sample.image, face_mesh, label)
            if not found or not coverage.any():
                no_face += 1
                continue
            covered_px += int((coverage & sample.mask).sum())
            mask_px += int(sample.mask.sum())
            per_image[files.name] = accumulator.add(normals, sample.normals, sample.mask)
            if on_image is not None:
                on_image(files.name, normals, sample.normals, sample.mask)
    if not per_image:
        raise RuntimeError(f"{label}: MediaPipe found no face in any of {len(samples)} images")
    return SetResult(accumulator.result(), per_image, no_face, 100.0 * covered_px / max(mask_px, 1))
