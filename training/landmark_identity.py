"""Learn the landmark identity map (``facenormals/assets/landmark_identity.npz``, :mod:`facenormals.landmark_identity`).

From ICT sets rendered by ``facenormals data render`` with stored landmarks (``facenormals data prior``): each
sample's 468 MediaPipe points, similarity-aligned onto a reference face (generalised Procrustes over the training
samples), against the identity it was rendered with (its first 50 weights, drawn again from the set's seed and
checked per sample). Ridge regression on standardised coordinates; held-out sets report the identities' error as the
RMS vertex displacement of the face they leave wrong, against the mean face's and the landmark fit's own.

A still's share of the estimate (``--real``): one view's estimate on a real face carries noise the renders do not
have. Image-only samples cut from real videos (``facenormals data photos`` on the shared clips, with stored
landmarks) measure it without any ground truth: N, the estimates' mean square spread about their clip's mean (one
face, one identity). With S the estimates' mean square on the held-out renders (where the map is the best linear
estimate), shrinking a real face's estimate by S / (S + N) minimises its expected error; the asset keeps that share.

    python -m facenormals.training.landmark_identity \\
        --ict /work/datasets/ict_paired_v6 1.0 1.6 --ict /work/datasets/ict_paired_v7 1.0 1.6 \\
        --ict /work/datasets/ict_paired_v8 1.0 1.6 --holdout /work/datasets/val_ict_v2 1.0 1.0 \\
        --holdout /work/datasets/val_ict_v5 1.0 1.6 --holdout /work/datasets/val_profile 1.0 1.0 \\
        --real /work/datasets/photos_image_only_v2 \\
        --out facenormals/assets/landmark_identity.npz --overwrite \\
        --json benchmarks/results/landmark_identity/landmark_identity.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from facenormals import ict_fit, landmark_identity
from facenormals.atomic import atomic_path, check_output, write_text_atomic
from facenormals.dataset import scan_dataset
from facenormals.fileio import DataError
from facenormals.prior import stored_crop_points
from facenormals.training.data.jobs import read_params
from facenormals.training.data.sources import IctSource, rendered_identity

DEFAULT_RIDGE = 100.0  # per standardised coordinate; 10–300 within 0.03° on val_ict_v2 (HISTORY session 30)
SUBSPACE = 160  # principal directions of MediaPipe's aligned points kept as its manifold (99.97 % of the variance)
RESIDUAL_MARGIN = 2.0  # × the training points' 99.9th-percentile residual: beyond it, points are not MediaPipe's
PROCRUSTES_ROUNDS = 2
# the landmark fit alone, its identity prior at the mean face: the baseline the map is measured against (the
# default fit centres a still at the shipped map's share, which would measure the map against itself)
PLAIN_FIT = ict_fit.FitSettings(landmark_identity=False)
MIN_CLIP_FRAMES = 10  # a clip's spread about its own mean needs frames enough for the mean to mean something


@dataclass
class Rows:
    points: np.ndarray  # N×468×3 crop points
    identities: np.ndarray  # N×K_id rendered identities
    names: list[str]


def sample_crop_points(root: Path, name: str, image: Path) -> np.ndarray | None:
    """A sample's stored landmarks as crop points on its image (only the header is read), None where none."""
    with Image.open(image) as opened:
        shape = (opened.height, opened.width, 3)
    return stored_crop_points(root, name, shape)


def set_rows(root: Path, identity_scale: tuple[float, float]) -> Rows:
    """An ICT set's samples with stored landmarks: their crop points and rendered identities."""
    source = IctSource(identity_scale=identity_scale)
    k_id = ict_fit.NUM_IDENTITY_MODES
    points, identities, names = [], [], []
    for files in tqdm(scan_dataset(root), desc=root.name, unit="sample", mininterval=10):
        if files.image is None:
            continue
        crop_points = sample_crop_points(root, files.name, files.image)
        if crop_points is None:
            continue
        identities.append(rendered_identity(source, root, files.name)[:k_id])
        points.append(crop_points[:landmark_identity.NUM_POINTS])
        names.append(files.name)
    if not names:
        raise DataError(f"{root}: no ICT samples with stored landmarks (run 'facenormals data prior' on it)")
    return Rows(np.stack(points), np.stack(identities).astype(np.float64), names)


