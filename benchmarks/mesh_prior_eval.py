"""Evidence for the mesh prior (issue 9): models vs the MediaPipe-mesh baseline, same crops, paper metrics.

    python -m facenormals.benchmarks.mesh_prior_eval --data /work/datasets/val_ict --data /work/datasets/val_james \\
        --model rgb=RGB.safetensors --model prior=RUN/last.pt [--json OUT.json] [--limit N]

Per set, and per subset where the set's params.csv has a ``hard`` column (strong rotation 35–55° and harsh
side light vs the rest): every model and the mesh baseline (``facenormals eval --baseline mediapipe-mesh``'s
definition: mesh normals, mask pixels beyond the mesh take the nearest mesh normal). Images where
MediaPipe finds no face are left out of the baseline; the models are also scored on the same images
(``on mesh images``) so the comparison is like for like. Prior models get MediaPipe's prior on each crop.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from facenormals.atomic import write_text_atomic
from facenormals.metrics import MetricAccumulator
from facenormals.training.evaluation import batches, fill_uncovered, load_predictor, paired_samples


def run_state_predictor(path: Path) -> object:
    """A training run's ``last.pt`` (weights + resolved config) → predictor: scores a run still in progress."""
    import torch

    from facenormals.model import create_model
    from facenormals.training.evaluation import torch_predictor

    state = torch.load(path, map_location="cpu", weights_only=False)
    section = state["config"]["model"]
    prior = section.get("prior", "none")
    model = create_model(section["arch"], section["variant"], **({"prior": prior} if prior != "none" else {}))
    model.load_state_dict(state["model"])
    print(f"{path}: {section['arch']}/{section['variant']} prior={prior}, step {state['progress']['step']}")
    return torch_predictor(model.image_to_normal_path)


def hard_flags(folder: Path) -> dict[str, bool]:
    path = folder / "params.csv"
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or "hard" not in rows[0]:
        return {}
    return {row["name"]: row["hard"] == "True" for row in rows}


def evaluate_set(folder: Path, models: dict[str, Path], limit: int, batch_size: int) -> dict:
    from facenormals.mesh_prior import create_face_mesh, mesh_normals_for_crop

    samples = paired_samples(folder)
    if limit:
        samples = samples[:: max(1, len(samples) // limit)][:limit]
    hard = hard_flags(folder)
    subsets = ["all", "hard", "not hard"] if hard else ["all"]
    names = [*models, "mediapipe-mesh"]
    acc = {(m, s, same): MetricAccumulator() for m in names for s in subsets for same in (False, True)}
    predictors = {name: run_state_predictor(path) if path.suffix == ".pt" else load_predictor(path)
                  for name, path in models.items()}
    no_face = 0
    with create_face_mesh() as face_mesh:
        for batch in batches(samples, batch_size):
            preds = {name: p(batch.images).transpose(0, 2, 3, 1) for name, p in predictors.items()}
            for i, name in enumerate(batch.names):
                where = ["all"] + (["hard" if hard.get(name) else "not hard"] if hard else [])
                mesh, coverage, found = mesh_normals_for_crop(batch.images_u8[i], face_mesh)
                found = found and coverage.any()
                no_face += not found
                target, mask = batch.normals[i], batch.masks[i]
                for s in where:
                    for model in models:
                        acc[(model, s, False)].add(preds[model][i], target, mask)
                        if found:
                            acc[(model, s, True)].add(preds[model][i], target, mask)
                    if found:
                        acc[("mediapipe-mesh", s, True)].add(fill_uncovered(mesh, coverage), target, mask)
            print(f"  {folder.name}: {len(batch.names)} more images", flush=True)
    out: dict = {"n_images": len(samples), "no_face": no_face, "subsets": {}}
    for s in subsets:
        entry = {}
        for m in names:
            for same in (False, True):
                try:
                    entry[f"{m}{' (on mesh images)' if same else ''}"] = acc[(m, s, same)].result().as_dict()
                except ValueError:  # nothing scored: the baseline's all-images row, or an empty subset
                    continue
        out["subsets"][s] = entry
    return out


def print_table(name: str, result: dict) -> None:
    print(f"\n{name}: {result['n_images']} images, MediaPipe found no face in {result['no_face']}")
    for subset, entry in result["subsets"].items():
        print(f"  [{subset}]")
        for label, m in entry.items():
            print(f"    {label:<34}{m['n_images']:>5}  {m['mean_deg']:6.2f} ± {m['std_deg']:5.2f}"
                  f"  <20° {m['pct_below_20']:5.1f}  <25° {m['pct_below_25']:5.1f}  <30° {m['pct_below_30']:5.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", type=Path, required=True)
    parser.add_argument("--model", action="append", required=True, metavar="NAME=CKPT")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--limit", type=int, default=0, help="at most N evenly spaced images per set (0: all)")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)
    models = {}
    for spec in args.model:
        name, sep, path = spec.partition("=")
        if not sep or not Path(path).is_file():
            raise SystemExit(f"--model expects NAME=CKPT with an existing file, got {spec!r}")
        models[name] = Path(path)
    report = {"models": {k: str(v) for k, v in models.items()}, "sets": {}}
    for folder in args.data:
        report["sets"][folder.name] = evaluate_set(folder, models, args.limit, args.batch_size)
        print_table(folder.name, report["sets"][folder.name])
        if args.json:
            write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
