"""Where the shipped models live: ``facenormals/weights/`` inside the installed package.

Nothing is ever downloaded: a missing file is an installation problem and says so.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_MODEL = "fast"  # the RGB-only default; see MODEL_CARD.md


def model_path(name: str = DEFAULT_MODEL) -> Path:
    """Path of a shipped checkpoint by name (``weights/NAME.safetensors``)."""
    path = WEIGHTS_DIR / f"{name}.safetensors"
    if not path.is_file():
        shipped = sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors"))
        raise FileNotFoundError(f"no shipped model {name!r} at {path} (shipped: {shipped or 'none'}); "
                                "pass --model CKPT or reinstall the package")
    return path


def resolve_model(spec: str | None) -> Path:
    """``--model`` value → file: None means the default model, a shipped name or a path to a file."""
    if spec is None:
        return model_path()
    path = Path(spec)
    if path.is_file():
        return path
    if "/" not in spec and not path.suffix:
        return model_path(spec)
    raise FileNotFoundError(f"model file not found: {spec}")
