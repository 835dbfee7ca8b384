"""torchrun + DistributedDataParallel with 2 gloo processes on CPU: replicas stay in sync, rank 0 writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from facenormals.checkpoint import load_checkpoint
from tests.synthetic import write_ellipsoids

pytestmark = pytest.mark.slow  # training runs in subprocesses


def test_two_gloo_processes_train_in_sync(tmp_path: Path):
    write_ellipsoids(tmp_path / "train", 8, 64, "paired", seed=0)
    write_ellipsoids(tmp_path / "train", 4, 64, "image-only", seed=1)
    write_ellipsoids(tmp_path / "train", 4, 64, "normal-only", seed=2)
    run_dir = tmp_path / "run"
    config = tmp_path / "ddp.json"
    config.write_text(json.dumps({
        "run_dir": str(run_dir), "seed": 0, "threads": 1, "log_every": 1, "val_every": 0,
        "model": {"arch": "fast", "variant": "full"},
        "data": {"train": [str(tmp_path / "train")]},
        "phases": [{"steps": 6, "size": 64, "batch_size": 4}],
    }))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "facenormals.training.cli", "--config", str(config)],
        env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    # the trainer checks at the end that both replicas hold identical parameters (it raises otherwise)
    assert result.stdout.count("done: 6 steps") == 1  # only rank 0 reports
    state = torch.load(run_dir / "last.pt", weights_only=False)
    assert state["progress"]["step"] == 6
    model = load_checkpoint(run_dir / "best.safetensors")
    assert not any(k.startswith("module.") for k in model.state_dict())
    rows = (run_dir / "scalars.csv").read_text().splitlines()
    assert len(rows) == 1 + 6  # header + one row per step, written once (rank 0)
    assert sorted(p.name for p in run_dir.iterdir() if not p.name.startswith(".")) == [
        "best.safetensors", "config.json", "curves.png", "last.pt", "scalars.csv"]
