"""How much a better identity could still give: the coarse face and the shipped network with each crop's ICT identity
held at a better one than the per-frame fit's, which knows a face only from MediaPipe's landmarks.

Each crop's fit is re-run with its identity held (pose and expressions fitted to it, as a tracked face's are to
its pooled identity), its coarse face drawn (``ict-blend``, the prior models' input) and the network run on it:

* ICT sets (``--ict SET LO HI``): the identity the set was rendered with, drawn again from the set's seed with its
  identity range (``scripts/make_datasets.sh``) and checked against the stored identity norm; its first 50 modes,
  those of the fit's asset (the other 50 and any shape outside ICT's span stay unknown).
* sets of one person (``--person SET``, the real scan's renders): one identity for all the set's crops, fitted
  (Gauss-Newton, ridge ``--ridge``) so that their coarse faces (``ict-fit``) match the crops' true normals, in two
  folds — each half of the crops is scored with the identity fitted on the other half, so the figure is what an
  identity known from *other views* of the person gives. And the same fit to the network's own outputs instead of
  the truth: how much of that identity the network's normals already carry.

    python -m facenormals.benchmarks.identity_headroom --ict /work/datasets/val_ict_v2 1 1 \\
        --person /work/datasets/val_james --json benchmarks/results/identity_headroom.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facenormals import ict_fit, prior
from facenormals.atomic import write_text_atomic
from facenormals.conventions import angular_error_deg
from facenormals.fileio import DataError
from facenormals.metrics import MetricAccumulator
from facenormals.training.data.sources import IctSource, rendered_identity

SIZE = 256
SOURCE = "ict-blend"
STEP = 0.5  # finite-difference step of the identity Jacobian (units of a mode's standard deviation)


@dataclass
class Crop:
    name: str
    points: np.ndarray  # landmark crop points
    still: ict_fit.IctFit  # the per-frame fit
    image: np.ndarray  # 1×3×S×S float32
    normals: np.ndarray  # S×S×3 truth
    mask: np.ndarray  # S×S bool


def load_crops(root: Path) -> list[Crop]:
    """The set's crops with stored landmarks (``facenormals data prior``) and their per-frame fits."""
    crops = [Crop(name, points, ict_fit.fit_landmarks(points),
                  sample.image.transpose(2, 0, 1)[None].astype(np.float32) / 255.0, sample.normals,
                  sample.mask.astype(bool))
             for name, sample, points in prior.paired_with_stored_points(root)]
    if not crops:
        raise DataError(f"{root}: no crops with stored landmarks (run 'facenormals data prior' on it)")
    return crops


def held_fit(crop: Crop, identity: np.ndarray) -> ict_fit.IctFit:
    """The crop's fit with its identity held at ``identity``, warm-started from its own fit."""
    return ict_fit.fit_landmarks(crop.points, previous=crop.still, identity=identity)


def rendered_identities(root: Path, crops: list[Crop], identity_scale: tuple[float, float]) -> list[np.ndarray]:
    """Each ICT crop's identity (first 50 weights), drawn again from the set's seed and checked per crop."""
    source = IctSource(identity_scale=identity_scale)
    k_id = len(ict_fit.load_ict_face().identity)
    return [rendered_identity(source, root, crop.name)[:k_id] for crop in crops]


def drawn(crop: Crop, fit: ict_fit.IctFit, source: str = SOURCE) -> tuple[np.ndarray, np.ndarray]:
    return prior.fitted_prior(fit, crop.points, SIZE, source)


