"""Run logging: CSV scalars, a PNG of the training curves, a PNG of sample predictions."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from facenormals.atomic import atomic_path
from facenormals.conventions import encode_normals

SCALARS = "scalars.csv"
FIELDS = ("step", "kind", "n2n", "i2n", "i2i", "samples_per_s", "val_mean_deg", "elapsed_s", "val_sets",
          "cons",  # cons: the optional two-view consistency term (training/consistency.py)
          "anchor",  # anchor: the optional real-photo anchor (training/anchor.py)
          "shading",  # shading: the optional shape-from-shading term (training/shading.py)
          "detail")  # detail: the optional high-pass term (training/detail_loss.py)


class ScalarLog:
    """Append-only CSV; on resume, rows from steps that will be redone are dropped first."""

    def __init__(self, run_dir: Path, start_step: int) -> None:
        self.path = Path(run_dir) / SCALARS
        rows = read_scalars(self.path) if self.path.is_file() else []
        # a validation row at the resume step scored exactly the weights the run resumes from: it stays
        kept = [r for r in rows if int(r["step"]) < start_step or (r["kind"] == "val" and int(r["step"]) == start_step)]
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, FIELDS)
            writer.writeheader()
            writer.writerows(kept)
        self._handle = open(self.path, "a", newline="")  # noqa: SIM115 - kept open for the run
        self._writer = csv.DictWriter(self._handle, FIELDS)

    def write(self, **row: object) -> None:
        self._writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in FIELDS})
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def read_scalars(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _series(rows: list[dict[str, str]], key: str, window: int = 1) -> tuple[np.ndarray, np.ndarray]:
    pairs = [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]
    if not pairs:
        return np.zeros(0), np.zeros(0)
    steps, values = (np.array(v) for v in zip(*pairs, strict=True))
    if window > 1 and len(values) >= window:
        values = np.convolve(values, np.ones(window) / window, mode="valid")
        steps = steps[window - 1:]
    return steps, values


def plot_curves(run_dir: Path, out_name: str = "curves.png") -> Path:
    """Training losses (smoothed) and validation error against steps."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_scalars(Path(run_dir) / SCALARS)
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key, label in (("n2n", "normal→normal (1-cos)"), ("i2n", "image→normal (1-cos)"), ("i2i", "image→image (L2)"),
                       ("cons", "two-view consistency (1-cos)"), ("anchor", "real-photo anchor (1-cos)"),
                       ("shading", "shape from shading (relative residual)"), ("detail", "detail, high-pass (L1)")):
        steps, values = _series(rows, key, window=20)
        if steps.size:
            ax_loss.plot(steps, values, label=label)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_title("training losses (moving average)")
    ax_loss.legend(fontsize=8)
    steps, values = _series(rows, "val_mean_deg")
    if steps.size:
        ax_val.plot(steps, values, "o-")
    ax_val.set_xlabel("step")
    ax_val.set_ylabel("mean angular error (°)")
    ax_val.set_title("validation")
    fig.tight_layout()
    path = Path(run_dir) / out_name
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
    return path


def normals_to_rgb(normals: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """H×W×3 normals → uint8 RGB picture ((n+1)/2), black outside ``mask``."""
    rgb = np.round(np.clip(encode_normals(normals), 0, 1) * 255).astype(np.uint8)
    if mask is not None:
        rgb[~mask.astype(bool)] = 0
    return rgb


def prediction_grid(rows: list[list[np.ndarray]]) -> np.ndarray:
    """Tile rows of equally sized uint8 RGB tiles (missing tiles black) into one image."""
    width = max(len(r) for r in rows)
    tile = rows[0][0].shape
    blank = np.zeros(tile, np.uint8)
    lines = [np.concatenate([*r, *([blank] * (width - len(r)))], axis=1) for r in rows]
    return np.concatenate(lines, axis=0)
