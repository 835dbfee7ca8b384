"""The shipped models, described once (:data:`REGISTRY`), and where they live: ``facenormals/weights/`` inside the
installed package.

Each :class:`ShippedModel` says what a name means the way timm's pretrained configs do: file and SHA-256, input
channels, prior kind and input size (what the runtime also reads from the file's own metadata), the INT8 twin,
and the measured accuracy and speed reported in MODEL_CARD.md (``tests/test_zoo.py`` checks the description
against the files). Nothing is ever downloaded: a missing file is an installation problem and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class ShippedModel:
    """One shipped model. Accuracy: mean angular error (°) per validation set; speed: ms per 256² crop, batch 1,
    ONNX Runtime on the project machine's 2 CPU cores (MODEL_CARD.md says how each was measured)."""

    name: str
    file: str                   # in WEIGHTS_DIR
    sha256: str
    in_chans: int               # 3: RGB; 7: RGB + a coarse-face prior (normals + coverage)
    prior_source: str | None    # facenormals.prior source the channels 3-6 carry; None: RGB only
    input_size: int
    int8_file: str | None = None  # the calibrated INT8 Q/DQ twin (auto serves it on the CPU), in WEIGHTS_DIR
    int8_sha256: str | None = None
    accuracy_deg: dict[str, float] = field(default_factory=dict)
    speed_ms: dict[str, float] = field(default_factory=dict)
    note: str = ""

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.file


# Best first: the first one shipped is the default (no --model / "auto"). See MODEL_CARD.md.
REGISTRY: dict[str, ShippedModel] = {m.name: m for m in (
    ShippedModel(
        "fast-prior", "fast-prior.safetensors",
        "17c78d6033887e2daa203cc67a53bdafcd647ed92414c8e8d1ca5afc9f5ae99e",
        in_chans=7, prior_source="ict-blend", input_size=256,
        int8_file="fast-prior.int8.onnx",
        int8_sha256="d538a5eb277eb5ebb01b0f34fd7b2d0bcad3b472e158bb62bee8ddb9a85b2848",
        accuracy_deg={"val_ict_v2": 13.22, "val_james": 10.00, "val_profile": 13.21, "val_ict_v5": 14.13},
        speed_ms={"ort-cpu-fp32": 37.7, "ort-cpu-int8": 17.6},
        note="campaign run ict_prior_c67 (session 39): session 26's weights (run c35's mix) distilled from an output "
             "ensemble of three campaign networks (themselves, c54's and c59's snapshot means) for 9 600 samples; "
             "0.5 of its cool-down's snapshot mean + 0.5 of session 26's weights; detail on top of an ICT-FaceKit "
             "face fitted to MediaPipe's landmarks, averaged with MediaPipe's mesh"),
    ShippedModel(
        "lite-prior", "lite-prior.safetensors",
        "26ce02d1e9e7e93984c6908bc018a910b70343e42ec58e09a386f664fdf0136f",
        in_chans=7, prior_source="ict-blend", input_size=256,
        int8_file="lite-prior.int8.onnx",
        int8_sha256="9c9c1cadc896c1a6ccfde416f8d51cb004606f535a51a97c4707df18f3bafc98",
        accuracy_deg={"val_ict_v2": 13.41, "val_james": 9.99, "val_profile": 13.89, "val_ict_v5": 14.32},
        speed_ms={"ort-cpu-fp32": 33.0, "ort-cpu-int8": 18.7},
        note="the live loop's default (LIVE_PREFERENCE): the lite network (half-width encoders, 0.84 GMAC) pruned "
             "from fast-prior and distilled from it (run lite_e1, session 14); session 26: 0.5 of run lite_e3's "
             "snapshot mean 1 500–2 000 (distilled from fast-prior's weights under the new landmark points) + 0.5 "
             "of lite_e1's; session 33: 0.5 of run lite_e7's snapshot mean 1 500–2 000 (distilled from the shipped "
             "fast-prior under the landmark expression map, paired ICT 0.5 / real frames 0.35) + 0.5 of those; "
             "session 37: 0.5 of run lite_e12's snapshot mean 1 500–2 000 (distilled from the shipped fast-prior's "
             "mirror pass at weight 30, two legs: lite_e11, lite_e12) + 0.5 of those; session 38: 0.5 of run "
             "lite_e14's snapshot mean 1 500–2 000 (distilled from an ensemble of three fast-prior campaign networks, "
             "each mirrored, at weight 30; two legs: lite_e13, lite_e14) + 0.5 of those; session 39: 0.5 of run "
             "lite_e15's snapshot mean 1 500–2 000 (a third leg on that ensemble) + 0.5 of those; same coarse face "
             "and input"),
    ShippedModel(
        "fast", "fast.safetensors",
        "df11c2317602ddf490180faee7e42c93c0dd5ee8bda65cd25b250c97d1519567",
        in_chans=3, prior_source=None, input_size=256,
        accuracy_deg={"val_ict_v2": 17.91, "val_ict": 17.79, "val_james": 18.35},
        speed_ms={"ort-cpu-fp32": 34.42},
        note="RGB only (any detector and crop); does not beat the MediaPipe-mesh baseline"),
)}
PREFERENCE = tuple(REGISTRY)
DEFAULT_MODEL = PREFERENCE[-1]  # the name a lone shipped model gets
# The live loop's default (``run``, ``bench``, the screenshot script): the shipped model sized for issue 15's live
# budget on these 2 cores (≥ 30 FPS, ≤ 30 CPU ms a frame, p95 ≤ 30 ms; its figures in MODEL_CARD.md), then the
# still default.
# Photos, the API, eval and export keep :data:`PREFERENCE`: a still has no frame budget.
LIVE_PREFERENCE = ("lite-prior", *(name for name in PREFERENCE if name != "lite-prior"))


