"""The optional two-view consistency term (issue 16): its warp moves normal maps exactly, identical views cost
nothing, and a short run of the tiny synthetic config trains with it."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from facenormals.model import create_model
from facenormals.training.config import config_from_dict, load_config
from facenormals.training.consistency import (
    ConsistencySection,
    SecondView,
    consistency_loss,
    draw_view,
    rotate_xy,
    second_view_input,
    warp,
)
from facenormals.training.logs import SCALARS, read_scalars
from facenormals.training.schedule import StepKind, StepLosses
from tests.synthetic import write_ellipsoids

SIZE = 64


def _field(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A smooth bump of unit normals (+y up) at normalised image coordinates (x right, y down)."""
    n = torch.stack([0.8 * x, -0.8 * y, torch.ones_like(x)])
    return n / n.norm(dim=0, keepdim=True)


def _grid() -> tuple[torch.Tensor, torch.Tensor]:
    axis = (torch.arange(SIZE, dtype=torch.float64) + 0.5) * (2.0 / SIZE) - 1.0
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return x, y


def _view(angle_deg: float, zoom: float, shift: tuple[float, float]) -> SecondView:
    a = math.radians(angle_deg)
    inverse = torch.tensor([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]], dtype=torch.float64) / zoom
    t = torch.tensor(shift, dtype=torch.float64)
    theta = torch.cat([inverse, -(inverse @ t)[:, None]], 1)[None]
    return SecondView(theta, torch.tensor([a], dtype=torch.float64), torch.ones(1), torch.zeros(1, 2))


def test_warp_moves_a_normal_field_like_the_surface():
    """A surface seen in view 1, then turned 20°, zoomed 1.1× and shifted: the first view's normals moved by the
    term's warp match the second view drawn analytically; leaving out the rotation of x/y does not."""
    x, y = _grid()
    view = _view(20.0, 1.1, (0.1, -0.05))
    first = _field(x, y)[None]
    # second view pixel p2 shows the surface point p1 = zoom⁻¹ R⁻¹ (p2 − shift); its normal turned with the image
    inverse, offset = view.theta[0, :, :2], view.theta[0, :, 2]
    x1 = inverse[0, 0] * x + inverse[0, 1] * y + offset[0]
    y1 = inverse[1, 0] * x + inverse[1, 1] * y + offset[1]
    second = rotate_xy(_field(x1, y1)[None], view.angle)
    mask = torch.ones(1, 1, SIZE, SIZE, dtype=torch.float64)
    assert float(consistency_loss(first, second, mask, view)) < 1e-4  # bilinear resampling only
    unrotated = _field(x1, y1)[None]
    assert float(consistency_loss(first, unrotated, mask, view)) > 20 * float(consistency_loss(first, second, mask, view))
    # a surface facing image-right, turned 90° clockwise on screen (x → y down), faces image-down
    turned = rotate_xy(torch.tensor([1.0, 0, 0]).reshape(1, 3, 1, 1), torch.tensor([math.pi / 2]))
    assert torch.allclose(turned.flatten(), torch.tensor([0.0, -1.0, 0.0]), atol=1e-6)


def test_identical_views_cost_nothing_and_jittered_views_do():
    torch.manual_seed(0)
    net = create_model("fast", "full").eval()
    image = torch.rand(2, 3, SIZE, SIZE)
    mask = torch.zeros(2, 1, SIZE, SIZE)
    mask[:, :, 8:56, 12:52] = 1
    with torch.no_grad():
        first = net.image_to_normal(image)
        same = draw_view(2, ConsistencySection(weight=1.0, rotate_deg=0, scale=0, shift=0, light=0))
        assert torch.allclose(second_view_input(image, None, same), image, atol=1e-5)  # grid_sample rounding
        zero = consistency_loss(first, net.image_to_normal(second_view_input(image, None, same)), mask, same)
        other = draw_view(2, ConsistencySection(weight=1.0))
        jittered = consistency_loss(first, net.image_to_normal(second_view_input(image, None, other)), mask, other)
    assert float(zero) < 1e-6
    assert float(jittered) > 1e3 * max(float(zero), 1e-9)  # an untrained network is far from consistent


