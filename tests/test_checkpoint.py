from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from facenormals.checkpoint import CheckpointError, load_checkpoint, load_image_to_normal, read_header, save_checkpoint
from facenormals.model import create_model


def test_round_trip(tmp_path: Path):
    torch.manual_seed(0)
    model = create_model("fast", "no-skip").eval()
    path = tmp_path / "m.safetensors"
    save_checkpoint(model, path, provenance={"note": "test"})
    back = load_checkpoint(path)
    assert back.cfg == model.cfg
    assert read_header(path)["provenance"] == {"note": "test"}
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.image_to_normal(image), back.image_to_normal(image))
        assert torch.allclose(model.image_to_normal(image), load_image_to_normal(path)(image))


def test_half_precision_round_trip(tmp_path: Path):
    torch.manual_seed(0)
    model = create_model("fast").eval()
    save_checkpoint(model, tmp_path / "h.safetensors", half=True)
    back = load_checkpoint(tmp_path / "h.safetensors")
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        cos = (model.image_to_normal(image) * back.image_to_normal(image)).sum(1)
    assert cos.min() > 0.999


def test_corrupt_foreign_and_mismatched(tmp_path: Path):
    model = create_model("fast")
    good = tmp_path / "good.safetensors"
    save_checkpoint(model, good)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(corrupt)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(garbage)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not a facenormals checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")
    # weights of one width under the config of another
    tensors = {k: v.contiguous() for k, v in create_model("paper").state_dict().items()}
    import json

    from facenormals.checkpoint import METADATA_KEY
    header = json.loads(__import__("safetensors").safe_open(str(good), "pt").metadata()[METADATA_KEY])
    mismatched = tmp_path / "mismatched.safetensors"
    save_file(tensors, str(mismatched), metadata={METADATA_KEY: json.dumps(header)})
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_checkpoint(mismatched)


def test_inference_only_checkpoint(tmp_path: Path):
    torch.manual_seed(0)
    model = create_model("fast").eval()
    path = tmp_path / "infer.safetensors"
    save_checkpoint(model, path, half=True, inference_only=True)
    full = tmp_path / "full.safetensors"
    save_checkpoint(model, full, half=True)
    assert path.stat().st_size < 0.6 * full.stat().st_size
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        cos = (model.image_to_normal(image) * load_image_to_normal(path)(image)).sum(1)
    assert cos.min() > 0.999
    with pytest.raises(CheckpointError, match="inference-only"):
        load_checkpoint(path)