def default_model_name(live: bool = False) -> str:
    """The first of :data:`PREFERENCE` (``live``: :data:`LIVE_PREFERENCE`) that is shipped (``auto`` / no
    ``--model``); the last one when none is."""
    order = LIVE_PREFERENCE if live else PREFERENCE
    return next((name for name in order if (WEIGHTS_DIR / f"{name}.safetensors").is_file()), DEFAULT_MODEL)


def model_path(name: str | None = None, live: bool = False) -> Path:
    """Path of a shipped checkpoint by name (``weights/NAME.safetensors``); None = :func:`default_model_name`."""
    name = name or default_model_name(live)
    path = WEIGHTS_DIR / f"{name}.safetensors"
    if not path.is_file():
        shipped = sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors"))
        raise FileNotFoundError(f"no shipped model {name!r} at {path} (shipped: {shipped or 'none'}); "
                                "pass --model CKPT or reinstall the package")
    return path


def resolve_model(spec: str | None, live: bool = False) -> Path:
    """``--model`` value → file: None or ``auto`` means the default model (``live``: the live loop's), a shipped
    name or a path to a file."""
    if spec is None or spec == "auto":
        return model_path(live=live)
    path = Path(spec)
    if path.is_file():
        return path
    if "/" not in spec and not path.suffix:
        return model_path(spec)
    raise FileNotFoundError(f"model file not found: {spec}")


def int8_twin(checkpoint: Path) -> Path | None:
    """The shipped INT8 ONNX of a shipped checkpoint (``weights/NAME.int8.onnx``), when it exists.

    Only twins made from exactly this checkpoint count: the ONNX metadata's ``source_sha256`` must match the
    checkpoint's (a retrained checkpoint beside a stale twin falls back to the checkpoint).
    """
    checkpoint = Path(checkpoint)
    twin = checkpoint.with_name(f"{checkpoint.name.removesuffix('.safetensors')}.int8.onnx")
    if checkpoint.parent.resolve() != WEIGHTS_DIR.resolve() or not twin.is_file():
        return None
    from facenormals.fileio import file_sha256
    from facenormals.runtime.onnx_info import read_metadata

    meta = read_metadata(twin)
    if meta.get("precision") != "int8" or meta.get("source_sha256") != file_sha256(checkpoint):
        return None
    return twin