def procrustes_reference(points: np.ndarray, rounds: int = PROCRUSTES_ROUNDS) -> np.ndarray:
    """The mean face of point sets (N×468×3) aligned onto it, starting from the first set."""
    reference = np.asarray(points[0], dtype=np.float64)
    for _ in range(rounds):
        reference = np.mean([landmark_identity.aligned_points(p, reference) for p in points], axis=0)
    return reference


def aligned_features(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Point sets (N×468×3) similarity-aligned onto ``reference``, flattened (N×1404)."""
    return np.stack([landmark_identity.aligned_points(p, reference).reshape(-1) for p in points])


def ridge_affine(features: np.ndarray, targets: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """``targets ≈ features · weights + offset`` by ridge regression on standardised features (the standardisation
    folded into the returned weights and offset)."""
    if ridge <= 0:
        raise ValueError(f"ridge must be > 0, got {ridge:g}")
    mean, spread = features.mean(0), features.std(0) + 1e-6
    standard = (features - mean) / spread
    target_mean = targets.mean(0)
    solved = np.linalg.solve(standard.T @ standard + ridge * np.eye(standard.shape[1]),
                             standard.T @ (targets - target_mean))
    weights = solved / spread[:, None]
    return weights, target_mean - mean @ weights


def fit_map(points: np.ndarray, identities: np.ndarray, ridge: float = DEFAULT_RIDGE) -> landmark_identity.LandmarkIdentity:
    """Ridge regression of identities (N×K) on aligned points (N×468×3), standardisation folded into the map."""
    if len(points) != len(identities):
        raise ValueError(f"{len(points)} point sets but {len(identities)} identities")
    reference = procrustes_reference(points)
    features = aligned_features(points, reference)
    weights, offset = ridge_affine(features, identities, ridge)
    mean = features.mean(0)
    # at most a tenth as many directions as samples: the residuals beyond them must measure something
    basis = np.linalg.svd(features - mean, full_matrices=False)[2][:min(SUBSPACE, len(features) // 10)]
    residuals = np.linalg.norm((features - mean) - (features - mean) @ basis.T @ basis, axis=1)
    max_norm = float(np.linalg.norm(features @ weights + offset, axis=1).max())
    return landmark_identity.LandmarkIdentity(reference, weights, offset, mean, basis,
                                              RESIDUAL_MARGIN * float(np.percentile(residuals, 99.9)), max_norm)


def video_clips(root: Path) -> dict[str, np.ndarray]:
    """Crop points (F×468×3) of each face followed through a real video ("video/face"), from a folder of image-only
    samples with stored landmarks whose params name their video (``facenormals data photos``); clips of fewer than
    :data:`MIN_CLIP_FRAMES` frames are left out."""
    clips: dict[str, list[np.ndarray]] = {}
    for files in scan_dataset(root):
        sample = (read_params(root, files.name) or {}) if files.image is not None else {}
        crop_points = sample_crop_points(root, files.name, files.image) if "video" in sample else None
        if crop_points is not None:
            # face k is each frame's k-th largest: one person per clip while the faces keep their order of size
            clip = f"{sample['video']}/{sample.get('face', 0)}"
            clips.setdefault(clip, []).append(crop_points[:landmark_identity.NUM_POINTS])
    kept = {name: np.stack(points) for name, points in clips.items() if len(points) >= MIN_CLIP_FRAMES}
    if not kept:
        raise DataError(f"{root}: no video clip of ≥ {MIN_CLIP_FRAMES} frames with stored landmarks (image-only "
                        "samples whose params name their video: 'facenormals data photos', then 'data prior')")
    return kept


def still_share(render_estimates: np.ndarray, clip_estimates: dict[str, np.ndarray]) -> dict:
    """The share S / (S + N) of its estimate a still's identity prior is centred at, from the estimates (rows) on
    held-out renders (S: their mean square) and within each real clip (N: the clips' mean square spread about their
    own means, each clip weighted alike: one face each)."""
    if len(render_estimates) == 0:
        raise ValueError("no estimates on held-out renders to size the map's output")
    signal = float(np.mean(np.sum(render_estimates ** 2, axis=1)))
    spreads = {name: float(np.mean(np.sum((e - e.mean(0)) ** 2, axis=1))) for name, e in clip_estimates.items()}
    noise = float(np.mean(list(spreads.values())))
    return {"share": signal / (signal + noise), "renders_mean_square": signal, "real_noise": noise,
            "clips": {name: {"frames": len(clip_estimates[name]), "spread": spread} for name, spread in spreads.items()}}


def vertex_rms_mm(estimates: np.ndarray, truth: np.ndarray) -> float:
    """RMS displacement (mm) over the ICT face's vertices between the shapes of two identity sets (N×K)."""
    basis = ict_fit.load_ict_face().identity.astype(np.float64)  # K×V×3, cm
    moved = np.einsum("nk,kvc->nvc", estimates - truth, basis)
    return float(10.0 * np.sqrt(np.mean(np.sum(moved ** 2, axis=-1))))


def estimates_of(model: landmark_identity.LandmarkIdentity, points: np.ndarray) -> np.ndarray:
    """The map's estimates (rows) of the point sets it gives one for (on MediaPipe's manifold)."""
    found = [e for e in map(model.estimate, points) if e is not None]
    return np.stack(found) if found else np.zeros((0, len(model.offset)))


def holdout_report(model: landmark_identity.LandmarkIdentity, rows: Rows) -> tuple[dict, np.ndarray]:
    """Identity error of the map, the landmark fit and the mean face on a held-out set, and the map's estimates
    (rows) where it gives one."""
    estimates = [model.estimate(p) for p in rows.points]
    mapped = np.stack([np.zeros(rows.identities.shape[1]) if e is None else e for e in estimates])
    fitted = np.stack([ict_fit.fit_landmarks(p, settings=PLAIN_FIT).identity
                       for p in rows.points]).astype(np.float64)
    report = {"samples": len(rows.names), "off_manifold": sum(e is None for e in estimates),
              "vertex_rms_mm": {"mean face": round(vertex_rms_mm(0 * rows.identities, rows.identities), 3),
                                "landmark fit": round(vertex_rms_mm(fitted, rows.identities), 3),
                                "landmark identity map": round(vertex_rms_mm(mapped, rows.identities), 3)}}
    return report, mapped[[e is not None for e in estimates]]


def write_map(path: Path, model: landmark_identity.LandmarkIdentity) -> None:
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, reference=model.reference.astype(np.float32),
                            weights=model.weights.astype(np.float32), offset=model.offset.astype(np.float32),
                            feature_mean=model.feature_mean.astype(np.float32), basis=model.basis.astype(np.float16),
                            max_residual=np.float32(model.max_residual), max_norm=np.float32(model.max_norm),
                            still_share=np.float32(model.still_share))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ict", nargs=3, action="append", required=True, metavar=("SET", "LO", "HI"),
                        help="a training ICT set and the identity scale range it was rendered with (repeatable)")
    parser.add_argument("--holdout", nargs=3, action="append", default=[], metavar=("SET", "LO", "HI"),
                        help="a held-out ICT set to report on (repeatable)")
    parser.add_argument("--real", type=Path, action="append", default=[],
                        help="image-only samples cut from real videos, with stored landmarks: sizes a still's share "
                             "of the estimate (repeatable; needs --holdout; without it stills keep the mean face)")
    parser.add_argument("--ridge", type=float, default=DEFAULT_RIDGE)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="the held-out report")
    args = parser.parse_args(argv)
    if args.real and not args.holdout:
        parser.error("--real needs --holdout (held-out renders size the map's output)")
    check_output(args.out, "landmark identity map", overwrite=args.overwrite)
    rows = [set_rows(Path(folder), (float(lo), float(hi))) for folder, lo, hi in args.ict]
    model = fit_map(np.concatenate([r.points for r in rows]), np.concatenate([r.identities for r in rows]), args.ridge)
    report: dict = {"training": {Path(f).name: len(r.names) for (f, _, _), r in zip(args.ict, rows, strict=True)},
                    "ridge": args.ridge}
    held_out = []
    for folder, lo, hi in args.holdout:
        report[Path(folder).name], estimates = holdout_report(model, set_rows(Path(folder), (float(lo), float(hi))))
        held_out.append(estimates)
    if args.real:
        clips = {f"{root.name}:{name}": estimates_of(model, points)
                 for root in args.real for name, points in video_clips(root).items()}
        report["still_share"] = still_share(np.concatenate(held_out), clips)
        model = replace(model, still_share=report["still_share"]["share"])
    write_map(args.out, model)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        write_text_atomic(args.json, text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
