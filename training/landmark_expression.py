"""Learn the landmark expression map (``facenormals/assets/landmark_expression.npz``, :mod:`facenormals.landmark_expression`).

From ICT sets rendered by ``facenormals data render`` with stored landmarks (``facenormals data prior``): each
sample's 468 MediaPipe points, aligned onto the landmark identity map's reference face (the features both maps
read), against the expression weights it was rendered with (its params' ``expressions``; those not named are 0).
Ridge regression on standardised coordinates (:func:`facenormals.training.landmark_identity.ridge_affine`).

The fit's expression ridge weight once centred at the map's estimate (``--prior-weight``) is the one real face
with ground truth preferred: on renders ever stronger weights bring the fitted expressions closer to the rendered
ones (the report's curve over ``--curve-weights``: every ``HOLD_EVERY``-th training sample held out, the map learnt on
the rest), but a real face's expressions are not exactly ICT's, and on the real scan's renders (``val_james``) the
network gained most at 64 of 64 / 256 / 1024 (README "Coarse face": a choice made on a validation set). The
validation sets given with ``--holdout`` are reported on: the neutral face, the landmark fit without the map, the
map's estimate and the fit centred at it.

    python -m facenormals.training.landmark_expression \\
        --ict /work/datasets/ict_paired_v6 --ict /work/datasets/ict_paired_v7 --ict /work/datasets/ict_paired_v8 \\
        --holdout /work/datasets/val_ict_v2 --holdout /work/datasets/val_ict_v5 --holdout /work/datasets/val_profile \\
        --out facenormals/assets/landmark_expression.npz --overwrite \\
        --json benchmarks/results/landmark_expression/landmark_expression.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facenormals import ict_fit, landmark_expression, landmark_identity
from facenormals.atomic import atomic_path, check_output, write_text_atomic
from facenormals.dataset import scan_dataset
from facenormals.fileio import DataError
from facenormals.training.data.jobs import read_params
from facenormals.training.landmark_identity import aligned_features, ridge_affine, sample_crop_points

DEFAULT_RIDGE = 100.0  # the identity map's; 30–1 000 within 0.001 RMS of the weights on val_ict_v2 (session 33)
DEFAULT_PRIOR_WEIGHT = 64.0  # the real scan's choice of 64 / 256 / 1 024 (README "Coarse face")
CURVE_WEIGHTS = (16.0, 64.0, 256.0, 1024.0)
HOLD_EVERY = 10  # every 10th training sample measures the curve
# the fit as shipped with the expression map off: what the map is measured against (the identity centre as shipped)
PLAIN_FIT = ict_fit.FitSettings(landmark_expression=False)
MAP_FIT = ict_fit.FitSettings()


@dataclass
class Rows:
    points: np.ndarray  # N×468×3 crop points
    expressions: np.ndarray  # N×K_ex rendered expression weights, the fit's order
    names: list[str]

    def subset(self, keep: np.ndarray) -> Rows:
        return Rows(self.points[keep], self.expressions[keep], [n for n, k in zip(self.names, keep, strict=True) if k])


def rendered_expression(root: Path, name: str, order: tuple[str, ...]) -> np.ndarray:
    """The expression weights sample ``name`` of an ICT set was rendered with, in ``order`` (unnamed ones 0)."""
    where = root / "params" / f"{name}.json"
    stored = read_params(root, name)
    if stored is None or stored.get("source") != "ict":
        raise DataError(f"{where}: no ICT params for {name} (an ICT set rendered by 'facenormals data render')")
    named = stored.get("expressions", {})
    unknown = set(named) - set(order)
    if unknown:
        raise DataError(f"{where}: expressions the fit's face does not have: {sorted(unknown)}")
    return np.array([float(named.get(n, 0.0)) for n in order])


def set_rows(root: Path) -> Rows:
    """An ICT set's samples with stored landmarks: their crop points and rendered expressions."""
    order = ict_fit.load_ict_face().expression_names
    points, expressions, names = [], [], []
    for files in tqdm(scan_dataset(root), desc=root.name, unit="sample", mininterval=10):
        if files.image is None:
            continue
        crop_points = sample_crop_points(root, files.name, files.image)
        if crop_points is None:
            continue
        expressions.append(rendered_expression(root, files.name, order))
        points.append(crop_points[:landmark_identity.NUM_POINTS])
        names.append(files.name)
    if not names:
        raise DataError(f"{root}: no ICT samples with stored landmarks (run 'facenormals data prior' on it)")
    return Rows(np.stack(points), np.stack(expressions), names)


def fit_map(points: np.ndarray, expressions: np.ndarray, prior_weight: float, ridge: float = DEFAULT_RIDGE,
            reference: np.ndarray | None = None) -> landmark_expression.LandmarkExpression:
    """Ridge regression of expressions (N×K) on points (N×468×3) aligned onto ``reference`` (default: the shipped
    identity map's, whose features the fit shares)."""
    if len(points) != len(expressions):
        raise ValueError(f"{len(points)} point sets but {len(expressions)} expressions")
    if reference is None:
        reference = landmark_identity.load_landmark_identity().reference
    weights, offset = ridge_affine(aligned_features(points, reference), expressions, ridge)
    return landmark_expression.LandmarkExpression(reference, weights, offset, prior_weight)


