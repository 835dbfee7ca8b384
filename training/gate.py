"""The campaign's validation gate: does a candidate beat the shipped weights on every validation set?

    python -m facenormals.training.gate CANDIDATE.safetensors [MORE.safetensors ...] \
        --data /work/datasets/val_ict_v2 --data /work/datasets/val_james ... [--reference fast-prior] [--json OUT]

Scores exactly as ``facenormals eval`` does (every crop, MediaPipe's coarse face drawn on each crop, the mirror pass),
but draws the coarse-face channels once per set and keeps them in a cache (``--cache``), so that a second candidate
costs only the network: ~4× faster per candidate than ``eval`` on these 2 cores. The reference's per-crop errors are
cached too (keyed by its file's hash, the set's coarse faces and the package's code), so a repeated gate scores only
its candidates. A gate decides on hundredths of a degree on one real face, so it reports each candidate's per-crop
difference from the reference with its standard error and the share of crops it improves, not only the set means.
Verdict: ``pass`` when the candidate's mean is lower on every set. ``--no-mirror`` scores one network pass per crop
instead, as the live loop runs its model (``facenormals eval --no-mirror``): the gate of the live loop's model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

import facenormals
from facenormals import ict_fit, landmark_expression, landmark_identity, mesh_prior
from facenormals.atomic import write_text_atomic
from facenormals.checkpoint import load_image_to_normal
from facenormals.dataset import SampleFiles
from facenormals.fileio import check_model_file, file_sha256
from facenormals.mesh_prior import create_face_mesh
from facenormals.prior import prior_channels
from facenormals.training.evaluation import batches, evaluate_predictor, paired_samples, torch_network

DEFAULT_CACHE = Path.home() / ".cache" / "facenormals" / "gate"
# what draws the coarse face, code and data (the fit's landmark points, MediaPipe's triangles, the landmark
# weights): a change to any of these files makes new cache entries
_PACKAGE = Path(facenormals.__file__).resolve().parent
COARSE_FACE_FILES = ("prior.py", "ict_fit.py", "mesh_prior.py", "crops.py", "conventions.py", "similarity.py",
                     "landmark_identity.py", "landmark_expression.py",
                     *(str(path.relative_to(_PACKAGE)) for path in (ict_fit.ASSET, ict_fit.LANDMARK_WEIGHTS,
                                                                    mesh_prior.ASSET, landmark_identity.ASSET,
                                                                    landmark_expression.ASSET)))


@dataclass(frozen=True)
class Comparison:
    """One candidate against the reference on one set (degrees)."""

    mean_deg: float
    reference_deg: float
    delta_deg: float  # candidate − reference, set means
    delta_se_deg: float  # standard error of the per-crop differences' mean
    better_share: float  # share of crops where the candidate's error is lower

    @property
    def passes(self) -> bool:
        return self.delta_deg < 0.0


def compare(candidate: dict[str, float], reference: dict[str, float]) -> Comparison:
    """Per-crop errors of a candidate and the reference on the same crops → their paired comparison."""
    if candidate.keys() != reference.keys():
        raise ValueError("candidate and reference were scored on different crops")
    names = sorted(candidate)
    diff = np.array([candidate[n] - reference[n] for n in names])
    se = float(diff.std(ddof=1) / math.sqrt(diff.size)) if diff.size > 1 else float("nan")
    return Comparison(float(np.mean([candidate[n] for n in names])), float(np.mean([reference[n] for n in names])),
                      float(diff.mean()), se, float((diff < 0).mean()))


def coarse_face_fingerprint(package: Path = _PACKAGE) -> str:
    """A hash of :data:`COARSE_FACE_FILES` under ``package``."""
    digest = hashlib.sha256()
    for name in COARSE_FACE_FILES:
        digest.update((package / name).read_bytes())
    return digest.hexdigest()[:16]


def cache_key(samples: list[SampleFiles], source: str) -> str:
    """Names and sizes of the set's images, the prior source and the coarse face's files: any change, a new entry."""
    digest = hashlib.sha256(f"{source}|{coarse_face_fingerprint()}".encode())
    for files in samples:
        digest.update(f"{files.name}:{files.image.stat().st_size}".encode())
    return digest.hexdigest()[:20]


def cache_stem(folder: Path, samples: list[SampleFiles], source: str, cache: Path) -> Path:
    """The set's entries in the cache without their suffix: its coarse faces (``.npy``) and reference scores."""
    return cache / f"{folder.name}-{source}-{cache_key(samples, source)}"


