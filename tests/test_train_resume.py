"""Training runs end to end, and a run killed with SIGKILL mid-epoch resumes to the same weights."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from facenormals.checkpoint import load_checkpoint
from facenormals.training.augment import geometric_matrix, warp_normals
from facenormals.training.config import AugmentSection, config_from_dict, load_config
from facenormals.training.loaders import BatchPlan, scan_by_kind
from tests.synthetic import ellipsoid, write_run_folders

pytestmark = pytest.mark.slow  # training runs in subprocesses

STEPS = 14


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_run_folders(tmp_path_factory.mktemp("data"), paired=10, image_only=6, normal_only=6, val=4)


def _config(data: Path, run_dir: Path) -> Path:
    cfg = {
        "run_dir": str(run_dir), "seed": 3, "threads": 1, "log_every": 1, "val_every": 7,
        "checkpoint_every_steps": 3, "checkpoint_every_s": 1e9,
        "model": {"arch": "fast", "variant": "full"},
        "data": {"train": [str(data / "train")], "val": [str(data / "val")], "val_max_images": 2},
        # 10 paired samples / batch 4: several epochs of each kind, so the kill lands mid-epoch
        "phases": [{"steps": 8, "size": 64, "batch_size": 4}, {"steps": STEPS - 8, "size": 64, "batch_size": 2, "lr": 5e-5}],
    }
    path = run_dir.parent / f"{run_dir.name}.json"
    path.write_text(json.dumps(cfg))
    return path


def _train_cmd(config: Path) -> list[str]:
    return [sys.executable, "-m", "facenormals.training.cli", "--config", str(config)]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _state_step(run_dir: Path) -> int:
    path = run_dir / "last.pt"
    if not path.is_file():
        return -1
    try:
        return torch.load(path, weights_only=False)["progress"]["step"]
    except Exception:  # being replaced right now
        return -1


def test_sigkill_mid_epoch_resumes_to_identical_weights(data: Path, tmp_path: Path):
    straight = tmp_path / "straight"
    subprocess.run(_train_cmd(_config(data, straight)), check=True, env=_env(), capture_output=True, timeout=300)

    killed = tmp_path / "killed"
    config = _config(data, killed)
    process = subprocess.Popen(_train_cmd(config), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while _state_step(killed) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "the run finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = _state_step(killed)
    assert 3 <= killed_at < STEPS
    subprocess.run(_train_cmd(config), check=True, env=_env(), capture_output=True, timeout=300)

    a, b = torch.load(straight / "last.pt", weights_only=False), torch.load(killed / "last.pt", weights_only=False)
    assert a["progress"]["step"] == b["progress"]["step"] == STEPS
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for key, state in a["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg"], b["optimizer"]["state"][key]["exp_avg"])
    assert a["progress"]["best_val_deg"] == b["progress"]["best_val_deg"]
    # the last phase's own learning rate was in force at the end (and survives the resume)
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"] == 5e-5
    # the run records its full config, and keeps the best model by validation error
    recorded = json.loads((killed / "config.json").read_text())
    assert recorded["optim"]["lr"] == 1e-4 and recorded["phases"][1]["batch_size"] == 2
    best = load_checkpoint(killed / "best.safetensors")
    assert best.cfg.arch == "fast"
    assert (killed / "curves.png").is_file() and (killed / "scalars.csv").is_file()


def test_batch_plan_is_a_function_of_the_step(data: Path, tmp_path: Path):
    cfg = load_config(_config(data, tmp_path / "plan"))
    groups = scan_by_kind(cfg.data.train)
    full = list(BatchPlan(cfg, groups).iterate(0))
    tail = list(BatchPlan(cfg, groups).iterate(5))
    assert full[5:] == tail
    assert {kind for _, kind, _ in full} == {"paired", "image-only", "normal-only"}
    paired = [k.index for _, kind, keys in full if kind == "paired" for k in keys]
    assert sorted(paired[:10]) == list(range(10))  # an epoch visits every sample once


def test_config_rejects_unknown_keys_and_values(tmp_path: Path):
    with pytest.raises(ValueError, match="did you mean 'batch_size'"):
        config_from_dict({"phases": [{"steps": 1, "batchsize": 4}]})
    with pytest.raises(ValueError, match="phase lr"):
        config_from_dict({"phases": [{"steps": 1, "lr": 0.0}]})
    with pytest.raises(ValueError, match=r"model\.variant"):
        config_from_dict({"model": {"variant": "huge"}})
    with pytest.raises(ValueError, match="mix"):
        config_from_dict({"data": {"mix": {"video": 1.0}}})
    bad = tmp_path / "bad.toml"
    bad.write_text("seed = [")
    with pytest.raises(ValueError, match=r"bad\.toml"):
        load_config(bad)


def test_example_configs_parse():
    for path in sorted((Path(__file__).resolve().parents[1] / "training" / "configs").glob("*.toml")):
        assert load_config(path).total_steps > 0, path


def test_flip_and_rotation_transform_normals_with_the_image():
    normals, mask = ellipsoid(64, np.random.default_rng(0))
    aug = AugmentSection(flip=1.0, rotate_deg=0.0, scale=0.0, shift=0.0)
    flipped, fmask = warp_normals(normals, mask, geometric_matrix(64, 64, np.random.default_rng(0), aug), 64)
    expected = normals[:, ::-1] * np.array([-1, 1, 1], np.float32)
    inside = fmask & mask[:, ::-1]
    assert np.abs(flipped[inside] - expected[inside]).max() < 1e-4
    # a 90° rotation (image counter-clockwise on screen) turns a right-facing normal into an up-facing one
    matrix = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 63.0]])
    point = np.zeros((64, 64, 3), np.float32)
    point[...] = [1.0, 0.0, 0.0]
    rotated, _ = warp_normals(point, np.ones((64, 64), bool), matrix, 64)
    assert np.allclose(rotated[32, 32], [0.0, 1.0, 0.0], atol=1e-5)


def test_excluded_samples_never_reach_training(data: Path, tmp_path: Path):
    train = tmp_path / "train"
    shutil.copytree(data / "train", train)
    names = sorted(p.stem for p in (train / "masks").iterdir())
    worn = set(names[::4])  # every fourth sample "wore the James texture"
    rows = "".join(f"{name},{'james-transfer' if name in worn else 'procedural'}\n" for name in names)
    (train / "params.csv").write_text("name,albedo\n" + rows)
    cfg = config_from_dict({"data": {"train": [str(train)], "exclude": {"albedo": ["james-transfer"]}},
                            "phases": [{"steps": 1}]})
    kept = {f.name for files in scan_by_kind(cfg.data.train, cfg.data.exclude).values() for f in files}
    assert kept == set(names) - worn and worn
    everything = {f.name for files in scan_by_kind(cfg.data.train).values() for f in files}
    assert everything == set(names)
    with pytest.raises(ValueError, match=r"data\.exclude\.albedo"):
        config_from_dict({"data": {"exclude": {"albedo": "james-transfer"}}, "phases": [{"steps": 1}]})
