"""Where a model's angular error comes from (``facenormals eval --diagnose``, issue 14).

Each image's error map is split, pixel by pixel, into three parts that add up to it exactly:

* **rotation**: what the best global rotation of the prediction removes. The rotation ``Q`` maximises
  ``Σ g·(Q p)`` over the mask (weighted Kabsch/Wahba, one SVD), i.e. the head-pose part of the error;
  ``rotation = err(p, g) − err(Q p, g)``.
* **low-frequency**: the error left between the rotation-corrected prediction and the ground truth once both are
  blurred (Gaussian σ = 4 px on a 256² crop, scaled with the crop, inside the mask only, then renormalised):
  ``low = err(blur(Q p), blur(g))``. The face's shape: nose, cheeks, brows, jaw.
* **detail**: the rest, ``err(Q p, g) − low``: wrinkles, lips, eyelids, pores.

Set figures are means over images of per-image means (the paper's protocol), so ``rotation + low + detail`` is the
set's mean error. Also reported: the mean angle of the removed rotation, the error of the blurred prediction
against the sharp truth (the model's own detail is worth ``blurred_prediction − mean``), and the error of the blurred
truth against itself (what a prediction with no detail at all loses). Every part is split by region: the *border
band* (mask pixels within 3σ of the mask's edge, where the face turns away and where the blur window leaves the
mask) and the *interior*; by face part (eyes, brows, mouth, nose and the rest, :mod:`facenormals.training.face_parts`)
when the set has stored landmarks (``facenormals data prior``); and, when the folder's ``params.csv`` has them, by
|yaw| bin and by the light's angle off the camera axis (``light_dir`` column).
"""

from __future__ import annotations

import contextlib
import csv
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from scipy.ndimage import distance_transform_edt

from facenormals.conventions import angular_error_deg, normalize
from facenormals.training.face_parts import PART_NAMES, REST, face_part_masks

SIGMA_PX_AT_256 = 4.0  # the low-pass of issue 14's measured decomposition
BAND_SIGMAS = 3.0  # border band width in σ: interior pixels see only mask pixels within 3σ of the blur
YAW_BINS = (0.0, 15.0, 30.0, 45.0, 60.0, 75.0, 90.0)  # |yaw| degrees; the last bin includes 90
LIGHT_BINS = (0.0, 25.0, 50.0, 75.0, 180.0)  # light angle off the camera axis, degrees
PARTS = ("rotation_deg", "low_freq_deg", "detail_deg")


def sigma_for(side: int) -> float:
    """The blur σ in pixels for a crop of ``side`` pixels (4 px at 256²)."""
    return SIGMA_PX_AT_256 * side / 256.0