def coarse_face_inputs(stem: Path, samples: list[SampleFiles], source: str) -> np.ndarray:
    """N×7×S×S network inputs of a set (RGB + the coarse face's channels), drawn once and cached as ``.npy``."""
    path = stem.with_name(stem.name + ".npy")
    if path.is_file():
        return np.load(path, mmap_mode="r")
    parts = []
    with create_face_mesh() as face_mesh:
        for batch in tqdm(batches(samples, 8), total=math.ceil(len(samples) / 8), desc=f"coarse face {stem.name}",
                          unit="batch", leave=False):
            parts.append(np.concatenate([batch.images, prior_channels(batch.images, face_mesh, source)], axis=1))
    inputs = np.concatenate(parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npy")
    np.save(partial, inputs)
    partial.replace(path)  # atomic: an interrupted draw leaves no half entry
    return inputs


def _package_fingerprint() -> str:
    """Every source file of the package: the reference's cached scores are only reused by the code that made them."""
    digest = hashlib.sha256()
    for path in sorted(Path(facenormals.__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cached_score(run: Callable[[np.ndarray], np.ndarray], inputs: np.ndarray, samples: list[SampleFiles],
                 label: str, entry: Path) -> dict[str, float]:
    """``score``, read from ``entry`` (JSON) when an earlier gate wrote it, else scored and written atomically."""
    if entry.is_file():
        return json.loads(entry.read_text())
    scores = score(run, inputs, samples, label)
    write_text_atomic(entry, json.dumps(scores))
    return scores


def network(path: Path, mirror: bool = True) -> tuple[Callable[[np.ndarray], np.ndarray], str, int]:
    """(the image→normal network of a model file, mirror-averaged unless ``mirror`` is off; its prior source; its
    input side)."""
    module = load_image_to_normal(check_model_file(path, "model"))
    source = module.cfg.input_prior
    if source is None:
        raise ValueError(f"{path}: an RGB model; the gate compares prior models (the campaign's)")
    return torch_network(module, mirror), source, int(module.cfg.input_size)


def score(run: Callable[[np.ndarray], np.ndarray], inputs: np.ndarray, samples: list[SampleFiles],
          label: str) -> dict[str, float]:
    """Per-crop mean angular error (°) of a network on a set's cached inputs, by ``facenormals eval``'s own loop."""
    start = 0

    def cached(images: np.ndarray) -> np.ndarray:  # eval's batches come in the samples' order
        nonlocal start
        rows = np.array(inputs[start:start + len(images)], dtype=np.float32)  # a writable copy of the mapped rows
        start += len(images)
        if not np.array_equal(rows[:, :3], images):
            raise ValueError(f"{label}: the cached coarse faces belong to other crops (clear the gate's cache)")
        return run(rows)

    return evaluate_predictor(cached, samples, label=label).per_image_deg


def run_gate(candidates: list[Path], reference: Path, sets: list[Path], cache: Path, mirror: bool = True) -> dict:
    """Score the reference and every candidate on every set → a JSON-ready report with per-crop errors; ``mirror``
    off: one network pass per crop (the live loop's)."""
    models = {path: network(path, mirror) for path in (reference, *candidates)}
    sources = {source for _, source, _ in models.values()}
    if len(sources) != 1:
        raise ValueError(f"the models draw different coarse faces {sorted(sources)}; the gate compares like with like")
    source = sources.pop()
    sides = {side for _, _, side in models.values()}
    report: dict = {"reference": str(reference), "mirror": mirror, "sets": {}, "candidates": {}}
    reference_id = f"{file_sha256(reference)[:16]}-{_package_fingerprint()}{'' if mirror else '-single'}"
    per_set: dict[str, dict[Path, dict[str, float]]] = {}
    for folder in sets:
        samples = paired_samples(folder)
        stem = cache_stem(folder, samples, source, cache)
        inputs = coarse_face_inputs(stem, samples, source)
        if len(sides) != 1 or inputs.shape[2:] != (next(iter(sides)),) * 2:
            raise ValueError(f"{folder}: crops are {inputs.shape[3]}×{inputs.shape[2]}, the models take "
                             f"{sorted(sides)}² (score other sizes with 'facenormals eval')")
        reference_entry = stem.with_name(f"{stem.name}-reference-{reference_id}.json")
        scores = {reference: cached_score(models[reference][0], inputs, samples, f"{reference.stem} {folder.name}",
                                          reference_entry)}
        for path in candidates:
            scores[path] = score(models[path][0], inputs, samples, f"{path.stem} {folder.name}")
        per_set[folder.name] = scores
        report["sets"][folder.name] = {"images": len(samples),
                                       "reference_deg": float(np.mean(list(per_set[folder.name][reference].values())))}
    for path in candidates:
        rows = {name: compare(scores[path], scores[reference]) for name, scores in per_set.items()}
        report["candidates"][str(path)] = {
            "passes": all(row.passes for row in rows.values()),
            "sets": {name: {**asdict(row), "per_image": per_set[name][path]} for name, row in rows.items()},
        }
    report["reference_per_image"] = {name: scores[reference] for name, scores in per_set.items()}
    return report


def format_report(report: dict) -> str:
    """A table: per set, the reference's mean and each candidate's mean, Δ ± SE and share of crops improved."""
    lines = [f"reference {report['reference']}" + ("" if report.get("mirror", True) else " (one pass per crop)")]
    for name, info in report["sets"].items():
        lines.append(f"  {name:<14} {info['images']:>4} crops  reference {info['reference_deg']:.3f}°")
    for path, result in report["candidates"].items():
        lines.append(f"{'PASS' if result['passes'] else 'fail'}  {path}")
        for name, row in result["sets"].items():
            lines.append(f"  {name:<14} {row['mean_deg']:.3f}°  Δ {row['delta_deg']:+.3f} ± {row['delta_se_deg']:.3f}° SE"
                         f"  better on {100 * row['better_share']:.0f} %")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m facenormals.training.gate", description=__doc__.split("\n\n")[0])
    parser.add_argument("candidates", nargs="+", type=Path, help="model files (.safetensors) to gate")
    parser.add_argument("--data", action="append", type=Path, required=True, help="a validation set (repeatable)")
    parser.add_argument("--reference", default=None,
                        help="the model to beat: a file or a shipped model's name (default: the shipped default)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"coarse-face cache (default {DEFAULT_CACHE})")
    parser.add_argument("--json", type=Path, default=None, help="write the report, per-crop errors included")
    parser.add_argument("--no-mirror", action="store_true",
                        help="one network pass per crop, as the live loop runs (default: the mirror pass, as the API)")
    args = parser.parse_args(argv)
    from facenormals.zoo import resolve_model

    reference = resolve_model(args.reference)
    try:
        report = run_gate(list(args.candidates), reference, list(args.data), args.cache, mirror=not args.no_mirror)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.json is not None:
        write_text_atomic(args.json, json.dumps(report, indent=1))
    return 0 if all(c["passes"] for c in report["candidates"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
