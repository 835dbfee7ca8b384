"""The "lite" network (issue 15): the encoder width multiplier, the decoder without a full-resolution stage, its cost."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facenormals.checkpoint import load_checkpoint, read_config, save_checkpoint
from facenormals.complexity import count_gmac
from facenormals.model import create_model, with_prior
from facenormals.model_config import WIDTHS
from facenormals.resnet import RESNET18_CHS, ResNet18Encoder, scaled_chs

SIZE = 64
SHIPPED = Path(__file__).resolve().parents[1] / "facenormals" / "weights" / "fast-prior.safetensors"


def test_width_one_is_the_resnet18_layout_bit_for_bit():
    """Width 1 builds the same modules, shapes and (same seed) the same initial weights as before the multiplier."""
    assert scaled_chs(1.0) == RESNET18_CHS == (64, 64, 128, 256, 512)
    torch.manual_seed(3)
    default = ResNet18Encoder(7, full_res_chs=16).state_dict()
    torch.manual_seed(3)
    explicit = ResNet18Encoder(7, full_res_chs=16, width=1.0).state_dict()
    assert list(default) == list(explicit)
    assert all(torch.equal(default[k], explicit[k]) for k in default)
    assert default["layer4.1.conv2.weight"].shape == (512, 512, 3, 3)


def test_shipped_checkpoint_still_loads_exactly():
    """The shipped fast-prior weights load strictly into the (width 1) model and come back unchanged."""
    from safetensors.torch import load_file

    from facenormals.checkpoint import load_image_to_normal

    model = load_image_to_normal(SHIPPED)
    stored = load_file(str(SHIPPED))
    state = model.state_dict()
    assert read_config(SHIPPED).arch == "fast"
    assert all(torch.equal(state[k], v.to(state[k].dtype)) for k, v in stored.items())


def test_half_width_encoder_channels():
    encoder = ResNet18Encoder(7, width=0.5)
    assert [info.num_chs for info in encoder.feature_info] == [32, 32, 64, 128, 256]
    with torch.no_grad():
        features = encoder(torch.rand(1, 7, SIZE, SIZE))
    assert [f.shape[1] for f in features] == [32, 32, 64, 128, 256]
    assert [f.shape[-1] for f in features] == [SIZE // 2, SIZE // 4, SIZE // 8, SIZE // 16, SIZE // 32]
    with pytest.raises(ValueError, match="width multiplier"):
        ResNet18Encoder(3, width=0.0)


def test_lite_has_nothing_at_full_resolution_and_is_a_prior_drop_in():
    """7-channel residual-prior input, unit normals at full resolution, starts as the prior (like fast-prior)."""
    torch.manual_seed(0)
    model = create_model("lite", "full", prior="residual").eval()
    assert model.image_encoder.full_res is None and len(model.normal_decoder.blocks) == 4
    assert model.cfg.in_chans == 7
    g = torch.Generator().manual_seed(1)
    prior = torch.randn(2, 3, SIZE, SIZE, generator=g)
    prior[:, 2] = prior[:, 2].abs() + 0.2
    prior = torch.nn.functional.normalize(prior, dim=1)
    x = with_prior(torch.rand(2, 3, SIZE, SIZE, generator=g), prior, torch.ones(2, 1, SIZE, SIZE))
    with torch.no_grad():
        out = model.image_to_normal(x)
        nn_out = model.normal_to_normal(prior)
        image_out = model.image_to_image(x)
    assert out.shape == (2, 3, SIZE, SIZE) and torch.allclose(out.norm(dim=1), torch.ones(2, SIZE, SIZE), atol=1e-4)
    cos = torch.nn.functional.cosine_similarity(out, prior, dim=1)
    assert cos.min() > 0.9999  # zero-initialised last layer: exactly the prior's frame
    assert nn_out.shape == (2, 3, SIZE, SIZE) and image_out.shape == (2, 3, SIZE, SIZE)


def test_lite_trains_through_every_part_of_the_image_path():
    torch.manual_seed(0)
    model = create_model("lite", "full", prior="residual").train()
    with torch.no_grad():  # move the last layer off zero so gradients reach the encoder
        model.normal_decoder.last.weight.normal_(0, 0.1)
    model.image_to_normal(torch.rand(2, 7, SIZE, SIZE)).sum().backward()
    for name in ("image_encoder.conv1.weight", "skip_connections.convs.3.0.weight", "normal_decoder.blocks.3.0.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_lite_costs_under_a_quarter_of_fast():
    image = torch.rand(1, 7, 256, 256)
    fast = create_model("fast", prior="residual").eval().image_to_normal_path
    lite = create_model("lite", prior="residual").eval().image_to_normal_path
    fast_gmac, lite_gmac = count_gmac(lambda: fast(image)), count_gmac(lambda: lite(image))
    assert lite_gmac <= fast_gmac / 4
    assert WIDTHS["lite"].encoder_width == 0.5


def test_lite_checkpoint_round_trip_and_onnx_parity(tmp_path):
    """Saved, reloaded and exported with the project's exporter: ONNX Runtime matches torch."""
    import onnxruntime as ort

    from facenormals.export.onnx_export import build_onnx

    torch.manual_seed(0)
    model = create_model("lite", "full", prior="residual").eval()
    with torch.no_grad():
        model.normal_decoder.last.weight.normal_(0, 0.1)
    path = tmp_path / "lite.safetensors"
    save_checkpoint(model, path)
    reloaded = load_checkpoint(path)
    assert reloaded.cfg.arch == "lite"
    onnx_model, _ = build_onnx(path, size=SIZE)
    meta = {p.key: p.value for p in onnx_model.metadata_props}
    assert meta["arch"] == "lite"
    x = torch.rand(1, 7, SIZE, SIZE)
    with torch.no_grad():
        ours = model.image_to_normal(x).numpy()
    session = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    theirs = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert np.abs(ours - theirs).max() < 1e-4


