"""BatchNorm statistics of the image encoder: recomputed on a fixed draw of training crops (PreciseBN), or frozen.

    python -m facenormals.training.batchnorm MODEL.safetensors OUT.safetensors --config RUN_CONFIG.toml [--count 400]

Why (session 21): E_I's 20 BatchNorm layers are the network's only normalisation, and their running statistics are an
exponential average (momentum 0.1) over the last ~10 batches of 8 — ICT renders on paired steps, real photos on
image-only steps. Which kinds the last batches happened to be moves the shipped statistics, and with them the
validation sets, by more than a whole run's gain: recomputed on ICT renders alone, the session-20 weights score
−0.15 / −0.24 / −0.14° on the three ICT sets and +0.21° on the real scan; on the training mix, +0.14 / +0.10 / +0.13°
and −0.07°; on the training mix *augmented as in training* (what the exponential average estimates) within 0.04° of
the shipped statistics. So a run's last steps, and a weight average of snapshots (whose averaged statistics belong to
no one network: stochastic weight averaging recomputes them), are scored partly on statistical noise.

* :func:`recompute_statistics` gives E_I population statistics: a cumulative average over a fixed, seeded draw of
  training crops in the run's mix of batch kinds, augmented as the trainer augments them (``--config``).
* ``[model] freeze_batchnorm = true`` (trainer) keeps E_I's statistics fixed during training (the layers normalise
  with their running statistics, which no longer update; their scale and shift still train): the weights learn
  under the normalisation they will be shipped with, as detectors fine-tuned at small batches do.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facenormals.checkpoint import is_inference_only, load_network, save_checkpoint
from facenormals.fileio import check_model_file
from facenormals.training.config import TrainConfig, load_config
from facenormals.training.loaders import active_mix, collate, load_item, scan_by_kind
from facenormals.training.schedule import image_input

IMAGE_KINDS = ("paired", "image-only")  # the batch kinds whose crops pass through E_I


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d that stays in eval mode: it normalises with its running statistics and never updates them."""

    def train(self, mode: bool = True) -> FrozenBatchNorm2d:
        return super().train(False)


def batchnorm_layers(module: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


def freeze_batchnorm(module: nn.Module) -> int:
    """Turn every BatchNorm2d in ``module`` into a :class:`FrozenBatchNorm2d` in place (same parameters and state
    dict keys); returns how many."""
    layers = batchnorm_layers(module)
    for layer in layers:
        layer.__class__ = FrozenBatchNorm2d
        layer.eval()
    return len(layers)


def recompute_statistics(encoder: nn.Module, inputs: Iterable[torch.Tensor]) -> int:
    """Replace the running mean and variance of every BatchNorm2d in ``encoder`` by their cumulative average over
    ``inputs`` (batches of the encoder's input); returns the number of crops seen. The encoder ends in eval mode."""
    layers = batchnorm_layers(encoder)
    if not layers:
        raise ValueError("the encoder has no BatchNorm layers to recompute")
    momenta = [layer.momentum for layer in layers]
    encoder.eval()
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # None: a cumulative average over every batch, not an exponential one
        nn.BatchNorm2d.train(layer, True)  # train mode, also for a frozen layer: statistics are what we want
    seen = 0
    with torch.no_grad():
        for batch in inputs:
            encoder(batch)
            seen += batch.shape[0]
    for layer, momentum in zip(layers, momenta, strict=True):
        layer.momentum = momentum
        nn.BatchNorm2d.train(layer, False)
    if seen == 0:
        raise ValueError("no crops to recompute the BatchNorm statistics from")
    return seen


def training_mix_inputs(cfg: TrainConfig, count: int, seed: int = 0, batch_size: int = 8,
                        size: int = 256) -> Iterator[torch.Tensor]:
    """E_I inputs of ``count`` crops drawn (seeded) from the run's training folders in its mix of the batch kinds that
    carry images, each loaded and augmented as the trainer does (geometry, photometry, coarse-face jitter and pulls)."""
    groups = scan_by_kind(cfg.data.train, cfg.data.exclude)
    shares = {kind: w for kind, w in active_mix(cfg, groups).items() if kind in IMAGE_KINDS}
    if not shares:
        raise ValueError(f"{cfg.data.train}: no paired or image-only samples in the mix {cfg.data.mix}")
    rng = np.random.default_rng(seed)
    kinds = list(shares)
    weights = np.array([shares[k] for k in kinds]) / sum(shares.values())
    drawn = [groups[kinds[k]][rng.integers(len(groups[kinds[k]]))] for k in rng.choice(len(kinds), count, p=weights)]
    prior = cfg.model.input_prior
    for start in range(0, len(drawn), batch_size):
        items = [load_item(files, size, rng, cfg.augment, prior) for files in drawn[start:start + batch_size]]
        # only what E_I reads: paired and image-only crops carry different label keys
        yield image_input(collate([{k: item[k] for k in ("image", "prior") if k in item} for item in items]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m facenormals.training.batchnorm",
                                     description="Recompute E_I's BatchNorm statistics on the run's training mix.")
    parser.add_argument("model", type=Path, help="a checkpoint (full or inference-only)")
    parser.add_argument("out", type=Path, help="the checkpoint to write (same form as the input)")
    parser.add_argument("--config", type=Path, required=True, help="the run config whose data, mix and augmentation "
                        "define the draw")
    parser.add_argument("--count", type=int, default=400, help="crops to average over (default 400)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.count <= 0:
        parser.error(f"--count must be > 0, got {args.count}")
    source = check_model_file(args.model, "model")
    if args.out.resolve() == source.resolve():
        parser.error(f"{args.out}: would overwrite the input model; write to another file")
    cfg = load_config(args.config)
    net = load_network(source)
    if net.cfg.input_prior != cfg.model.input_prior:
        parser.error(f"{source} draws coarse face {net.cfg.input_prior!r}, the config {cfg.model.input_prior!r}")
    seen = recompute_statistics(net.image_encoder, training_mix_inputs(cfg, args.count, args.seed))
    save_checkpoint(net.eval(), args.out, inference_only=is_inference_only(source),
                    provenance={"batchnorm": {"from": str(source), "config": str(args.config), "crops": seen,
                                              "seed": args.seed}})
    print(f"wrote {args.out}: E_I's BatchNorm statistics over {seen} crops of {args.config}'s training mix")
    return 0


if __name__ == "__main__":
    sys.exit(main())
