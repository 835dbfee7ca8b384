"""Training state on disk: atomic, exact resume.

    RUN/last.pt              weights, optimiser, step, RNG states, best-so-far, elapsed time, config
    RUN/best.safetensors     the full network with the lowest validation error (facenormals.checkpoint format)
    RUN/snapshots/step_NNNNNN.safetensors   the full network every ``snapshot_every`` steps (weight averaging)

The data order needs no saved state beyond the step (see ``loaders``); the torch/numpy/python RNG
states are saved anyway, so anything else drawing random numbers resumes exactly too.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from facenormals.atomic import atomic_path
from facenormals.checkpoint import save_checkpoint
from facenormals.model import CrossModalNet

LAST = "last.pt"
BEST = "best.safetensors"
SNAPSHOTS = "snapshots"


@dataclass
class Progress:
    step: int = 0  # number of completed steps (batches)
    best_val_deg: float | None = None
    best_step: int | None = None
    elapsed_s: float = 0.0


def rng_states() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])


def save_state(run_dir: Path, model: CrossModalNet, optimizer: torch.optim.Optimizer, progress: Progress,
               config: dict) -> Path:
    path = Path(run_dir) / LAST
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "progress": vars(progress).copy(),
             "rng": rng_states(), "config": config}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_state(run_dir: Path, model: CrossModalNet, optimizer: torch.optim.Optimizer) -> Progress | None:
    """Restore the run in ``run_dir`` into ``model``/``optimizer``; None when there is nothing to resume."""
    path = Path(run_dir) / LAST
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)  # our own file, written by save_state
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, KeyError, EOFError, ValueError) as err:
        raise ValueError(f"{path}: cannot resume from this training state ({err})") from err
    restore_rng_states(state["rng"])
    return Progress(**state["progress"])


def save_best(run_dir: Path, model: CrossModalNet, progress: Progress, config: dict) -> Path:
    path = Path(run_dir) / BEST
    save_checkpoint(model, path, provenance={"step": progress.best_step, "val_mean_deg": progress.best_val_deg,
                                             "train_config": config})
    return path


def save_snapshot(run_dir: Path, model: CrossModalNet, step: int, config: dict) -> Path:
    """The weights after ``step`` steps, for averaging along the run (``facenormals.training.average``)."""
    path = Path(run_dir) / SNAPSHOTS / f"step_{step:06d}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, path, provenance={"step": step, "train_config": config})
    return path
