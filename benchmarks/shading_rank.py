"""Issue 14: does the shape-from-shading loss (``training/shading.py``) rank normal maps the way their angular error
does? A loss that does not must not train.

Per image of the labelled validation renders, the loss of: the ground truth, the shipped model's prediction, the
``ict-blend`` coarse face alone, the ground truth blurred (σ 4 px), the ground truth's vectors rotated 10° about a
random axis (a global rotation: the SH light can follow it, so the loss should not see it), and the ground-truth map
turned 10° in the image plane (shape and image misaligned). On real photos (no labels): shipped vs coarse face.
All over the same pixels per image: the mask where the coarse face is drawn.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/shading_rank.py --max-images 60 \
        --out benchmarks/results/issue14-shading/shading_rank.json
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
import torch

from facenormals.checkpoint import load_image_to_normal
from facenormals.dataset import load_sample, scan_dataset
from facenormals.prior import stored_prior
from facenormals.training.anchor import masked_blur
from facenormals.training.shading import ShadingSection, shading_loss_per_image

SETS = {"val_james": "/work/datasets/val_james", "val_ict_v2": "/work/datasets/val_ict_v2",
        # ICT shapes wearing the James scan's photo texture (left out of training): real skin on a known shape
        "ict_james_texture": "/work/datasets/ict_paired_v5?albedo=james-transfer",
        "photos": "/work/datasets/photos_image_only"}
WEIGHTS = "facenormals/weights/fast-prior.safetensors"
SOURCE = "ict-blend"
VARIANTS = {  # name → the loss's settings measured
    "intensity-sh2": ShadingSection(weight=1.0),
    "log-gradient-sh2": ShadingSection(weight=1.0, domain="log-gradient"),
    "intensity-sh1": ShadingSection(weight=1.0, sh_order=1),
    "intensity-sh2-no-chroma": ShadingSection(weight=1.0, chroma_k=0.0),
    "intensity-sh2-no-trim": ShadingSection(weight=1.0, trim=0.0),
    "intensity-sh2-trim40": ShadingSection(weight=1.0, trim=0.4),
    "intensity-sh2-smooth1": ShadingSection(weight=1.0, smooth_px=1.0),
    "intensity-sh2-smooth2": ShadingSection(weight=1.0, smooth_px=2.0),
    "log-gradient-sh2-smooth2": ShadingSection(weight=1.0, domain="log-gradient", smooth_px=2.0),
}


def rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    t = math.radians(degrees)
    return np.eye(3) + math.sin(t) * k + (1 - math.cos(t)) * k @ k


def turned_in_plane(normals: np.ndarray, degrees: float) -> np.ndarray:
    """The map turned ``degrees`` counter-clockwise on screen about its centre, its vectors turned with it."""
    h, w = normals.shape[:2]
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), degrees, 1.0)
    warped = cv2.warpAffine(normals.astype(np.float32), matrix, (w, h), flags=cv2.INTER_LINEAR)
    return warped @ rotation(np.array([0.0, 0.0, 1.0]), degrees).T.astype(np.float32)


def blurred(normals: np.ndarray, region: np.ndarray, sigma: float) -> np.ndarray:
    values = torch.from_numpy(normals.transpose(2, 0, 1)[None].astype(np.float32))
    weight = torch.from_numpy(region[None, None].astype(np.float32))
    out = torch.nn.functional.normalize(masked_blur(values, weight, sigma), dim=1)
    return out[0].numpy().transpose(1, 2, 0)


def low_frequency_swapped(detail: np.ndarray, coarse: np.ndarray, region: np.ndarray, sigma: float) -> np.ndarray:
    """``detail``'s normals above σ with ``coarse``'s below it: the map's low-frequency shape swapped."""
    swapped = detail - blurred(detail, region, sigma) + blurred(coarse, region, sigma)
    return swapped / np.maximum(np.linalg.norm(swapped, axis=-1, keepdims=True), 1e-6)


def angular_error(pred: np.ndarray, truth: np.ndarray, region: np.ndarray) -> float:
    cos = np.clip((pred * truth).sum(-1) / np.maximum(np.linalg.norm(pred, axis=-1), 1e-6), -1, 1)
    return float(np.degrees(np.arccos(cos[region])).mean())


