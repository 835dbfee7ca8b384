"""The paper's schedule: which modules learn in each step kind, skips off in normal→normal, masked losses."""

from __future__ import annotations

import pytest
import torch
from test_anchor import SIZE, _face_mask, _normals

from facenormals.model import create_model
from facenormals.training.config import config_from_dict
from facenormals.training.losses import masked_cosine_distance, masked_l2
from facenormals.training.schedule import StepKind, StepLosses, normal_encoder_input, steps_for_batch

MODULES = ("image_encoder", "normal_encoder", "skip_connections", "normal_decoder", "image_decoder")


def _batch(size: int = 64) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    normals = torch.nn.functional.normalize(torch.randn(2, 3, size, size), dim=1)
    mask = torch.zeros(2, 1, size, size)
    mask[:, :, 8:56, 12:52] = 1
    return {"image": torch.rand(2, 3, size, size), "normals": normals * mask, "mask": mask}


def _modules_with_grad(net) -> set[str]:
    got = set()
    for name in MODULES:
        module = getattr(net, name)
        if module is not None and any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters()):
            got.add(name)
    return got


@pytest.mark.parametrize(("kind", "expected"), [
    (StepKind.NORMAL_TO_NORMAL, {"normal_encoder", "normal_decoder"}),
    (StepKind.IMAGE_TO_NORMAL_AND_IMAGE, {"image_encoder", "skip_connections", "normal_decoder", "image_decoder"}),
    (StepKind.IMAGE_TO_IMAGE, {"image_encoder", "image_decoder"}),
    (StepKind.IMAGE_TO_NORMAL, {"image_encoder", "skip_connections", "normal_decoder"}),
])
def test_each_step_trains_exactly_its_modules(kind, expected):
    net = create_model("fast", "full")
    loss, _ = StepLosses(net)(kind, _batch())
    loss.backward()
    assert _modules_with_grad(net) == expected


def test_normal_to_normal_runs_with_skips_inactive():
    net = create_model("fast", "full")
    calls = []
    net.skip_connections.register_forward_hook(lambda *a: calls.append("skip"))
    net.image_encoder.register_forward_hook(lambda *a: calls.append("E_I"))
    StepLosses(net)(StepKind.NORMAL_TO_NORMAL, _batch())
    assert calls == []
    StepLosses(net)(StepKind.IMAGE_TO_NORMAL_AND_IMAGE, _batch())
    assert calls == ["E_I", "skip"]


def test_image_to_image_step_ignores_skip_branch():
    """D_I has no skips: the full-resolution branch of E_I (skip-only) gets no gradient from image→image."""
    net = create_model("fast", "full")
    StepLosses(net)(StepKind.IMAGE_TO_IMAGE, _batch())[0].backward()
    assert all(p.grad is None for p in net.image_encoder.full_res.parameters())


def test_paired_loss_is_the_equal_weight_sum():
    net = create_model("fast", "full").eval()
    batch = _batch()
    total, parts = StepLosses(net)(StepKind.IMAGE_TO_NORMAL_AND_IMAGE, batch)
    assert torch.allclose(total, parts["i2n"] + parts["i2i"])


def test_schedule_per_variant():
    assert steps_for_batch("paired", "full") == (StepKind.NORMAL_TO_NORMAL, StepKind.IMAGE_TO_NORMAL_AND_IMAGE)
    assert steps_for_batch("image-only", "full") == (StepKind.IMAGE_TO_IMAGE,)
    assert steps_for_batch("normal-only", "full") == (StepKind.NORMAL_TO_NORMAL,)
    assert steps_for_batch("paired", "no-skip") == steps_for_batch("paired", "full")
    assert steps_for_batch("paired", "no-normal-encoder") == (StepKind.IMAGE_TO_NORMAL_AND_IMAGE,)
    assert steps_for_batch("normal-only", "no-normal-encoder") == ()
    assert steps_for_batch("paired", "plain") == (StepKind.IMAGE_TO_NORMAL,)
    assert steps_for_batch("image-only", "plain") == ()
    with pytest.raises(ValueError, match="unknown batch kind"):
        steps_for_batch("video", "full")


@pytest.mark.parametrize("variant", ["full", "no-skip", "no-normal-encoder", "plain"])
def test_every_variant_trains_through_the_same_steps(variant):
    net = create_model("fast", variant)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for kind in ("paired", "image-only", "normal-only"):
        for step in steps_for_batch(kind, variant):
            optimizer.zero_grad(set_to_none=True)
            StepLosses(net)(step, _batch())[0].backward()
            optimizer.step()
    changed = [k for k, v in net.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("normal_decoder.") for k in changed)


