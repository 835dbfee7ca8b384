"""The optional angle term (training/angle_loss.py): the mean angle in radians, exact at small and large angles,
with a finite gradient at the truth (how steps take it: tests/test_train_schedule.py)."""

from __future__ import annotations

import math

import pytest
import torch
from test_anchor import _face_mask, _normals

from facenormals.training.angle_loss import masked_mean_angle


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

