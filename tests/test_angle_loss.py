"""The optional angle term (training/angle_loss.py): the mean angle in radians, exact at small and large angles,
with a finite gradient at the truth; image→normal steps get it as its own term when configured."""

from __future__ import annotations

import math

import pytest
import torch
from test_anchor import SIZE, _face_mask, _normals

from facenormals.model import create_model
from facenormals.training.angle_loss import masked_mean_angle
from facenormals.training.config import config_from_dict
from facenormals.training.schedule import StepKind, StepLosses


def _turned(normals: torch.Tensor, degrees: float) -> torch.Tensor:
    """Normals turned by ``degrees`` about the camera's y axis (``_normals`` lie in the x–z plane: every one moves by
    exactly that angle)."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    x, y, z = normals.unbind(1)
    return torch.stack([c * x + s * z, y, c * z - s * x], dim=1)


@pytest.mark.parametrize("degrees", [0.5, 3.0, 12.0, 90.0, 170.0])
def test_a_known_turn_measures_its_angle(degrees):
    mask, truth = _face_mask(), _normals(ripple=0.2)
    angle = float(masked_mean_angle(_turned(truth, degrees), truth, mask))
    assert math.degrees(angle) == pytest.approx(degrees, abs=0.07)  # the smoothing's floor is ~0.06°
    # its length does not matter (the network's output is unit; the term need not assume it)
    assert float(masked_mean_angle(3.0 * _turned(truth, degrees), truth, mask)) == pytest.approx(angle, abs=1e-4)


def test_outside_the_mask_costs_nothing_and_the_truth_has_a_finite_gradient():
    mask, truth = _face_mask(), _normals(ripple=0.2)
    wrong_outside = torch.where(mask > 0.5, truth, -truth)
    assert math.degrees(float(masked_mean_angle(wrong_outside, truth, mask))) < 0.07
    pred = truth.clone().requires_grad_(True)
    masked_mean_angle(pred, truth, mask).backward()
    assert torch.isfinite(pred.grad).all()
    # unlike the cosine, a small error pulls as hard as a large one: the gradient's size barely changes with it
    pulls = []
    for degrees in (2.0, 20.0):
        turned = _turned(truth, degrees).requires_grad_(True)
        masked_mean_angle(turned, truth, mask).backward()
        pulls.append(float(turned.grad.norm()))
    assert pulls[0] == pytest.approx(pulls[1], rel=0.05)


def test_off_by_default_and_added_to_image_to_normal_steps():
    cfg = config_from_dict({"phases": [{"steps": 1}]})
    assert cfg.angle.weight == 0
    torch.manual_seed(3)
    net = create_model("fast", "full")
    batch = {"image": torch.rand(2, 3, SIZE, SIZE), "mask": _face_mask().expand(2, 1, SIZE, SIZE),
             "normals": _normals(ripple=0.2).expand(2, 3, SIZE, SIZE)}
    _, off_terms = StepLosses(net)(StepKind.IMAGE_TO_NORMAL, batch)
    assert "angle" not in off_terms
    section = config_from_dict({"angle": {"weight": 0.1}, "phases": [{"steps": 1}]}).angle
    for kind, expected in ((StepKind.IMAGE_TO_NORMAL, {"i2n", "angle"}),
                           (StepKind.IMAGE_TO_NORMAL_AND_IMAGE, {"i2n", "i2i", "angle"})):
        loss, terms = StepLosses(net, angle=section)(kind, batch)
        assert set(terms) == expected and float(terms["angle"]) > 0
        rest = float(terms["i2n"]) + float(terms.get("i2i", 0.0))
        assert float(loss) == pytest.approx(rest + 0.1 * float(terms["angle"]), rel=1e-5)
    _, n2n_terms = StepLosses(net, angle=section)(StepKind.NORMAL_TO_NORMAL, batch)
    assert set(n2n_terms) == {"n2n"}  # normal→normal stays the paper's
    with pytest.raises(ValueError, match="angle"):
        config_from_dict({"angle": {"weight": -1.0}, "phases": [{"steps": 1}]})
