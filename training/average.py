"""Weight averaging along a training run (stochastic weight averaging): one checkpoint from several.

    python -m facenormals.training.average OUT.safetensors RUN/snapshots/step_*.safetensors [RUN/last.pt ...]
    python -m facenormals.training.average OUT.safetensors SHIPPED.safetensors AVERAGE.safetensors --weights 0.3 0.7

At a small batch (4 on these 2 cores) and a constant learning rate the weights wander around a good region;
their mean sits nearer its middle than any one of them, which usually generalises better than the last or
the best-on-validation snapshot. Inputs are full checkpoints (``RUN/best.safetensors``, ``RUN/snapshots/*``) or
training states (``RUN/last.pt``) of one model config; every floating-point tensor is averaged, BatchNorm's
running statistics included (the snapshots come from one trajectory, so their statistics agree closely), and
integer counters are taken from the last input. The output is a full checkpoint that ``facenormals eval`` and
``facenormals.training.ship`` take like a run's best, with the averaged files and steps in its provenance.

``--weights`` gives a weighted mean (normalised to sum 1). With a shipped, inference-only file among the inputs
(the image→normal path only) the output is inference-only too: that is the WiSE-FT interpolation between the
shipped weights and a run's (Wortsman et al. 2022: interpolating a fine-tuned model's weights towards the
model it started from keeps most of the gain on the new data and more of the old one's robustness).
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import torch

from facenormals.checkpoint import (
    CheckpointError,
    is_inference_only,
    load_network,
    load_state_into,
    read_header,
    save_checkpoint,
)
from facenormals.fileio import file_sha256
from facenormals.model import CrossModalNet
from facenormals.training.config import config_from_dict

TRAINING_STATE_SUFFIX = ".pt"


def load_weights(path: Path) -> tuple[CrossModalNet, int | None]:
    """(the network, its step or None) from a full checkpoint or a training state (``last.pt``)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    if path.suffix != TRAINING_STATE_SUFFIX:  # a shipped file's E_N and D_I are filled in, and dropped on writing
        return load_network(path), read_header(path).get("provenance", {}).get("step")
    from facenormals.training.trainer import build_model

    try:
        state = torch.load(path, map_location="cpu", weights_only=False)  # our own training state (trainer)
        model = build_model(config_from_dict(state["config"]), load_init=False)
    except (RuntimeError, KeyError, EOFError, ValueError, TypeError, pickle.UnpicklingError) as err:
        raise CheckpointError(f"{path}: not a facenormals training state ({err})") from err
    load_state_into(model, state["model"], path)
    return model.eval(), state.get("progress", {}).get("step")


def normalised_weights(paths: list[Path], weights: list[float] | None) -> list[float]:
    """Equal weights by default; given ones must be one per input, ≥ 0, not all 0; scaled to sum 1."""
    if weights is None:
        return [1.0 / len(paths)] * len(paths)
    if len(weights) != len(paths) or any(not w >= 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"average: --weights needs one weight ≥ 0 per input ({len(paths)}), not all 0; got {weights}")
    return [w / sum(weights) for w in weights]


def average_weights(paths: list[Path], weights: list[float] | None = None) -> tuple[CrossModalNet, list[int | None]]:
    """The (weighted) mean of the networks in ``paths`` (one config), and the step of each input."""
    if not paths:
        raise ValueError("average: no checkpoints given")
    shares = normalised_weights(paths, weights)
    first, step = load_weights(paths[0])
    steps = [step]
    latest = first.state_dict()
    total = {k: v.detach().double() * shares[0] for k, v in latest.items() if v.is_floating_point()}
    for path, share in zip(paths[1:], shares[1:], strict=True):
        model, step = load_weights(path)
        if model.cfg != first.cfg:
            raise ValueError(f"{path}: model config differs from {paths[0]}'s; only one model's weights can be averaged")
        latest = model.state_dict()
        for key in total:
            total[key] += latest[key].double() * share
        steps.append(step)
    merged = dict(latest)  # integer counters (BatchNorm's num_batches_tracked) from the last input
    merged.update({k: v.float() for k, v in total.items()})
    first.load_state_dict(merged, strict=True)
    return first.eval(), steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m facenormals.training.average",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the averaged full checkpoint to write (.safetensors)")
    parser.add_argument("inputs", type=Path, nargs="+",
                        help="full checkpoints, training states (last.pt) or shipped files of one model config")
    parser.add_argument("--weights", type=float, nargs="+", help="one relative weight per input (default: equal)")
    args = parser.parse_args(argv)
    if args.out.suffix != ".safetensors":
        raise SystemExit(f"average: output {args.out} must be a .safetensors file")
    if any(args.out.resolve() == p.resolve() for p in args.inputs):
        raise SystemExit(f"average: output {args.out} is one of the inputs; it would be written over")
    try:
        shares = normalised_weights(args.inputs, args.weights)
    except ValueError as err:
        raise SystemExit(str(err)) from err
    model, steps = average_weights(args.inputs, args.weights)
    # each input's own provenance travels along: a shipped file built from an average stays traceable to its run
    provenance = {"averaged": [{"file": str(path), "step": step, "sha256": file_sha256(path), "weight": share,
                                "provenance": read_header(path).get("provenance") if path.suffix != TRAINING_STATE_SUFFIX
                                else None}
                               for path, step, share in zip(args.inputs, steps, shares, strict=True)]}
    inference_only = any(path.suffix != TRAINING_STATE_SUFFIX and is_inference_only(path) for path in args.inputs)
    save_checkpoint(model, args.out, provenance=provenance, inference_only=inference_only)
    kind = "inference-only " if inference_only else ""
    print(f"wrote {args.out}: the {kind}weighted mean of {len(args.inputs)} checkpoints "
          f"(steps {steps}, weights {[round(w, 4) for w in shares]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