def _trained_looking(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights everywhere, BN statistics and last layers included (no zero-initialised part left)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                noise = torch.rand(tensor.shape, generator=g)
                tensor.copy_(0.5 + noise if name.endswith(("running_var", "bn1.weight", "bn2.weight")) else
                             0.1 * (noise - 0.5))
    return model.eval()


def test_prune_at_full_width_reproduces_the_teacher_exactly():
    from facenormals.prune import prune_into

    teacher = _trained_looking(create_model("fast", "full", prior="residual"), 0)
    student = prune_into(teacher, create_model("fast", "full", prior="residual")).eval()
    x = torch.rand(2, 7, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(teacher.image_to_normal(x), student.image_to_normal(x))
        assert torch.equal(teacher.normal_to_normal(x[:, 3:6]), student.normal_to_normal(x[:, 3:6]))
        assert torch.equal(teacher.image_to_image(x), student.image_to_image(x))


def test_prune_keeps_the_strongest_channels_of_each_residual_stream():
    """Make 32 chosen channels of stage 1's stream strong in every conv writing it: lite keeps exactly those."""
    from facenormals.prune import prune_into

    teacher = _trained_looking(create_model("fast", "full", prior="residual"), 1)
    chosen = torch.sort(torch.randperm(64, generator=torch.Generator().manual_seed(5))[:32]).values
    with torch.no_grad():
        enc = teacher.image_encoder
        for bn in (enc.bn1, enc.layer1[0].bn2, enc.layer1[1].bn2):
            bn.weight[chosen] *= 100.0
    student = prune_into(teacher, create_model("lite", "full", prior="residual")).eval()
    enc_s = student.image_encoder
    assert torch.equal(enc_s.conv1.weight, enc.conv1.weight[chosen])
    assert torch.equal(enc_s.bn1.weight, enc.bn1.weight[chosen])
    assert torch.equal(enc_s.layer1[1].bn2.running_var, enc.layer1[1].bn2.running_var[chosen])
    kept_mid = enc_s.layer1[0].conv1.weight.shape[0]
    assert enc_s.layer1[0].conv1.weight.shape[1:] == (32, 3, 3) and kept_mid == 32
    # the next block reads the same channels: its input columns are the chosen ones
    mid_rows = [i for i in range(64) if any(torch.equal(enc.layer1[0].conv1.weight[i, chosen], r)
                                            for r in enc_s.layer1[0].conv1.weight)]
    assert len(mid_rows) == 32
    # the stem's output on the kept channels is the teacher's, exactly
    x = torch.rand(1, 7, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(enc_s.bn1(enc_s.conv1(x)), enc.bn1(enc.conv1(x))[:, chosen])


def test_prune_the_shipped_checkpoint_to_lite():
    """The shipped fast-prior initialises a lite network: same input and prior, its stem's kept channels exact."""
    from facenormals.checkpoint import load_image_to_normal
    from facenormals.prune import prune_checkpoint

    lite = prune_checkpoint(SHIPPED, "lite").eval()
    teacher = load_image_to_normal(SHIPPED).eval()
    assert lite.cfg.arch == "lite" and lite.cfg.prior == teacher.cfg.prior
    assert lite.cfg.prior_source == teacher.cfg.prior_source
    x = torch.rand(1, 7, SIZE, SIZE)
    with torch.no_grad():
        stem_t = teacher.image_encoder.bn1(teacher.image_encoder.conv1(x))
        stem_s = lite.image_encoder.bn1(lite.image_encoder.conv1(x))
        kept = [next(j for j in range(64) if torch.equal(stem_t[0, j], stem_s[0, i])) for i in range(32)]
        assert kept == sorted(kept) and len(set(kept)) == 32
        out = lite.image_to_normal(x)
    assert torch.allclose(out.norm(dim=1), torch.ones(1, SIZE, SIZE), atol=1e-4)