def identity_for_normals(crops: list[Crop], targets: list[np.ndarray], ridge: float, rounds: int) -> np.ndarray:
    """One identity whose coarse faces (``ict-fit``, every other pixel of each crop's mask) match ``targets`` (S×S×3
    per crop) best in least squares: Gauss-Newton from the mean face, ridge ``ridge`` × the mean Jacobian energy."""
    k_id = len(ict_fit.load_ict_face().identity)
    identity = np.zeros(k_id)
    for _ in range(rounds):
        normal_eq, rhs = np.zeros((k_id, k_id)), np.zeros(k_id)
        for crop, target in zip(crops, targets, strict=True):
            fit = held_fit(crop, identity)
            keep = crop.mask[::2, ::2]
            base = drawn(crop, fit, "ict-fit")[0][::2, ::2][keep]
            jacobian = np.empty((base.size, k_id))
            for mode in range(k_id):
                moved = identity.copy()
                moved[mode] += STEP
                shifted = drawn(crop, replace(fit, identity=moved.astype(np.float32)), "ict-fit")[0]
                jacobian[:, mode] = ((shifted[::2, ::2][keep] - base) / STEP).ravel()
            normal_eq += jacobian.T @ jacobian
            rhs += jacobian.T @ (target[::2, ::2][keep] - base).ravel()
        damping = ridge * np.trace(normal_eq) / k_id
        identity = identity + np.linalg.solve(normal_eq + damping * np.eye(k_id), rhs - damping * identity)
    return identity


def two_fold(crops: list[Crop], targets: list[np.ndarray], ridge: float, rounds: int) -> list[np.ndarray]:
    """Each crop's identity fitted on the other half of the crops (even / odd positions)."""
    halves = [list(range(0, len(crops), 2)), list(range(1, len(crops), 2))]
    out: list[np.ndarray] = [np.zeros(0)] * len(crops)
    for scored, fitted in (halves, halves[::-1]):
        identity = identity_for_normals([crops[i] for i in fitted], [targets[i] for i in fitted], ridge, rounds)
        for i in scored:
            out[i] = identity
    return out


def network_outputs(crops: list[Crop], run) -> list[np.ndarray]:
    """The network on each crop's own coarse face (what ``facenormals eval`` scores)."""
    outputs = []
    for crop in crops:
        normals, coverage = drawn(crop, crop.still)
        outputs.append(_run(run, crop, normals, coverage))
    return outputs


def _run(run, crop: Crop, normals: np.ndarray, coverage: np.ndarray) -> np.ndarray:
    row = np.concatenate([normals.transpose(2, 0, 1), coverage[None].astype(np.float32)])[None]
    return np.ascontiguousarray(run(np.concatenate([crop.image, row], axis=1))[0].transpose(1, 2, 0))


def score(crops: list[Crop], identities: dict[str, list[np.ndarray]], run) -> dict:
    """Paper's mean angle of the coarse face and the network, per identity variant (``still``: the fit's own)."""
    out: dict = {"crops": len(crops)}
    for label, chosen in [("still", None), *identities.items()]:
        coarse, network = MetricAccumulator(), MetricAccumulator()
        for i, crop in enumerate(tqdm(crops, desc=label, unit="crop", leave=False, mininterval=10)):
            fit = crop.still if chosen is None else held_fit(crop, chosen[i])
            normals, coverage = drawn(crop, fit)
            coarse.add(normals, crop.normals, crop.mask)
            if run is not None:
                network.add(_run(run, crop, normals, coverage), crop.normals, crop.mask)
        out[label] = {"coarse_face_deg": round(coarse.result().mean_deg, 3)}
        if run is not None:
            out[label]["network_deg"] = round(network.result().mean_deg, 3)
    return out


FIGURE_TILE = 192
FIGURE_COLUMNS = ("photo", "truth", "coarse face", "coarse face, better identity", "network",
                  "network, better identity")