def expression_rms_mm(estimates: np.ndarray, truth: np.ndarray) -> float:
    """RMS displacement (mm) over the ICT face's vertices between the faces of two expression sets (N×K)."""
    basis = ict_fit.load_ict_face().expression.astype(np.float64)  # K×V×3, cm
    moved = np.einsum("nk,kvc->nvc", estimates - truth, basis)
    return float(10.0 * np.sqrt(np.mean(np.sum(moved ** 2, axis=-1))))


def fitted_expressions(points: np.ndarray, model: landmark_expression.LandmarkExpression | None) -> np.ndarray:
    """The landmark fit's expressions (rows), centred at ``model``'s estimates (None: the plain fit)."""
    settings = PLAIN_FIT if model is None else MAP_FIT
    return np.stack([ict_fit.fit_landmarks(p, settings=settings, expression_map=model).expression
                     for p in points]).astype(np.float64)


def prior_weight_curve(rows: Rows, weights: tuple[float, ...], ridge: float) -> dict:
    """How close the fits of every ``HOLD_EVERY``-th sample come to the rendered expressions (vertex RMS, mm) at each
    prior weight, the map learnt on the other samples; the plain fit beside them."""
    held = np.arange(len(rows.names)) % HOLD_EVERY == 0
    learn, check = rows.subset(~held), rows.subset(held)
    learnt = fit_map(learn.points, learn.expressions, weights[0], ridge)  # the weight is the fit's, not the map's
    errors = {}
    for weight in tqdm(weights, desc="prior weight", unit="weight"):
        model = replace(learnt, prior_weight=weight)
        errors[f"{weight:g}"] = round(expression_rms_mm(fitted_expressions(check.points, model), check.expressions), 3)
    return {"held_out_samples": len(check.names),
            "plain fit": round(expression_rms_mm(fitted_expressions(check.points, None), check.expressions), 3),
            "fit centred at the map, by prior weight": errors}


def holdout_report(model: landmark_expression.LandmarkExpression, rows: Rows) -> dict:
    """Expression error (vertex RMS, mm) of the neutral face, the plain fit, the map and the fit centred at it."""
    estimates = [model.estimate(p) for p in rows.points]
    mapped = np.stack([np.zeros(rows.expressions.shape[1]) if e is None else e for e in estimates])
    return {"samples": len(rows.names), "off_manifold": sum(e is None for e in estimates), "vertex_rms_mm": {
        "neutral face": round(expression_rms_mm(0 * rows.expressions, rows.expressions), 3),
        "landmark fit": round(expression_rms_mm(fitted_expressions(rows.points, None), rows.expressions), 3),
        "landmark expression map": round(expression_rms_mm(mapped, rows.expressions), 3),
        "fit centred at the map": round(expression_rms_mm(fitted_expressions(rows.points, model),
                                                          rows.expressions), 3)}}


def write_map(path: Path, model: landmark_expression.LandmarkExpression) -> None:
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, reference=model.reference.astype(np.float32),
                            weights=model.weights.astype(np.float32), offset=model.offset.astype(np.float32),
                            prior_weight=np.float32(model.prior_weight))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ict", type=Path, action="append", required=True,
                        help="a training ICT set with stored landmarks (repeatable)")
    parser.add_argument("--holdout", type=Path, action="append", default=[],
                        help="a held-out ICT set to report on (repeatable)")
    parser.add_argument("--ridge", type=float, default=DEFAULT_RIDGE)
    parser.add_argument("--prior-weight", type=float, default=DEFAULT_PRIOR_WEIGHT,
                        help="the fit's expression ridge weight once centred at the map's estimate")
    parser.add_argument("--curve-weights", type=float, nargs="*", default=list(CURVE_WEIGHTS),
                        help="prior weights to report the held-out training renders' expression error at")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="the report")
    args = parser.parse_args(argv)
    if any(not w > 0 for w in [args.prior_weight, *args.curve_weights]):
        parser.error(f"prior weights must be > 0, got {args.prior_weight} and {args.curve_weights}")
    check_output(args.out, "landmark expression map", overwrite=args.overwrite)
    sets = [set_rows(folder) for folder in args.ict]
    rows = Rows(np.concatenate([r.points for r in sets]), np.concatenate([r.expressions for r in sets]),
                [n for r in sets for n in r.names])
    model = fit_map(rows.points, rows.expressions, args.prior_weight, args.ridge)
    report: dict = {"training": {f.name: len(r.names) for f, r in zip(args.ict, sets, strict=True)},
                    "ridge": args.ridge, "prior_weight": args.prior_weight}
    if args.curve_weights:
        report["held_out_training_renders"] = prior_weight_curve(rows, tuple(args.curve_weights), args.ridge)
    for folder in args.holdout:
        report[folder.name] = holdout_report(model, set_rows(folder))
    write_map(args.out, model)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        write_text_atomic(args.json, text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
