"""How often the coarse-face prior is missing or wrong, by head yaw (issue 14, item 4): the figures behind the
trainer's ``[augment] prior_dropout``.

    python -m facenormals.benchmarks.prior_availability DIR [DIR ...] [--source ict-fit] [--per-bin 40]
        [--json OUT.json]

For each rendered dataset folder (params.csv with yaw_deg, priors/index.csv from ``facenormals data prior``):
per |yaw| bin, the share of images where MediaPipe found no face (the prior is missing), and on up to
``--per-bin`` found images per bin the prior's mean angular error against the ground truth inside the face mask
and the share of "wrong" priors: error above ``--wrong-deg`` (a fit on misplaced landmarks; a good fit is
~10–15° from the truth, the empty prior carries no information at all). Folders without yaw (real photo crops)
get their found rate only.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402 (after the thread limits: BLAS reads them at import)

BINS = (0, 15, 30, 45, 60, 75, 90.001)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


_FILES: dict[Path, dict] = {}


def prior_error_deg(root: Path, name: str, source: str) -> float:
    """Mean angle (degrees) between the stored prior and the ground-truth normals inside the face mask."""
    from facenormals.dataset import load_sample, scan_dataset
    from facenormals.prior import stored_prior

    if root not in _FILES:
        _FILES[root] = {f.name: f for f in scan_dataset(root)}
    sample = load_sample(_FILES[root][name])
    normals, _coverage = stored_prior(root, name, sample.mask.shape, source)
    inside = sample.mask.astype(bool)
    cos = np.clip(np.sum(normals[inside] * sample.normals[inside], axis=1), -1.0, 1.0)
    return float(np.degrees(np.arccos(cos)).mean())


def measure(root: Path, source: str, per_bin: int, wrong_deg: float, seed: int = 0) -> dict:
    found = {r["name"]: r["found"] == "1" for r in _read_csv(root / "priors" / "index.csv")}
    params = root / "params.csv"
    rows = _read_csv(params) if params.is_file() else []
    yaw = {r["name"]: abs(float(r["yaw_deg"])) for r in rows if r.get("yaw_deg", "") != ""}
    result: dict = {"folder": str(root), "images": len(found),
                    "found_rate": round(float(np.mean(list(found.values()))), 4) if found else None}
    if not yaw:
        return result
    rng = np.random.default_rng(seed)
    bins = []
    for lo, hi in itertools.pairwise(BINS):
        names = sorted(n for n, y in yaw.items() if lo <= y < hi and n in found)
        if not names:
            continue
        hits = [n for n in names if found[n]]
        chosen = rng.choice(hits, size=min(per_bin, len(hits)), replace=False) if hits and per_bin > 0 else []
        errors = [prior_error_deg(root, str(n), source) for n in chosen]
        bins.append({"yaw": f"{lo:g}–{min(hi, 90):g}", "images": len(names),
                     "missing": round(1.0 - len(hits) / len(names), 4),
                     "measured": len(errors),
                     "prior_error_deg": round(float(np.mean(errors)), 2) if errors else None,
                     "prior_error_p90_deg": round(float(np.percentile(errors, 90)), 2) if errors else None,
                     "wrong": round(float(np.mean(np.array(errors) > wrong_deg)), 4) if errors else None})
    result["by_yaw"] = bins
    result["beyond_45"] = round(float(np.mean([y >= 45 for y in yaw.values()])), 4)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", type=Path, nargs="+")
    parser.add_argument("--source", default="ict-fit", choices=("ict-fit", "ict-blend", "mediapipe-mesh"))
    parser.add_argument("--per-bin", type=int, default=40, help="found images per yaw bin whose prior error is measured")
    parser.add_argument("--wrong-deg", type=float, default=30.0, help="a prior this far from the truth counts as wrong")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results = []
    for root in args.folders:
        res = measure(root, args.source, args.per_bin, args.wrong_deg)
        results.append(res)
        print(f"{root}: {res['images']} images, MediaPipe found {100 * res['found_rate']:.1f} %"
              + (f", {100 * res['beyond_45']:.1f} % beyond |yaw| 45°" if "beyond_45" in res else ""))
        for b in res.get("by_yaw", []):
            err = (f"{b['prior_error_deg']:.1f}° (p90 {b['prior_error_p90_deg']:.1f}°)"
                   if b["prior_error_deg"] is not None else "—")
            wrong = f"{100 * b['wrong']:.0f} %" if b["wrong"] is not None else "—"
            print(f"  |yaw| {b['yaw']:>6}°: {b['images']:5d} images, missing {100 * b['missing']:5.1f} %, "
                  f"{args.source} error {err} (n={b['measured']}), wrong (> {args.wrong_deg:g}°) {wrong}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"source": args.source, "wrong_deg": args.wrong_deg, "sets": results},
                                        indent=1) + "\n")


if __name__ == "__main__":
    main()
