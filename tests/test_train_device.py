"""The trainer's ``device`` and ``max_minutes`` settings: the CPU path unchanged, CUDA asked for without CUDA a clear
error, a run out of time stops cleanly (validated, checkpointed) and a rerun continues to the same weights."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from facenormals.training.config import TrainConfig, config_from_dict
from facenormals.training.device import resolve_device, to_device
from facenormals.training.trainer import train
from tests.synthetic import write_run_folders

STEPS = 4


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_run_folders(tmp_path_factory.mktemp("data"), paired=8, image_only=4, normal_only=0, val=2)


def _config(data: Path, run_dir: Path, **overrides: object) -> TrainConfig:
    cfg = config_from_dict({
        "run_dir": str(run_dir), "seed": 5, "threads": 1, "log_every": 1, "val_every": 0,
        "checkpoint_every_s": 1e9, "precision": "bf16",
        "model": {"arch": "fast", "variant": "full"},
        "data": {"train": [str(data / "train")], "val": [str(data / "val")], "val_max_images": 2},
        "phases": [{"steps": STEPS, "size": 64, "batch_size": 2}],
    })
    return replace(cfg, **overrides)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "last.pt", weights_only=False)["model"]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key, value in wa.items():
        assert torch.equal(value, wb[key]), key


def test_config_default_device_is_cpu_and_unknown_values_fail() -> None:
    assert TrainConfig().device == "cpu" and TrainConfig().max_minutes == 0.0
    with pytest.raises(ValueError, match="device 'tpu' unknown"):
        config_from_dict({"device": "tpu"})
    with pytest.raises(ValueError, match="max_minutes must be ≥ 0"):
        config_from_dict({"max_minutes": -1})


def test_cpu_batches_are_left_where_the_loader_made_them() -> None:
    batch = {"image": torch.zeros(1, 3, 4, 4)}
    assert to_device(batch, resolve_device("cpu")) is batch


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_requested_without_cuda_is_a_clear_error_before_anything_is_written(data: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match=r'device = "cuda" but torch .* sees no CUDA GPU'):
        train(_config(data, run_dir, device="cuda"))
    assert not run_dir.exists()
    assert resolve_device("auto").type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="'auto' picks CUDA here")
def test_auto_without_cuda_trains_exactly_like_cpu(data: Path, tmp_path: Path) -> None:
    train(_config(data, tmp_path / "cpu", device="cpu"))
    train(_config(data, tmp_path / "auto", device="auto"))
    _assert_same_weights(tmp_path / "cpu", tmp_path / "auto")


def test_out_of_time_stops_cleanly_and_a_rerun_continues_to_the_same_weights(data: Path, tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    assert train(_config(data, straight)).steps == STEPS

    timed = tmp_path / "timed"
    # a budget already spent when the loop starts: one step, then validate, checkpoint and return
    first = train(_config(data, timed, max_minutes=1e-6))
    assert first.steps == 1
    assert (timed / "last.pt").is_file() and (timed / "best.safetensors").is_file()
    assert first.best_val_deg is not None  # the stop validated, as the end of a run does
    rest = train(_config(data, timed))  # the rerun, without the budget
    assert rest.steps == STEPS
    _assert_same_weights(straight, timed)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_run_trains_in_bf16_and_writes_cpu_readable_checkpoints(data: Path, tmp_path: Path) -> None:
    from facenormals.checkpoint import load_checkpoint

    result = train(replace(_config(data, tmp_path / "cuda", device="cuda"),
                           data=replace(_config(data, tmp_path).data, num_workers=2)))
    assert result.steps == STEPS and result.best_val_deg is not None
    assert load_checkpoint(tmp_path / "cuda" / "best.safetensors").cfg.arch == "fast"
    assert all(t.device.type == "cuda" for t in _weights(tmp_path / "cuda").values())
