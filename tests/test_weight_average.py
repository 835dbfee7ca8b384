"""Weight snapshots along a run and their average (facenormals.training.average)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from facenormals.checkpoint import CheckpointError, load_checkpoint, read_header
from facenormals.training import average
from facenormals.training.config import config_from_dict
from facenormals.training.trainer import train
from tests.synthetic import write_ellipsoids

pytestmark = pytest.mark.slow  # a short real training run


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("average")
    write_ellipsoids(root / "train", 6, 64, "paired", seed=0)
    run_dir = root / "run"
    cfg = config_from_dict({
        "run_dir": str(run_dir), "seed": 1, "threads": 1, "log_every": 1, "val_every": 0, "snapshot_every": 2,
        "model": {"arch": "fast", "variant": "full"}, "data": {"train": [str(root / "train")]},
        "phases": [{"steps": 6, "size": 64, "batch_size": 2}],
    })
    train(cfg)
    return run_dir


def _float_state(path: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_checkpoint(path).state_dict().items() if v.is_floating_point()}


def test_the_run_writes_a_snapshot_every_n_steps(run):
    snapshots = sorted((run / "snapshots").glob("*.safetensors"))
    assert [p.name for p in snapshots] == ["step_000002.safetensors", "step_000004.safetensors", "step_000006.safetensors"]
    assert [read_header(p)["provenance"]["step"] for p in snapshots] == [2, 4, 6]
    first, last = _float_state(snapshots[0]), _float_state(snapshots[-1])
    assert any(not torch.equal(first[k], last[k]) for k in first)  # the weights moved between snapshots


def test_the_average_is_the_mean_of_every_tensor_and_records_its_inputs(run, tmp_path):
    snapshots = sorted((run / "snapshots").glob("*.safetensors"))
    out = tmp_path / "mean.safetensors"
    assert average.main([str(out), *map(str, snapshots)]) == 0
    states = [_float_state(p) for p in snapshots]
    mean = _float_state(out)
    for key, value in mean.items():
        expected = sum(s[key].double() for s in states) / len(states)
        torch.testing.assert_close(value.double(), expected, rtol=1e-6, atol=1e-7)
    provenance = read_header(out)["provenance"]["averaged"]
    assert [a["step"] for a in provenance] == [2, 4, 6]


def test_a_training_state_counts_like_the_snapshot_of_its_step(run, tmp_path):
    out = tmp_path / "from_last.safetensors"
    assert average.main([str(out), str(run / "last.pt")]) == 0  # last.pt holds the weights after step 6
    final = _float_state(run / "snapshots" / "step_000006.safetensors")
    for key, value in _float_state(out).items():
        torch.testing.assert_close(value, final[key])


def test_bad_inputs_are_refused_by_name(run, tmp_path):
    snapshot = run / "snapshots" / "step_000002.safetensors"
    with pytest.raises(SystemExit, match="written over"):
        average.main([str(snapshot), str(snapshot)])
    with pytest.raises(FileNotFoundError, match=r"missing\.safetensors"):
        average.main([str(tmp_path / "out.safetensors"), str(tmp_path / "missing.safetensors")])
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pt"):
        average.main([str(tmp_path / "out.safetensors"), str(junk)])
    other = tmp_path / "other.safetensors"
    from facenormals.checkpoint import save_checkpoint
    from facenormals.model import create_model

    save_checkpoint(create_model("fast", "full", prior="residual"), other)  # another config: 7 input channels
    with pytest.raises(ValueError, match=r"other\.safetensors"):
        average.main([str(tmp_path / "out.safetensors"), str(snapshot), str(other)])
    assert not (tmp_path / "out.safetensors").exists()


def test_a_weighted_mean_with_a_shipped_file_is_the_shipped_interpolation(run, tmp_path):
    """WiSE-FT: 0.25 of a shipped (inference-only, fp16) file + 0.75 of a snapshot, per tensor of the image→normal
    path; the result is inference-only itself and ships like a run's best."""
    from facenormals.checkpoint import _load_tensors
    from facenormals.training.ship import ship

    shipped = ship(run / "snapshots" / "step_000002.safetensors", tmp_path / "shipped.safetensors")
    snapshot = run / "snapshots" / "step_000006.safetensors"
    out = tmp_path / "wise.safetensors"
    assert average.main([str(out), str(shipped), str(snapshot), "--weights", "1", "3"]) == 0
    assert read_header(out)["parts"] == "image_to_normal"
    assert [a["weight"] for a in read_header(out)["provenance"]["averaged"]] == [0.25, 0.75]
    a, b, mixed = (_load_tensors(p) for p in (shipped, snapshot, out))
    assert set(mixed) == set(a)  # the image→normal path only
    for key, value in mixed.items():
        if value.is_floating_point():
            torch.testing.assert_close(value.double(), 0.25 * a[key].double() + 0.75 * b[key].double(),
                                       rtol=1e-5, atol=1e-6)
    assert read_header(ship(out, tmp_path / "reshipped.safetensors"))["parts"] == "image_to_normal"
    with pytest.raises(SystemExit, match="one weight"):
        average.main([str(tmp_path / "bad.safetensors"), str(shipped), str(snapshot), "--weights", "1"])
