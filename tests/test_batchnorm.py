"""E_I's BatchNorm statistics (training/batchnorm.py): recomputed as a population average, or frozen in training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from facenormals.checkpoint import save_checkpoint
from facenormals.model import create_model
from facenormals.training.batchnorm import (
    FrozenBatchNorm2d,
    freeze_batchnorm,
    main,
    recompute_statistics,
    training_mix_inputs,
)
from facenormals.training.config import config_from_dict
from tests.synthetic import write_run_folders


def _encoder() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())


def test_recomputed_statistics_are_the_population_average():
    encoder = _encoder()
    batches = [torch.randn(4, 3, 16, 16) * (1 + i) + i for i in range(3)]
    assert recompute_statistics(encoder, batches) == 12
    with torch.no_grad():
        features = [encoder[0](b) for b in batches]
    expected_mean = torch.stack([f.mean(dim=(0, 2, 3)) for f in features]).mean(0)  # equal batches: the pooled mean
    expected_var = torch.stack([f.var(dim=(0, 2, 3), unbiased=True) for f in features]).mean(0)
    bn = encoder[1]
    assert torch.allclose(bn.running_mean, expected_mean, atol=1e-5)
    assert torch.allclose(bn.running_var, expected_var, rtol=1e-4)
    assert not bn.training and bn.momentum == 0.1  # left ready for inference, its momentum restored


def test_recompute_needs_crops_and_layers():
    with pytest.raises(ValueError, match="no crops"):
        recompute_statistics(_encoder(), [])
    with pytest.raises(ValueError, match="no BatchNorm"):
        recompute_statistics(nn.Conv2d(3, 3, 1), [torch.zeros(1, 3, 4, 4)])


def test_frozen_layers_normalise_with_fixed_statistics_and_still_learn():
    encoder = _encoder()
    keys = set(encoder.state_dict())
    assert freeze_batchnorm(encoder) == 1
    encoder.train()
    bn = encoder[1]
    assert isinstance(bn, FrozenBatchNorm2d) and not bn.training and encoder[0].training
    before = bn.running_mean.clone()
    x = torch.randn(2, 3, 16, 16) * 5 + 3
    out = encoder(x)
    assert torch.equal(bn.running_mean, before)  # no update in train mode
    expected = torch.relu((encoder[0](x) - before[None, :, None, None])
                          / torch.sqrt(bn.running_var[None, :, None, None] + bn.eps)
                          * bn.weight[None, :, None, None] + bn.bias[None, :, None, None])
    assert torch.allclose(out, expected, atol=1e-5)  # running statistics, not the batch's
    out.sum().backward()
    assert bn.weight.grad is not None and encoder[0].weight.grad is not None
    assert set(encoder.state_dict()) == keys


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_run_folders(tmp_path_factory.mktemp("bn_data"), paired=6, image_only=6, normal_only=4, val=2)


def _config(data: Path, run_dir: Path, **model: object) -> dict:
    return {"run_dir": str(run_dir), "seed": 5, "threads": 1, "log_every": 1, "val_every": 0, "snapshot_every": 2,
            "model": {"arch": "lite", "variant": "full", **model},
            "data": {"train": [str(data / "train")], "val": [str(data / "val")], "val_max_images": 2},
            "phases": [{"steps": 4, "size": 64, "batch_size": 2, "lr": 1e-3}]}


def test_training_mix_draws_only_crops_with_images(data: Path, tmp_path: Path):
    cfg = config_from_dict(_config(data, tmp_path / "run"))
    batches = list(training_mix_inputs(cfg, 10, seed=1, batch_size=4, size=64))
    assert [b.shape for b in batches] == [(4, 3, 64, 64), (4, 3, 64, 64), (2, 3, 64, 64)]
    again = list(training_mix_inputs(cfg, 10, seed=1, batch_size=4, size=64))
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))  # seeded


def _bn_means(path: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(str(path)).items() if k.startswith("image_encoder.") and "running_mean" in k}


@pytest.mark.slow
def test_a_run_with_frozen_batchnorm_keeps_its_statistics(data: Path, tmp_path: Path):
    run_dir = tmp_path / "frozen"
    config = tmp_path / "frozen.json"
    config.write_text(json.dumps(_config(data, run_dir, freeze_batchnorm=True, batchnorm_crops=6)))
    done = subprocess.run([sys.executable, "-m", "facenormals.training.cli", "--config", str(config)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "recomputed over 6 crops" in done.stdout
    first, last = (_bn_means(run_dir / "snapshots" / f"step_{s:06d}.safetensors") for s in (2, 4))
    assert first and all(torch.equal(first[k], last[k]) for k in first)
    weights = [load_file(str(run_dir / "snapshots" / f"step_{s:06d}.safetensors"))["image_encoder.conv1.weight"]
               for s in (2, 4)]
    assert not torch.equal(*weights)  # the weights trained


def test_cli_writes_a_new_file_with_recomputed_statistics(data: Path, tmp_path: Path, capsys):
    torch.manual_seed(0)
    model = tmp_path / "model.safetensors"
    save_checkpoint(create_model("lite", "full"), model, inference_only=True)
    config = tmp_path / "run.json"
    config.write_text(json.dumps(_config(data, tmp_path / "run")))
    out = tmp_path / "recomputed.safetensors"
    assert main([str(model), str(out), "--config", str(config), "--count", "6"]) == 0
    assert "over 6 crops" in capsys.readouterr().out
    before, after = _bn_means(model), _bn_means(out)
    assert before.keys() == after.keys() and not any(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(SystemExit):
        main([str(model), str(model), "--config", str(config)])  # never over its input


@pytest.mark.slow
def test_a_warm_up_phase_trains_only_the_parts_it_names(data: Path, tmp_path: Path, capsys):
    """``train_only``: a phase that warms up the decoder an inference-only init leaves random holds the rest as the
    init has it; the next phase trains everything; a run whose first phase trains everything is warned."""
    torch.manual_seed(0)
    init = tmp_path / "shipped.safetensors"
    save_checkpoint(create_model("lite", "full"), init, inference_only=True)
    config = {**_config(data, tmp_path / "warm", init=str(init), freeze_batchnorm=True, batchnorm_crops=0),
              "snapshot_every": 1}
    config["data"]["mix"] = {"image-only": 1.0}  # every step reaches D_I
    config["phases"] = [{"steps": 2, "size": 64, "batch_size": 2, "lr": 1e-3, "train_only": ["image_decoder"]},
                        {"steps": 2, "size": 64, "batch_size": 2, "lr": 1e-3}]
    path = tmp_path / "warm.json"
    path.write_text(json.dumps(config))
    done = subprocess.run([sys.executable, "-m", "facenormals.training.cli", "--config", str(path)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "fresh ['image_decoder']" in done.stdout and "warning: the first phase" not in done.stdout
    shipped = load_file(str(init))
    first, warm, later = (load_file(str(tmp_path / "warm" / "snapshots" / f"step_{s:06d}.safetensors"))
                          for s in (1, 2, 4))
    held = [k for k in shipped if k.startswith(("image_encoder.", "normal_decoder.", "skip_connections."))
            and "num_batches" not in k]
    assert held and all(torch.equal(warm[k].float(), shipped[k].float()) for k in held)  # the path as shipped
    decoder = [k for k in warm if k.startswith("image_decoder.") and k.endswith("weight")]
    assert decoder and any(not torch.equal(first[k], warm[k]) for k in decoder)  # the warm-up trains D_I
    assert not torch.equal(warm["image_encoder.conv1.weight"], later["image_encoder.conv1.weight"])  # then all train

    from facenormals.training.trainer import build_model

    with pytest.raises(ValueError, match=r"phases\[0\]\.train_only: 'decoder' is not a part.*image_decoder"):
        build_model(config_from_dict({**config, "phases": [{"steps": 1, "train_only": ["decoder"]}]}))
    capsys.readouterr()
    build_model(config_from_dict({**config, "phases": config["phases"][1:]}))
    assert "warning: the first phase trains more than the fresh ['image_decoder']" in capsys.readouterr().out
