"""A tracked face's pooled identity (``FitSettings.track_identity``) against one identity per frame, and its prior
centred by the landmark identity map (``FitSettings.landmark_identity``) against the mean face: accuracy on the
real scan's renders as one tracked face, steadiness on the shared real videos, and cost.

* ``real scan as a track``: ``val_james``'s crops in name order (random poses and lights: a harsher sequence than
  a video) fitted as one tracked face, each frame warm-started from the last, from the stored landmarks; the coarse
  face (``ict-blend``, the prior models' input) and the shipped ``fast-prior`` on it (mirror pass) are scored with
  the paper's metric. ``stills``: every crop on its own (what ``facenormals eval`` scores).
* ``videos``: the loop's detector (smoothed, tracked) on each real clip of ``../shared/data/video``; per frame the
  coarse face drawn with the frame's fit against the same fit with its identity swapped for the clip's median
  identity (how far the shape wanders) and for the previous frame's (how much it jitters), over the face's mask.
* ``cost``: CPU ms of one warm fit (one thread, ``time.process_time``).

    python -m facenormals.benchmarks.identity_track --data /work/datasets/val_james \\
        --json benchmarks/results/identity_track/identity_track.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facenormals import ict_fit, mesh_prior, prior
from facenormals.atomic import write_text_atomic
from facenormals.conventions import angular_error_deg
from facenormals.dataset import scan_dataset
from facenormals.metrics import MetricAccumulator
from facenormals.timing import median_ms

SIZE = 256
SOURCE = "ict-blend"
VIDEO_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "video"
EVIDENCE_SWEEP = (1.0, 2.0, 4.0)
# the track's identity prior centred at the mean face, as before the landmark identity map (session 30)
MEAN_FACE_CENTRE = "tracked identity (evidence 1), mean-face centre"


def variants() -> dict[str, tuple[ict_fit.FitSettings, bool]]:
    """name → (fit settings, warm-started from the track's last fit)."""
    base = ict_fit.FitSettings()
    out = {"stills": (base, False), "per-frame identity": (replace(base, track_identity=False), True)}
    for evidence in EVIDENCE_SWEEP:
        out[f"tracked identity (evidence {evidence:g})"] = (replace(base, identity_evidence=evidence), True)
    out[MEAN_FACE_CENTRE] = (replace(base, landmark_identity=False), True)
    return out


def track_fits(points: list[np.ndarray], settings: ict_fit.FitSettings, warm: bool) -> list[ict_fit.IctFit]:
    face, fits, previous = ict_fit.load_ict_face(), [], None
    for p in points:
        fit = ict_fit.fit_landmarks(p, face, settings, previous=previous if warm else None)
        fits.append(fit)
        previous = fit
    return fits


def drawn_row(points: np.ndarray, fit: ict_fit.IctFit) -> np.ndarray:
    """The coarse face's 4 input channels (normals, coverage) for a crop, drawn from a given fit."""
    normals, coverage = prior.fitted_prior(fit, points, SIZE, SOURCE)
    return np.concatenate([normals.transpose(2, 0, 1), coverage[None].astype(np.float32)])


def real_scan_track(root: Path, model: Path | None) -> dict:
    found = [(sample, points) for _, sample, points in prior.paired_with_stored_points(root)]
    samples, points = [s for s, _ in found], [p for _, p in found]
    run = None
    if model is not None:
        from facenormals.training.gate import network

        run, source, _ = network(model)
        if source != SOURCE:
            raise ValueError(f"{model}: a {source!r} prior model; this benchmark draws {SOURCE!r}")
    out = {"crops": len(samples)}
    for name, (settings, warm) in tqdm(variants().items(), desc=root.name, unit="variant"):
        coarse, net = MetricAccumulator(), MetricAccumulator()
        fits = track_fits(points, settings, warm)
        for sample, p, fit in zip(samples, points, fits, strict=True):
            row = drawn_row(p, fit)
            coarse.add(np.ascontiguousarray(row[:3].transpose(1, 2, 0)), sample.normals, sample.mask)
            if run is not None:
                image = sample.image.transpose(2, 0, 1)[None].astype(np.float32) / 255.0  # uint8 on disk
                pred = run(np.concatenate([image, row[None]], axis=1))[0].transpose(1, 2, 0)
                net.add(np.ascontiguousarray(pred), sample.normals, sample.mask)
        out[name] = {"coarse_face_deg": round(coarse.result().mean_deg, 3),
                     "identity_norm_mean": round(float(np.mean([np.linalg.norm(f.identity) for f in fits])), 3)}
        if run is not None:
            out[name]["fast_prior_deg"] = round(net.result().mean_deg, 3)
    return out


def video_fits(path: Path, frames: int, settings: ict_fit.FitSettings) -> list[tuple[ict_fit.IctFit, np.ndarray]]:
    """(fit, crop mask) per frame of a real clip, through the loop's detector, warm-started along the track."""
    import cv2

    from facenormals.faces import create_detector
    from facenormals.geometry import face_crop

    capture, detector = cv2.VideoCapture(str(path)), create_detector(1)
    face, out, previous, t_ns = ict_fit.load_ict_face(), [], None, 0
    try:
        while len(out) < frames:
            ok, bgr = capture.read()
            if not ok:
                break
            t_ns += 33_333_333
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            found = detector.detect(rgb, t_ns)
            if not found or found[0].depth is None:
                previous = None
                continue
            crop = face_crop(rgb, found[0].landmarks)
            points = mesh_prior.crop_points_from_pixels(found[0].landmarks, found[0].depth, crop.matrix)
            previous = ict_fit.fit_landmarks(points, face, settings, previous=previous)
            out.append((previous, crop.mask.astype(bool)))
    finally:
        capture.release()
        detector.close()
    return out


def shape_drift(fits: list[tuple[ict_fit.IctFit, np.ndarray]]) -> dict[str, float]:
    """Mean angle (°, over the face's mask) between each frame's coarse face and the same pose and expression with
    the clip's median identity / the previous frame's identity: what the identity alone moves."""
    median = np.median([f.identity for f, _ in fits], axis=0).astype(np.float32)

    def drawn(fit: ict_fit.IctFit) -> np.ndarray:  # the fit alone ("ict-fit" draws no mesh: no landmarks needed)
        return prior.fitted_prior(fit, np.empty((0, 3)), SIZE, "ict-fit")[0]

    def with_identity(fit: ict_fit.IctFit, identity: np.ndarray) -> ict_fit.IctFit:
        return replace(fit, identity=identity, identity_track=None)

    from_median, from_last = [], []
    for i, (fit, mask) in enumerate(fits):
        own = drawn(fit)[mask]
        from_median.append(angular_error_deg(own, drawn(with_identity(fit, median))[mask]).mean())
        if i:
            from_last.append(angular_error_deg(own, drawn(with_identity(fit, fits[i - 1][0].identity))[mask]).mean())
    return {"frames": len(fits), "from_median_identity_deg": round(float(np.mean(from_median)), 3),
            "frame_to_frame_deg": round(float(np.mean(from_last)), 3)}


def videos(folder: Path, frames: int) -> dict:
    """The shipped setting against one identity per frame, on every clip of ``folder``."""
    settings = {name: variants()[name][0]
                for name in ("per-frame identity", MEAN_FACE_CENTRE, "tracked identity (evidence 1)")}
    return {path.name: {name: shape_drift(video_fits(path, frames, s)) for name, s in settings.items()}
            for path in sorted(folder.glob("*.mp4"))}


def cost(root: Path) -> dict[str, float]:
    found = (prior.stored_crop_points(root, f.name, (SIZE, SIZE)) for f in scan_dataset(root))
    points = next(p for p in found if p is not None)
    face, out = ict_fit.load_ict_face(), {}
    for label, settings in [("per-frame identity", replace(ict_fit.FitSettings(), track_identity=False)),
                            ("tracked identity, mean-face centre", replace(ict_fit.FitSettings(), landmark_identity=False)),
                            ("tracked identity", ict_fit.FitSettings())]:
        first = ict_fit.fit_landmarks(points, face, settings)
        second = ict_fit.fit_landmarks(points, face, settings, previous=first)  # the track exists from here on
        out[f"fit_warm_ms ({label})"] = median_ms(
            lambda s=settings, p=second: ict_fit.fit_landmarks(points, face, s, previous=p), 200, clock=time.process_time)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the real scan's set (stored landmarks)")
    parser.add_argument("--model", type=Path, default=None, help="a prior model scored too (default: the shipped fast-prior)")
    parser.add_argument("--no-model", action="store_true", help="coarse faces only")
    parser.add_argument("--videos", type=Path, default=VIDEO_DIR)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        raise SystemExit(f"{args.data}: dataset folder not found")
    model = None
    if not args.no_model:
        from facenormals import zoo

        model = args.model or zoo.model_path("fast-prior")
    report = {"real scan as a track": real_scan_track(args.data, model),
              "videos": videos(args.videos, args.frames) if args.videos.is_dir() else {},
              "cost_cpu": {k: round(v, 3) for k, v in cost(args.data).items()}}
    print(json.dumps(report, indent=2))
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
