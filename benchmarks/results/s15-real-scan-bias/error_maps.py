"""Mean per-pixel angular error maps of checkpoints on a validation set (the trainer's crops: stored prior, no
mirror), where the last is worse than the first, and the mean signed error of the normals' y (up) component.

    python error_maps.py val_james facenormals/weights/fast-prior.safetensors /work/runs/gpu1/mean.fp16.safetensors

Writes SET_error_maps.png here and prints each checkpoint's mean error and mean (prediction − truth) x/y/z.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import matplotlib
import numpy as np
import torch

from facenormals.checkpoint import load_network
from facenormals.training.loaders import fixed_samples, load_item
from facenormals.training.trainer import VAL_SIZE, image_input

matplotlib.use("Agg")
import matplotlib.pyplot as plt

MIN_COVER = 20  # pixels covered by fewer crops are left blank


@dataclass
class Maps:
    error: np.ndarray  # mean angular error (°) per pixel
    y_bias: np.ndarray  # mean (prediction − truth).y per pixel
    cover: np.ndarray  # crops covering each pixel
    mean_deg: float
    bias_xyz: np.ndarray


def error_maps(checkpoint: str, folder: str) -> Maps:
    model = load_network(checkpoint).float().eval()
    path = model.image_to_normal_path
    error, y_sum, cover = np.zeros((VAL_SIZE, VAL_SIZE)), np.zeros((VAL_SIZE, VAL_SIZE)), np.zeros((VAL_SIZE, VAL_SIZE))
    per_image, bias = [], []
    with torch.inference_mode():
        for files in fixed_samples((folder,), "paired", 10_000):
            item = load_item(files, VAL_SIZE, None, None, model.cfg.input_prior)
            batch = {k: torch.from_numpy(item[k][None]) for k in ("image", "prior") if k in item}
            pred = path(image_input(batch)).numpy()[0].transpose(1, 2, 0)
            truth, mask = item["normals"].transpose(1, 2, 0), item["mask"][0] > 0.5
            angle = np.degrees(np.arccos(np.clip((pred * truth).sum(-1), -1.0, 1.0)))
            error[mask] += angle[mask]
            y_sum[mask] += (pred - truth)[..., 1][mask]
            cover[mask] += 1
            per_image.append(angle[mask].mean())
            bias.append((pred - truth)[mask].mean(0))
    covered = np.maximum(cover, 1)
    return Maps(error / covered, y_sum / covered, cover, float(np.mean(per_image)), np.mean(bias, axis=0))


def plot(name: str, checkpoints: list[str], maps: list[Maps]) -> None:
    blank = maps[0].cover <= MIN_COVER
    _fig, axes = plt.subplots(1, len(maps) + 3, figsize=(4 * (len(maps) + 3), 4))
    for ax, m, checkpoint in zip(axes, maps, checkpoints, strict=False):
        ax.imshow(np.where(blank, np.nan, m.error), vmin=0, vmax=25)
        ax.set_title(checkpoint.split("/")[-1][:28])
    pairs = zip(axes[len(maps):len(maps) + 2], (maps[0], maps[-1]), (checkpoints[0], checkpoints[-1]), strict=True)
    for ax, m, checkpoint in pairs:
        shown = ax.imshow(np.where(blank, np.nan, m.y_bias), cmap="PuOr_r", vmin=-0.1, vmax=0.1)
        ax.set_title("mean (pred − truth).y " + checkpoint.split("/")[-1][:14])
    plt.colorbar(shown, ax=axes[len(maps) + 1])
    shown = axes[-1].imshow(np.where(blank, np.nan, maps[-1].error - maps[0].error), cmap="RdBu_r", vmin=-3, vmax=3)
    axes[-1].set_title("error: last − first (°)")
    plt.colorbar(shown, ax=axes[-1])
    plt.tight_layout()
    plt.savefig(f"{name}_error_maps.png", dpi=60)


def main(argv: list[str]) -> None:
    name, checkpoints = argv[0], argv[1:]
    torch.set_num_threads(1)
    maps = [error_maps(checkpoint, f"/work/datasets/{name}") for checkpoint in checkpoints]
    for checkpoint, m in zip(checkpoints, maps, strict=True):
        print(checkpoint, f"mean {m.mean_deg:.3f}", "mean(pred-gt) xyz", np.round(m.bias_xyz, 4))
    plot(name, checkpoints, maps)


if __name__ == "__main__":
    main(sys.argv[1:])