def test_prior_channels_move_with_the_image():
    """A prior model's second view: the prior's normals turn with the image, its coverage only moves."""
    x, y = _grid()
    view = _view(30.0, 1.0, (0.0, 0.0))
    prior = torch.cat([_field(x, y)[None], torch.ones(1, 1, SIZE, SIZE, dtype=torch.float64)], 1).float()
    moved = second_view_input(torch.rand(1, 3, SIZE, SIZE), prior, view)
    expected = rotate_xy(warp(prior[:, :3], view), view.angle)
    assert moved.shape == (1, 7, SIZE, SIZE)
    assert torch.allclose(moved[:, 3:6], expected) and torch.allclose(moved[:, 6:], warp(prior[:, 3:], view))


def test_off_by_default_and_added_as_its_own_term():
    cfg = config_from_dict({"phases": [{"steps": 1}]})
    assert cfg.consistency.weight == 0
    net = create_model("fast", "full")
    torch.manual_seed(1)
    batch = {"image": torch.rand(2, 3, SIZE, SIZE), "mask": torch.ones(2, 1, SIZE, SIZE),
             "normals": torch.nn.functional.normalize(torch.randn(2, 3, SIZE, SIZE), dim=1)}
    off_loss, off_terms = StepLosses(net, cfg.consistency)(StepKind.IMAGE_TO_NORMAL_AND_IMAGE, batch)
    assert "cons" not in off_terms
    on = StepLosses(net, ConsistencySection(weight=0.5))
    loss, terms = on(StepKind.IMAGE_TO_NORMAL_AND_IMAGE, batch)
    assert float(loss) == pytest.approx(float(off_loss) + 0.5 * float(terms["cons"]), rel=1e-5)
    _, image_only = on(StepKind.IMAGE_TO_IMAGE, batch)  # real images without normals get the term too
    assert set(image_only) == {"i2i", "cons"}
    with pytest.raises(ValueError, match="consistency"):
        config_from_dict({"consistency": {"weight": -1.0}, "phases": [{"steps": 1}]})
    with pytest.raises(ValueError, match="did you mean 'weight'"):
        config_from_dict({"consistency": {"wieght": 1.0}, "phases": [{"steps": 1}]})


def test_tiny_synthetic_config_trains_with_the_term(tmp_path: Path):
    """The shipped tiny config plus a [consistency] table: a 12-step run logs a finite `cons` on its image steps."""
    write_ellipsoids(tmp_path / "synth", 8, 64, "paired", seed=0)
    write_ellipsoids(tmp_path / "synth", 4, 64, "image-only", seed=1)
    tiny = Path(__file__).resolve().parents[1] / "training" / "configs" / "tiny_synthetic.toml"
    base = load_config(tiny).to_dict()
    base.update(run_dir=str(tmp_path / "run"), threads=1, log_every=1, val_every=0,
                consistency={"weight": 0.2, "rotate_deg": 10.0, "scale": 0.1, "shift": 0.05, "light": 0.3})
    base["data"]["train"] = [str(tmp_path / "synth")]
    base["phases"] = [{**base["phases"][0], "steps": 12}]
    config = tmp_path / "tiny_consistency.json"
    config.write_text(json.dumps(base))
    subprocess.run([sys.executable, "-m", "facenormals.training.cli", "--config", str(config)], check=True,
                   capture_output=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert json.loads((tmp_path / "run" / "config.json").read_text())["consistency"]["weight"] == 0.2
    rows = read_scalars(tmp_path / "run" / SCALARS)
    values = [float(r["cons"]) for r in rows if r.get("cons")]
    assert len(values) >= 6 and all(math.isfinite(v) and v >= 0 for v in values)