def best_rotation(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The rotation ``Q`` (3×3, det +1) that maximises ``Σ target·(Q pred)`` over ``mask``."""
    p = normalize(pred[mask]).astype(np.float64)
    g = normalize(target[mask]).astype(np.float64)
    u, _, vt = np.linalg.svd(p.T @ g)  # H = Σ p gᵀ = U S Vᵀ → Q = V diag(1, 1, d) Uᵀ
    d = np.sign(np.linalg.det(vt.T @ u.T)) or 1.0
    return vt.T @ np.diag([1.0, 1.0, d]) @ u.T


def masked_blur(normals: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a normal map using only the pixels inside ``mask``, renormalised (0 outside the mask)."""
    weighted = np.where(mask[..., None], normalize(normals), 0.0).astype(np.float32)
    blurred = cv2.GaussianBlur(weighted, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
    out = normalize(blurred)
    out[~mask] = 0.0
    return out


def border_band(mask: np.ndarray, width: float) -> np.ndarray:
    """Mask pixels within ``width`` pixels of a pixel outside the mask (the image's edge counts as outside)."""
    padded = np.pad(mask, 1, constant_values=False)
    distance = distance_transform_edt(padded)[1:-1, 1:-1]
    return mask & (distance <= width)


@dataclass
class ImageSplit:
    """One image's decomposition: means over its mask and over its border band / interior."""

    mean_deg: float
    parts: dict[str, float]  # rotation_deg, low_freq_deg, detail_deg (sum = mean_deg)
    rotation_angle_deg: float  # angle of the removed rotation
    blurred_prediction_deg: float  # err(blur(p), g): no detail of the model's own
    blurred_truth_deg: float  # err(blur(g), g): no detail at all
    regions: dict[str, dict[str, float]]  # border / interior → mean_deg and the parts (absent when empty)
    region_pixels: dict[str, int]
    face_parts: dict[str, dict[str, float]] = field(default_factory=dict)  # eyes … rest, as regions (no landmarks: {})
    face_part_pixels: dict[str, int] = field(default_factory=dict)


def _region_means(maps: dict[str, np.ndarray], regions: dict[str, np.ndarray]) -> tuple[dict, dict[str, int]]:
    """Per region: the maps' means over its pixels (regions without pixels left out), and its pixel count."""
    means, pixels = {}, {}
    for name, region in regions.items():
        pixels[name] = int(region.sum())
        if pixels[name]:
            means[name] = {k: float(v[region].mean()) for k, v in maps.items()}
    return means, pixels


def decompose(pred: np.ndarray, target: np.ndarray, mask: np.ndarray, sigma: float | None = None,
              band: float | None = None, points: np.ndarray | None = None) -> ImageSplit:
    """Split the angular error of ``pred`` against ``target`` (H×W×3 each) over ``mask`` (H×W bool); ``points``:
    the crop's MediaPipe landmarks (crop points), for the split by face part."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError("empty mask: an image without facial pixels cannot be diagnosed")
    sigma = sigma_for(mask.shape[0]) if sigma is None else sigma
    band = BAND_SIGMAS * sigma if band is None else band
    pred, target = normalize(pred), normalize(target)
    q = best_rotation(pred, target, mask)
    rotated = normalize(pred @ q.T.astype(np.float32))
    blurred_target = masked_blur(target, mask, sigma)
    total = angular_error_deg(pred, target)
    rotation_free = angular_error_deg(rotated, target)
    low = angular_error_deg(masked_blur(rotated, mask, sigma), blurred_target)
    maps = {"mean_deg": total, "rotation_deg": total - rotation_free, "low_freq_deg": low,
            "detail_deg": rotation_free - low}
    edge = border_band(mask, band)
    regions, pixels = _region_means(maps, {"border": edge, "interior": mask & ~edge})
    parts, part_pixels = _region_means(maps, face_part_masks(points, mask)) if points is not None else ({}, {})
    angle = float(np.degrees(np.arccos(np.clip((np.trace(q) - 1.0) / 2.0, -1.0, 1.0))))
    return ImageSplit(mean_deg=float(total[mask].mean()), parts={k: float(maps[k][mask].mean()) for k in PARTS},
                      rotation_angle_deg=angle,
                      blurred_prediction_deg=float(angular_error_deg(masked_blur(pred, mask, sigma), target)[mask].mean()),
                      blurred_truth_deg=float(angular_error_deg(blurred_target, target)[mask].mean()),
                      regions=regions, region_pixels=pixels, face_parts=parts, face_part_pixels=part_pixels)


def read_params(folder: str | Path) -> dict[str, dict[str, float]]:
    """Per sample name: ``yaw_deg`` and ``light_angle_deg`` (off the camera axis) from the folder's ``params.csv``.

    Missing file, columns or cells give no entry (real photos have none); bad cells are skipped, not fatal.
    """
    path = Path(folder) / "params.csv"
    if not path.is_file():
        return {}
    out: dict[str, dict[str, float]] = {}
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            entry: dict[str, float] = {}
            with contextlib.suppress(KeyError, TypeError, ValueError):
                entry["yaw_deg"] = float(row["yaw_deg"])
            try:
                light = np.array([float(v) for v in row["light_dir"].split()])
                if light.shape == (3,) and np.linalg.norm(light) > 0:
                    entry["light_angle_deg"] = float(np.degrees(np.arccos(np.clip(light[2] / np.linalg.norm(light), -1, 1))))
            except (KeyError, AttributeError, ValueError):
                pass
            if entry and row.get("name"):
                out[row["name"]] = entry
    return out


def _bin_label(value: float, edges: Iterable[float]) -> str | None:
    edges = list(edges)
    for lo, hi in itertools.pairwise(edges):
        if lo <= value < hi or (hi == edges[-1] and value == hi):
            return f"{lo:g}-{hi:g}"
    return None


def _mean_of(splits: list[ImageSplit]) -> dict[str, float]:
    return {"n_images": len(splits), "mean_deg": float(np.mean([s.mean_deg for s in splits])),
            **{k: float(np.mean([s.parts[k] for s in splits])) for k in PARTS}}


def _pooled_regions(per_image: list[tuple[dict, dict[str, int]]], names: Iterable[str]) -> dict[str, dict[str, float]]:
    """Set figures per region from each image's (means, pixel counts) of one kind of region: images having it, its
    share of the pixels (of the images that have regions of this kind), means over those of their per-image means."""
    counted = [(means, pixels) for means, pixels in per_image if pixels]
    total_px = sum(sum(pixels.values()) for _, pixels in counted)
    out = {}
    for region in names:
        having = [means[region] for means, _ in counted if region in means]
        if having:
            out[region] = {"n_images": len(having),
                           "pixel_pct": 100.0 * sum(pixels[region] for _, pixels in counted) / total_px,
                           **{k: float(np.mean([r[k] for r in having])) for k in ("mean_deg", *PARTS)}}
    return out


@dataclass
class SetDiagnosis:
    """Collects :class:`ImageSplit` per image of one set; :meth:`result` is the set's JSON entry.

    ``points_of(name, shape)``: a sample's landmark crop points on its crop of ``shape`` (None: none stored), for the
    split by face part."""

    params: dict[str, dict[str, float]] = field(default_factory=dict)
    sigma: float | None = None
    band: float | None = None
    points_of: Callable[[str, tuple[int, ...]], np.ndarray | None] | None = None
    splits: dict[str, ImageSplit] = field(default_factory=dict)
    used_sigma: float = 0.0

    def add(self, name: str, pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> ImageSplit:
        points = self.points_of(name, mask.shape) if self.points_of is not None else None
        split = decompose(pred, target, mask, self.sigma, self.band, points)
        self.used_sigma = self.sigma if self.sigma is not None else sigma_for(mask.shape[0])
        self.splits[name] = split
        return split

    def result(self) -> dict:
        if not self.splits:
            raise ValueError("no images were diagnosed")
        splits = list(self.splits.values())
        sigma = self.used_sigma
        out: dict = {"n_images": len(splits), "sigma_px": round(sigma, 3),
                     "band_px": round(self.band if self.band is not None else BAND_SIGMAS * sigma, 3),
                     **{k: v for k, v in _mean_of(splits).items() if k != "n_images"},
                     "rotation_angle_deg": float(np.mean([s.rotation_angle_deg for s in splits])),
                     "blurred_prediction_deg": float(np.mean([s.blurred_prediction_deg for s in splits])),
                     "blurred_truth_deg": float(np.mean([s.blurred_truth_deg for s in splits])),
                     "regions": _pooled_regions([(s.regions, s.region_pixels) for s in splits], ("border", "interior"))}
        parts = _pooled_regions([(s.face_parts, s.face_part_pixels) for s in splits], (*PART_NAMES, REST))
        if parts:
            out["face_parts"] = parts
        for key, column, edges in (("by_yaw", "yaw_deg", YAW_BINS), ("by_light_angle", "light_angle_deg", LIGHT_BINS)):
            groups: dict[str, list[ImageSplit]] = {}
            for name, split in self.splits.items():
                value = self.params.get(name, {}).get(column)
                label = _bin_label(abs(value), edges) if value is not None else None
                if label is not None:
                    groups.setdefault(label, []).append(split)
            if groups:
                order = [_bin_label(lo, edges) for lo in edges[:-1]]
                out[key] = {label: _mean_of(groups[label]) for label in order if label in groups}
        out["per_image"] = {name: round(s.mean_deg, 4) for name, s in self.splits.items()}
        out["per_image_split"] = {name: {**{k: round(v, 4) for k, v in s.parts.items()},
                                         **{k: round(v, 3) for k, v in self.params.get(name, {}).items()}}
                                  for name, s in self.splits.items()}
        return out


def format_diagnosis(label: str, d: dict) -> list[str]:
    """Text lines of one set's diagnosis (the eval CLI prints them)."""
    lines = [f"  {label}: {d['mean_deg']:.2f}° = rotation {d['rotation_deg']:.2f} + low-frequency {d['low_freq_deg']:.2f}"
             f" + detail {d['detail_deg']:.2f} (σ = {d['sigma_px']:g} px; best rotation {d['rotation_angle_deg']:.2f}° on "
             f"average); blurred prediction {d['blurred_prediction_deg']:.2f}°, blurred truth {d['blurred_truth_deg']:.2f}°",
             f"    {'':<20}{'images':>7}{'px %':>7}{'mean':>8}{'rotation':>10}{'low-freq':>10}{'detail':>8}"]

    def row(name: str, e: dict, pct: str = "") -> str:
        return (f"    {name:<20}{e['n_images']:>7}{pct:>7}{e['mean_deg']:>8.2f}{e['rotation_deg']:>10.2f}"
                f"{e['low_freq_deg']:>10.2f}{e['detail_deg']:>8.2f}")

    for region, e in d["regions"].items():
        lines.append(row(f"{region} band" if region == "border" else region, e, f"{e['pixel_pct']:.0f}"))
    for part, e in d.get("face_parts", {}).items():
        lines.append(row(part, e, f"{e['pixel_pct']:.1f}"))
    for key, title in (("by_yaw", "|yaw| {}°"), ("by_light_angle", "light {}° off axis")):
        for bin_label, e in d.get(key, {}).items():
            lines.append(row(title.format(bin_label), e))
    return lines