def candidates(sample, prior: np.ndarray, predicted: np.ndarray, region: np.ndarray,
               rng: np.random.Generator) -> dict[str, np.ndarray]:
    maps = {"shipped": predicted, "prior": prior}
    if sample.normals is not None:
        truth = sample.normals
        maps = {"gt": truth, **maps, "gt_blur4": blurred(truth, region, 4.0),
                "gt_rot10": truth @ rotation(rng.standard_normal(3), 10.0).T.astype(np.float32),
                "gt_turn10": turned_in_plane(truth, 10.0),
                # the real scan's drift is low-frequency (σ 4 px, `eval --diagnose`): can the loss see it?
                "gt_low_shipped": low_frequency_swapped(truth, predicted, region, 4.0),
                "shipped_low_gt": low_frequency_swapped(predicted, truth, region, 4.0),
                # what the anchor asks for: the network's detail on the coarse face's low frequencies
                "shipped_low_prior": low_frequency_swapped(predicted, prior, region, 4.0)}
    return maps


def measure(root: str, model, max_images: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    root, _, selection = root.partition("?")
    files = scan_dataset(root)
    if selection:  # COLUMN=VALUE of params.csv
        column, value = selection.split("=")
        with open(Path(root) / "params.csv", encoding="utf-8") as handle:
            chosen = {r["name"] for r in csv.DictReader(handle) if r.get(column) == value}
        files = [f for f in files if f.name in chosen]
    files = files[:max_images]
    for files_i in files:
        sample = load_sample(files_i)
        prior, coverage = stored_prior(root, sample.name, sample.image.shape, SOURCE)
        region = sample.mask & (coverage > 0.5)
        if region.sum() < 500:
            continue
        image = (sample.image.transpose(2, 0, 1)[None] / 255.0).astype(np.float32)  # uint8 RGB → [0, 1]
        net_in = np.concatenate([image, prior.transpose(2, 0, 1)[None], coverage[None, None]], axis=1)
        with torch.inference_mode():
            predicted = model(torch.from_numpy(net_in.astype(np.float32)))[0].numpy().transpose(1, 2, 0)
        maps = candidates(sample, prior.astype(np.float32), predicted, region, rng)
        if "gt_turn10" in maps:  # the turned map leaves the corners empty: score where it is defined everywhere
            region = region & (np.linalg.norm(maps["gt_turn10"], axis=-1) > 0.5)
        row = {"name": sample.name}
        if sample.normals is not None:
            row["deg"] = {k: angular_error(v, sample.normals, region) for k, v in maps.items()}
        normals = torch.from_numpy(np.stack([m.transpose(2, 0, 1) for m in maps.values()]).astype(np.float32))
        images = torch.from_numpy(np.repeat(image, len(maps), axis=0))
        masks = torch.from_numpy(np.repeat(region[None, None], len(maps), axis=0).astype(np.float32))
        row["loss"] = {}
        for variant, section in VARIANTS.items():
            losses, counted = shading_loss_per_image(normals, images, masks, section)
            row["loss"][variant] = {k: (float(v) if c else None) for k, v, c in zip(maps, losses, counted, strict=True)}
        rows.append(row)
        shown = row["loss"]["intensity-sh2"].items()
        print(sample.name, {k: v if v is None else round(v, 5) for k, v in shown}, flush=True)
    return rows


def share(rows: list[dict], variant: str, better: str, worse: str) -> float:
    pairs = [(r["loss"][variant][better], r["loss"][variant][worse]) for r in rows]
    pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
    return sum(a < b for a, b in pairs) / max(len(pairs), 1)


def agreement(rows: list[dict], variant: str, first: str, second: str) -> float:
    """Share of images where the loss orders ``first`` and ``second`` as their angular error does."""
    hits = [(r["loss"][variant][first] < r["loss"][variant][second]) == (r["deg"][first] < r["deg"][second])
            for r in rows if r["loss"][variant][first] is not None]
    return sum(hits) / max(len(hits), 1)


RANKED = ("gt", "shipped", "prior", "gt_blur4", "gt_turn10", "gt_low_shipped", "shipped_low_gt", "shipped_low_prior")
# gt_rot10 is left out of RANKED: invisible to the loss by design


def kendall_tau(rows: list[dict], variant: str) -> float:
    """Mean over images of Kendall's τ between the loss's and the angular error's order of the RANKED maps."""
    taus = []
    for r in rows:
        loss = [r["loss"][variant][k] for k in RANKED]
        if None in loss:
            continue
        deg = [r["deg"][k] for k in RANKED]
        pairs = [(i, j) for i in range(len(RANKED)) for j in range(i + 1, len(RANKED))]
        taus.append(sum(np.sign(loss[i] - loss[j]) * np.sign(deg[i] - deg[j]) for i, j in pairs) / len(pairs))
    return float(np.mean(taus)) if taus else float("nan")


def summarise(results: dict[str, list[dict]]) -> dict:
    summary = {}
    for set_name, rows in results.items():
        keys = list(rows[0]["loss"]["intensity-sh2"])
        entry = {"images": len(rows)}
        if "deg" in rows[0]:
            entry["median_deg"] = {k: float(np.median([r["deg"][k] for r in rows])) for k in keys}
        for variant in VARIANTS:
            values = {k: [r["loss"][variant][k] for r in rows if r["loss"][variant][k] is not None] for k in keys}
            stats = {"median": {k: float(np.median(v)) for k, v in values.items()}}
            if "gt" in keys:
                stats["gt<shipped"] = share(rows, variant, "gt", "shipped")
                stats["shipped<prior"] = share(rows, variant, "shipped", "prior")
                stats["gt<shipped<prior"] = sum(
                    r["loss"][variant]["gt"] < r["loss"][variant]["shipped"] < r["loss"][variant]["prior"]
                    for r in rows) / len(rows)
                stats["gt<blur4"] = share(rows, variant, "gt", "gt_blur4")
                stats["gt<turn10"] = share(rows, variant, "gt", "gt_turn10")
                stats["gt<rot10"] = share(rows, variant, "gt", "gt_rot10")
                stats["gt<gt_low_shipped"] = share(rows, variant, "gt", "gt_low_shipped")
                stats["shipped_low_gt<shipped"] = share(rows, variant, "shipped_low_gt", "shipped")
                stats["shipped_low_prior<shipped"] = share(rows, variant, "shipped_low_prior", "shipped")
                stats["agrees_with_deg(shipped,prior)"] = agreement(rows, variant, "shipped", "prior")
                stats["kendall_tau_vs_deg"] = kendall_tau(rows, variant)
            else:
                stats["shipped<prior"] = share(rows, variant, "shipped", "prior")
            entry[variant] = stats
        summary[set_name] = entry
    return summary


def markdown(summary: dict) -> str:
    """The summary as markdown tables: per set, per loss variant, median losses and ranking shares."""
    lines = []
    for set_name, entry in summary.items():
        lines.append(f"\n### {set_name} ({entry['images']} images)\n")
        if "median_deg" in entry:
            lines.append("median angular error (°): " + ", ".join(f"{k} {v:.2f}" for k, v in entry["median_deg"].items()))
            lines.append("")
        variants = [v for v in entry if v not in ("images", "median_deg")]
        keys = list(entry[variants[0]]["median"])
        shares = [k for k in entry[variants[0]] if k != "median"]
        lines.append("| variant | " + " | ".join(keys) + " | " + " | ".join(shares) + " |")
        lines.append("|---" * (1 + len(keys) + len(shares)) + "|")
        for variant in variants:
            stats = entry[variant]
            lines.append(f"| {variant} | " + " | ".join(f"{stats['median'][k]:.4f}" for k in keys) + " | "
                         + " | ".join(f"{stats[k]:.2f}" for k in shares) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-images", type=int, default=60)
    parser.add_argument("--sets", nargs="+", default=list(SETS))
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/issue14-shading/shading_rank.json"))
    parser.add_argument("--table", type=Path, help="print the markdown tables of an earlier --out JSON and stop")
    args = parser.parse_args()
    if args.table:
        print(markdown(summarise(json.loads(args.table.read_text(encoding="utf-8"))["per_image"])))
        return
    torch.set_num_threads(1)
    model = load_image_to_normal(WEIGHTS).eval()
    results = {name: measure(SETS[name], model, args.max_images, args.seed) for name in args.sets}
    summary = summarise(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "per_image": results}, separators=(",", ":")), encoding="utf-8")
    print(markdown(summary))


if __name__ == "__main__":
    main()
