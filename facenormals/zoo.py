"""Where the shipped models live: ``facenormals/weights/`` inside the installed package.

Nothing is ever downloaded: a missing file is an installation problem and says so.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
# The default, best first: the mesh-prior model (RGB + MediaPipe's mesh, which every tool computes anyway to find
# the face), then the RGB-only model. See MODEL_CARD.md.
PREFERENCE = ("fast-prior", "fast")
DEFAULT_MODEL = PREFERENCE[-1]  # the name a lone shipped model gets


def default_model_name() -> str:
    """The first of :data:`PREFERENCE` that is shipped (``auto`` / no ``--model``); the last one when none is."""
    return next((name for name in PREFERENCE if (WEIGHTS_DIR / f"{name}.safetensors").is_file()), DEFAULT_MODEL)


def model_path(name: str | None = None) -> Path:
    """Path of a shipped checkpoint by name (``weights/NAME.safetensors``); None = :func:`default_model_name`."""
    name = name or default_model_name()
    path = WEIGHTS_DIR / f"{name}.safetensors"
    if not path.is_file():
        shipped = sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors"))
        raise FileNotFoundError(f"no shipped model {name!r} at {path} (shipped: {shipped or 'none'}); "
                                "pass --model CKPT or reinstall the package")
    return path


def resolve_model(spec: str | None) -> Path:
    """``--model`` value → file: None or ``auto`` means the default model, a shipped name or a path to a file."""
    if spec is None or spec == "auto":
        return model_path()
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
    from facenormals.checkpoint import file_sha256
    from facenormals.export.onnx_export import read_metadata

    meta = read_metadata(twin)
    if meta.get("precision") != "int8" or meta.get("source_sha256") != file_sha256(checkpoint):
        return None
    return twin

