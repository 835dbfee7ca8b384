"""The optional real-photo anchor (issue 14): it sees only the coarse shape — a tilt costs, a fine ripple does not —,
the masked blur does not leak the background in, and image-only steps of a prior model get it as its own term."""

from __future__ import annotations

import math

import pytest
import torch

from facenormals.model import create_model
from facenormals.training.anchor import AnchorSection, anchor_loss, masked_blur
from facenormals.training.config import config_from_dict
from facenormals.training.schedule import StepKind, StepLosses

SIZE = 64


def _normals(tilt: float = 0.0, ripple: float = 0.0, period_px: float = 4.0) -> torch.Tensor:
    """Unit normals facing the camera, tilted towards +x by ``tilt`` (a low-frequency change) and with a ripple of
    slope amplitude ``ripple`` along x (a detail change)."""
    x = torch.arange(SIZE, dtype=torch.float32)
    slope = tilt + ripple * torch.sin(2 * math.pi * x / period_px)
    n = torch.stack([slope.expand(SIZE, SIZE), torch.zeros(SIZE, SIZE), torch.ones(SIZE, SIZE)])
    return torch.nn.functional.normalize(n, dim=0)[None]


def _prior(normals: torch.Tensor, covered: torch.Tensor) -> torch.Tensor:
    return torch.cat([normals, covered], dim=1)


def _face_mask() -> torch.Tensor:
    mask = torch.zeros(1, 1, SIZE, SIZE)
    mask[..., 12:52, 16:48] = 1
    return mask


def test_masked_blur_keeps_a_constant_face_constant():
    """Normalised convolution: a constant inside the mask stays that constant up to the mask's edge, whatever lies
    outside (a plain blur would mix the background in at the border)."""
    mask = _face_mask()
    values = torch.full((1, 3, SIZE, SIZE), 5.0)
    values[mask.expand_as(values) < 0.5] = -100.0
    blurred = masked_blur(values, mask, sigma=4.0)
    inside = mask.expand_as(values) > 0.5
    assert torch.allclose(blurred[inside], torch.full_like(blurred[inside], 5.0), atol=1e-4)


def test_the_anchor_sees_coarse_shape_not_detail():
    mask = _face_mask()
    covered = torch.ones_like(mask)
    prior = _prior(_normals(), covered)
    section = AnchorSection(weight=1.0, sigma_px=8.0)
    same = float(anchor_loss(_normals(), prior, mask, section))
    tilted = float(anchor_loss(_normals(tilt=0.2), prior, mask, section))
    rippled = float(anchor_loss(_normals(ripple=0.2), prior, mask, section))
    assert same < 1e-6
    assert tilted > 0.015  # 1 − cos(atan 0.2) ≈ 0.019
    assert rippled < 0.02 * tilted  # the same slope as fine detail (4 px period) is left free
    # where the coarse face is not drawn (no face found, or the prior dropped) nothing is asked
    assert float(anchor_loss(_normals(tilt=0.2), _prior(_normals(), torch.zeros_like(mask)), mask, section)) == 0.0


def test_off_by_default_and_added_to_image_only_steps():
    cfg = config_from_dict({"phases": [{"steps": 1}]})
    assert cfg.anchor.weight == 0
    torch.manual_seed(2)
    net = create_model("fast", "full", prior="residual")
    with torch.no_grad():  # a fresh residual model returns its prior exactly: give it a residual to anchor
        net.normal_decoder.last.weight.normal_(std=0.05)
    batch = {"image": torch.rand(2, 3, SIZE, SIZE), "mask": _face_mask().expand(2, 1, SIZE, SIZE),
             "prior": _prior(_normals(tilt=0.3), torch.ones(1, 1, SIZE, SIZE)).expand(2, 4, SIZE, SIZE)}
    _, off_terms = StepLosses(net, None, cfg.anchor)(StepKind.IMAGE_TO_IMAGE, batch)
    assert set(off_terms) == {"i2i"}
    loss, terms = StepLosses(net, None, AnchorSection(weight=0.5))(StepKind.IMAGE_TO_IMAGE, batch)
    assert set(terms) == {"i2i", "anchor"}
    assert float(loss) == pytest.approx(float(terms["i2i"]) + 0.5 * float(terms["anchor"]), rel=1e-5)
    assert float(terms["anchor"]) > 0
    loss.backward()  # the term reaches the normal decoder (image-only steps otherwise never train it)
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in net.normal_decoder.parameters())
    with pytest.raises(ValueError, match="anchor"):
        config_from_dict({"anchor": {"sigma_px": 0.0}, "phases": [{"steps": 1}]})
