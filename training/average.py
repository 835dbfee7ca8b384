"""Weight averaging along a training run (stochastic weight averaging): one checkpoint from several.

    python -m facenormals.training.average OUT.safetensors RUN/snapshots/step_*.safetensors [RUN/last.pt ...]

At a small batch (4 on these 2 cores) and a constant learning rate the weights wander around a good region;
their mean sits nearer its middle than any one of them, which usually generalises better than the last or
the best-on-validation snapshot. Inputs are full checkpoints (``RUN/best.safetensors``, ``RUN/snapshots/*``) or
training states (``RUN/last.pt``) of one model config; every floating-point tensor is averaged, BatchNorm's
running statistics included (the snapshots come from one trajectory, so their statistics agree closely), and
integer counters are taken from the last input. The output is a full checkpoint that ``facenormals eval`` and
``facenormals.training.ship`` take like a run's best, with the averaged files and steps in its provenance.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import torch

from facenormals.checkpoint import (
    CheckpointError,
    file_sha256,
    load_checkpoint,
    load_state_into,
    read_header,
    save_checkpoint,
)
from facenormals.model import CrossModalNet
from facenormals.training.config import config_from_dict

TRAINING_STATE_SUFFIX = ".pt"


def load_weights(path: Path) -> tuple[CrossModalNet, int | None]:
    """(the network, its step or None) from a full checkpoint or a training state (``last.pt``)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    if path.suffix != TRAINING_STATE_SUFFIX:
        return load_checkpoint(path), read_header(path).get("provenance", {}).get("step")
    from facenormals.training.trainer import build_model

    try:
        state = torch.load(path, map_location="cpu", weights_only=False)  # our own training state (trainer)
        model = build_model(config_from_dict(state["config"]), load_init=False)
    except (RuntimeError, KeyError, EOFError, ValueError, TypeError, pickle.UnpicklingError) as err:
        raise CheckpointError(f"{path}: not a facenormals training state ({err})") from err
    load_state_into(model, state["model"], path)
    return model.eval(), state.get("progress", {}).get("step")


def average_weights(paths: list[Path]) -> tuple[CrossModalNet, list[int | None]]:
    """The mean of the networks in ``paths`` (one config), and the step of each input."""
    if not paths:
        raise ValueError("average: no checkpoints given")
    first, step = load_weights(paths[0])
    steps = [step]
    latest = first.state_dict()
    total = {k: v.detach().double().clone() for k, v in latest.items() if v.is_floating_point()}
    for path in paths[1:]:
        model, step = load_weights(path)
        if model.cfg != first.cfg:
            raise ValueError(f"{path}: model config differs from {paths[0]}'s; only one run's weights can be averaged")
        latest = model.state_dict()
        for key in total:
            total[key] += latest[key].double()
        steps.append(step)
    merged = dict(latest)  # integer counters (BatchNorm's num_batches_tracked) from the last input
    merged.update({k: (v / len(paths)).float() for k, v in total.items()})
    first.load_state_dict(merged, strict=True)
    return first.eval(), steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m facenormals.training.average",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the averaged full checkpoint to write (.safetensors)")
    parser.add_argument("inputs", type=Path, nargs="+", help="full checkpoints or training states (last.pt) of one run")
    args = parser.parse_args(argv)
    if args.out.suffix != ".safetensors":
        raise SystemExit(f"average: output {args.out} must be a .safetensors file")
    if any(args.out.resolve() == p.resolve() for p in args.inputs):
        raise SystemExit(f"average: output {args.out} is one of the inputs; it would be written over")
    model, steps = average_weights(args.inputs)
    provenance = {"averaged": [{"file": str(path), "step": step, "sha256": file_sha256(path)}
                               for path, step in zip(args.inputs, steps, strict=True)]}
    save_checkpoint(model, args.out, provenance=provenance)
    print(f"wrote {args.out}: the mean of {len(args.inputs)} checkpoints (steps {steps})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
