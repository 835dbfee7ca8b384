"""The README's realtime screenshot: the ``normals`` and ``relit`` views of one frame of the embedded sample.

    python -m facenormals.benchmarks.realtime_screenshot --out docs/realtime.png [--model CKPT] [--frame 40]

Frames go through the real pipeline (MediaPipe tracking, crops, paste-back, views, HUD). With ``--model`` the
normals are the network's; without it they come from the MediaPipe face-mesh baseline
(``facenormals.mesh_prior``: the mesh's own normals rasterised on each crop), so the picture shows what the views
do even where no trained model is installed. A plain RGB PNG (~240 KB; `--colours N` palette-quantises: smaller, but
smooth normal maps band).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np


class MeshBaseline:
    """A backend-shaped callable: N×3×S×S crops → N×3×S×S face-mesh normals (zero where the mesh is absent)."""

    def __init__(self, size: int = 256) -> None:
        from facenormals.mesh_prior import create_face_mesh

        self.name, self.providers = "mesh-baseline", ["mediapipe-face-mesh"]
        self.input_size, self.in_chans = size, 3
        self._mesh = create_face_mesh()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        from facenormals.mesh_prior import mesh_normals_for_crop

        out = np.zeros((len(batch), 3, self.input_size, self.input_size), np.float32)
        for i, image in enumerate(batch):
            rgb = np.clip(np.round(image.transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)
            normals, _, _ = mesh_normals_for_crop(rgb, self._mesh)
            out[i] = normals.transpose(2, 0, 1)
        return out


def render_views(backend, frame_index: int, views: tuple[str, ...]) -> list[np.ndarray]:
    """Run the pipeline over the sample up to ``frame_index``; return that frame drawn in each view."""
    from facenormals.realtime.render import RenderState, get_view, light_from_angles
    from facenormals.realtime.runner import LoopParts
    from facenormals.realtime.sources.base import open_source

    state = RenderState(view=views[0], light=light_from_angles(-45.0, 30.0))
    shots: list[np.ndarray] = []

    def grab(result) -> None:
        if result.frame.id == frame_index:
            for view in views:
                image = get_view(view)(result, state).copy()
                shots.append(image)

    with open_source("sample", frames=frame_index + 1) as source, \
            LoopParts.build(source, backend, view=views[0], temporal=False, state=state) as parts:
        parts.pipeline(source, on_result=grab, handle_signals=False).run()
    if len(shots) != len(views):
        raise RuntimeError(f"frame {frame_index} of the sample was not rendered")
    return shots


def save_small_png(image_bgr: np.ndarray, path: Path, colours: int = 192) -> int:
    """Palette PNG (median-cut colours, dithered so smooth normal maps do not band): photos with overlays stay
    legible at a fraction of the RGB size. ``colours=0``: a plain RGB PNG."""
    from PIL import Image

    from facenormals.atomic import atomic_path

    rgb = Image.fromarray(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
    with atomic_path(path) as tmp:
        if colours:
            rgb = rgb.quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG)
        rgb.save(tmp, optimize=True)
    return path.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/realtime.png"))
    parser.add_argument("--model", help="checkpoint/.onnx: the network's normals (default: face-mesh baseline)")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--frame", type=int, default=40, help="sample frame to show")
    parser.add_argument("--width", type=int, default=880, help="output width in pixels")
    parser.add_argument("--colours", type=int, default=0, help="palette colours (default 0: plain RGB PNG, ~240 KB)")
    args = parser.parse_args(argv)
    if args.model:
        from facenormals.realtime.runner import open_backend

        backend = open_backend(args.backend, args.model)
    else:
        backend = MeshBaseline()
    normals, relit = render_views(backend, args.frame, ("normals", "relit"))
    from facenormals.realtime.render import draw_hud

    label = "network: " + Path(args.model).name if args.model else "face-mesh baseline normals (no network)"
    montage = np.hstack([normals, relit])
    draw_hud(montage, [f"normals | relit     {label}"])
    height = round(montage.shape[0] * args.width / montage.shape[1])
    small = cv2.resize(montage, (args.width, height), interpolation=cv2.INTER_AREA)
    size = save_small_png(small, args.out, args.colours)
    print(f"wrote {args.out} ({small.shape[1]}×{small.shape[0]}, {size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
