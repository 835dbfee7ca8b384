"""Turn a training run's best checkpoint into the shipped form: fp16, image→normal path only.

    python -m facenormals.training.ship RUN/best.safetensors facenormals/weights/fast.safetensors \\
        [--preview-data DIR --preview-png docs/predictions.png]

The provenance of the run (step, validation error, full training config) travels into the shipped
file's metadata, plus the SHA-256 of the source checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facenormals.checkpoint import load_image_to_normal, load_network, read_header, save_checkpoint
from facenormals.fileio import file_sha256


def ship(best: Path, out: Path) -> Path:
    """``best``: a run's full checkpoint, or an inference-only one (e.g. a weighted average with a shipped file)."""
    model = load_network(best)  # only the image→normal path is written back
    provenance = {**read_header(best).get("provenance", {}), "source_sha256": file_sha256(best)}
    save_checkpoint(model, out, provenance=provenance, half=True, inference_only=True)
    return out


def _shrink(path: Path, factor: float) -> None:
    import cv2

    from facenormals.fileio import read_rgb, write_rgb

    if factor < 1.0:
        image = read_rgb(path)
        write_rgb(path, cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m facenormals.training.ship", description=__doc__.splitlines()[0])
    parser.add_argument("best", type=Path, help="full checkpoint of a run (RUN/best.safetensors)")
    parser.add_argument("out", type=Path, help="where to write the shipped checkpoint")
    parser.add_argument("--preview-data", help="dataset folder of crops to draw predictions for")
    parser.add_argument("--preview-png", type=Path, help="PNG grid: crop | predicted normals | ground truth")
    parser.add_argument("--preview-max", type=int, default=6)
    parser.add_argument("--preview-tile", type=int, default=128, help="tile side in the PNG (keeps docs images small)")
    args = parser.parse_args(argv)
    ship(args.best, args.out)
    size_mb = args.out.stat().st_size / 1e6
    print(f"wrote {args.out} ({size_mb:.1f} MB, fp16, image→normal path)")
    if args.preview_data and args.preview_png:
        from facenormals.training.loaders import evenly_spaced, scan_by_kind
        from facenormals.training.trainer import write_preview

        groups = scan_by_kind([args.preview_data])
        samples = evenly_spaced(groups["image-only"] + groups["paired"], args.preview_max)
        write_preview(load_image_to_normal(args.out), samples, args.preview_png)
        _shrink(args.preview_png, args.preview_tile / 256.0)
        print(f"wrote {args.preview_png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