def test_normal_encoder_input_is_zero_outside_mask():
    batch = _batch()
    out = normal_encoder_input(torch.ones_like(batch["normals"]), batch["mask"])
    assert out[:, :, 0, 0].abs().sum() == 0 and out[:, :, 30, 30].abs().sum() > 0


def test_masked_losses_ignore_pixels_outside_mask():
    batch = _batch()
    target, mask = batch["normals"], batch["mask"]
    pred = target.clone()
    outside = mask.expand_as(pred) == 0
    pred[outside] = torch.randn(int(outside.sum()))
    pred.requires_grad_(True)
    cos = masked_cosine_distance(torch.nn.functional.normalize(pred, dim=1), target, mask)
    assert cos.item() == pytest.approx(0.0, abs=1e-5)
    image = torch.rand_like(target)
    noisy = image.clone()
    noisy[outside] += 1.0
    noisy.requires_grad_(True)
    l2 = masked_l2(noisy, image, mask)
    assert l2.item() == pytest.approx(0.0, abs=1e-7)
    l2.backward()
    assert noisy.grad[outside].abs().sum() == 0


def test_masked_losses_average_over_the_mask():
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 1
    target = torch.zeros(1, 3, 4, 4)
    target[:, 2] = 1
    pred = torch.zeros(1, 3, 4, 4)
    pred[:, 0] = 1  # 90° off everywhere: cosine distance 1
    assert masked_cosine_distance(pred, target, mask).item() == pytest.approx(1.0)
    assert masked_l2(pred, target, mask).item() == pytest.approx(2.0 / 3.0)
    with pytest.raises(ValueError, match="mask shape"):
        masked_l2(pred, target, torch.ones(1, 1, 3, 3))


def _frozen_config(parts: list[str]):
    from facenormals.training.config import config_from_dict

    return config_from_dict({"run_dir": "unused", "model": {"arch": "fast", "variant": "full", "frozen": parts},
                             "phases": [{"steps": 1, "size": 64, "batch_size": 2}]})


def test_a_frozen_part_gets_no_gradient_and_the_rest_still_learns():
    from facenormals.training.trainer import build_model

    net = build_model(_frozen_config(["image_encoder"]))
    loss, _ = StepLosses(net)(StepKind.IMAGE_TO_NORMAL_AND_IMAGE, _batch())
    loss.backward()
    assert _modules_with_grad(net) == {"skip_connections", "normal_decoder", "image_decoder"}
    assert all(p.grad is None for p in net.image_encoder.parameters())


def test_freezing_an_unknown_part_names_the_parts():
    from facenormals.training.trainer import build_model

    with pytest.raises(ValueError, match=r"'encoder' is not a part.*image_encoder"):
        build_model(_frozen_config(["encoder"]))


@pytest.mark.parametrize(("section", "weight", "bad"), [("detail", 2.0, {"sigma_px": -1.0}), ("angle", 0.1, {"weight": -1.0})])
def test_optional_terms_are_off_by_default_and_join_image_to_normal_steps(section, weight, bad):
    """The detail and angle terms (training/detail_loss.py, training/angle_loss.py): off unless configured, then
    added with their weight to both image→normal step kinds, never to normal→normal (the paper's)."""
    assert getattr(config_from_dict({"phases": [{"steps": 1}]}), section).weight == 0
    torch.manual_seed(3)
    net = create_model("fast", "full")
    batch = {"image": torch.rand(2, 3, SIZE, SIZE), "mask": _face_mask().expand(2, 1, SIZE, SIZE),
             "normals": _normals(ripple=0.2).expand(2, 3, SIZE, SIZE)}
    _, off_terms = StepLosses(net)(StepKind.IMAGE_TO_NORMAL, batch)
    assert set(off_terms) == {"i2n"}
    configured = {section: getattr(config_from_dict({section: {"weight": weight}, "phases": [{"steps": 1}]}), section)}
    for kind, expected in ((StepKind.IMAGE_TO_NORMAL, {"i2n", section}),
                           (StepKind.IMAGE_TO_NORMAL_AND_IMAGE, {"i2n", "i2i", section})):
        loss, terms = StepLosses(net, **configured)(kind, batch)
        assert set(terms) == expected and float(terms[section]) > 0
        rest = float(terms["i2n"]) + float(terms.get("i2i", 0.0))
        assert float(loss) == pytest.approx(rest + weight * float(terms[section]), rel=1e-5)
    _, n2n_terms = StepLosses(net, **configured)(StepKind.NORMAL_TO_NORMAL, batch)
    assert set(n2n_terms) == {"n2n"}
    with pytest.raises(ValueError, match=section):
        config_from_dict({section: bad, "phases": [{"steps": 1}]})