def figure(crops: list[Crop], identities: list[np.ndarray], run, rows: int) -> np.ndarray:
    """RGB sheet: per crop the photo, the truth, and the coarse face and network with the fit's / the better identity
    ((n+1)/2 as RGB, outside the mask grey), each with its mean error over the mask."""
    import cv2

    from facenormals.conventions import encode_normals

    def tile(normals: np.ndarray | None, crop: Crop, label: str) -> np.ndarray:
        if normals is None:
            rgb = crop.image[0].transpose(1, 2, 0)
        else:
            rgb = np.where(crop.mask[..., None], encode_normals(normals), 0.5)
        out = cv2.resize(np.ascontiguousarray(rgb * 255).astype(np.uint8), (FIGURE_TILE, FIGURE_TILE),
                         interpolation=cv2.INTER_AREA)
        if label:
            cv2.putText(out, label, (6, FIGURE_TILE - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        return out

    lines = []
    for i in range(0, min(rows * 2, len(crops)), 2):  # even crops: their identity was fitted on the odd ones
        crop = crops[i]
        panels = [tile(None, crop, ""), tile(crop.normals, crop, "")]
        for fit in (crop.still, held_fit(crop, identities[i])):
            normals, coverage = drawn(crop, fit)
            for shown in (normals, _run(run, crop, normals, coverage)):
                error = angular_error_deg(shown, crop.normals)[crop.mask].mean()
                panels.append(tile(shown, crop, f"{error:.2f} deg"))
        order = [0, 1, 2, 4, 3, 5]  # photo, truth, coarse, coarse better, network, network better
        lines.append(np.hstack([panels[k] for k in order]))
    header = np.full((28, FIGURE_TILE * len(FIGURE_COLUMNS), 3), 255, np.uint8)
    for k, label in enumerate(FIGURE_COLUMNS):
        cv2.putText(header, label, (k * FIGURE_TILE + 6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([header, *lines])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ict", nargs=3, action="append", default=[], metavar=("SET", "LO", "HI"),
                        help="an ICT set and the identity scale range it was rendered with (repeatable)")
    parser.add_argument("--person", type=Path, action="append", default=[],
                        help="a set of one person's crops, e.g. the real scan's (repeatable)")
    parser.add_argument("--ridge", type=float, default=0.01)
    parser.add_argument("--rounds", type=int, default=4, help="Gauss-Newton rounds of the --person fits")
    parser.add_argument("--model", type=Path, default=None, help="prior model (default: the shipped fast-prior)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--figure", type=Path, default=None,
                        help="PNG of the first --person set's crops with the fit's and the better identity")
    parser.add_argument("--figure-rows", type=int, default=3)
    args = parser.parse_args(argv)
    if not args.ict and not args.person:
        parser.error("give at least one --ict or --person set")
    from facenormals import zoo
    from facenormals.training.gate import network

    model = args.model or zoo.model_path("fast-prior")
    run, source, _ = network(model)
    if source != SOURCE:
        raise SystemExit(f"{model}: a {source!r} prior model; this benchmark draws {SOURCE!r}")
    report: dict = {"model": str(model), "ridge": args.ridge, "rounds": args.rounds}
    for folder, lo, hi in args.ict:
        crops = load_crops(Path(folder))
        truth = rendered_identities(Path(folder), crops, (float(lo), float(hi)))
        report[Path(folder).name] = score(crops, {"true identity": truth}, run)
    for folder in args.person:
        crops = load_crops(folder)
        from_truth = two_fold(crops, [c.normals for c in crops], args.ridge, args.rounds)
        from_network = two_fold(crops, network_outputs(crops, run), args.ridge, args.rounds)
        report[folder.name] = score(crops, {"identity from other views' true normals": from_truth,
                                            "identity from other views' network normals": from_network}, run)
        report[folder.name]["identity_norm"] = {
            "still (mean)": round(float(np.mean([np.linalg.norm(c.still.identity) for c in crops])), 3),
            "from true normals": round(float(np.mean([np.linalg.norm(i) for i in from_truth])), 3),
            "from network normals": round(float(np.mean([np.linalg.norm(i) for i in from_network])), 3)}
        views = [angular_error_deg(drawn(c, held_fit(c, from_truth[i]))[0], drawn(c, c.still)[0])[c.mask].mean()
                 for i, c in enumerate(crops)]
        report[folder.name]["coarse_face_moved_deg"] = round(float(np.mean(views)), 3)
        if args.figure is not None and folder == args.person[0]:
            from facenormals.fileio import write_rgb

            write_rgb(args.figure, figure(crops, from_truth, run, args.figure_rows))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        write_text_atomic(args.json, text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
