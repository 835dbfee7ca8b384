"""The optional detail term (training/detail_loss.py): it sees only the high-pass — a tilt costs nothing, a missing
ripple costs in full —, and image→normal steps get it as its own term when configured."""

from __future__ import annotations

import pytest
import torch
from test_anchor import SIZE, _face_mask, _normals

from facenormals.model import create_model
from facenormals.training.config import config_from_dict
from facenormals.training.detail_loss import DetailSection, detail_loss
from facenormals.training.losses import masked_cosine_distance
from facenormals.training.schedule import StepKind, StepLosses


def test_the_term_sees_detail_not_coarse_shape():
    mask, section = _face_mask(), DetailSection(weight=1.0, sigma_px=8.0)
    flat, tilted, rippled = _normals(), _normals(tilt=0.3), _normals(ripple=0.2)
    assert float(detail_loss(flat, flat, mask, section)) == 0.0
    # a uniform tilt: the cosine distance sees it, the high-pass (normals minus their own blur) does not
    assert float(masked_cosine_distance(tilted, flat, mask)) > 0.02
    assert float(detail_loss(tilted, flat, mask, section)) < 1e-6
    missing = float(detail_loss(flat, rippled, mask, section))
    assert missing > 0.05  # a smooth prediction of a rippled truth pays for the ripple
    # the ripple drawn on a tilted face: most of it is paid back (normalisation couples tilt and ripple a little)
    assert float(detail_loss(_normals(tilt=0.3, ripple=0.2), rippled, mask, section)) < 0.5 * missing


def test_off_by_default_and_added_to_image_to_normal_steps():
    cfg = config_from_dict({"phases": [{"steps": 1}]})
    assert cfg.detail.weight == 0
    torch.manual_seed(3)
    net = create_model("fast", "full")
    batch = {"image": torch.rand(2, 3, SIZE, SIZE), "mask": _face_mask().expand(2, 1, SIZE, SIZE),
             "normals": _normals(ripple=0.2).expand(2, 3, SIZE, SIZE)}
    _, off_terms = StepLosses(net)(StepKind.IMAGE_TO_NORMAL, batch)
    assert set(off_terms) == {"i2n"}
    section = config_from_dict({"detail": {"weight": 2.0}, "phases": [{"steps": 1}]}).detail
    for kind, expected in ((StepKind.IMAGE_TO_NORMAL, {"i2n", "detail"}),
                           (StepKind.IMAGE_TO_NORMAL_AND_IMAGE, {"i2n", "i2i", "detail"})):
        loss, terms = StepLosses(net, detail=section)(kind, batch)
        assert set(terms) == expected and float(terms["detail"]) > 0
        rest = float(terms["i2n"]) + float(terms.get("i2i", 0.0))
        assert float(loss) == pytest.approx(rest + 2.0 * float(terms["detail"]), rel=1e-5)
    _, n2n_terms = StepLosses(net, detail=section)(StepKind.NORMAL_TO_NORMAL, batch)
    assert set(n2n_terms) == {"n2n"}  # normal→normal stays the paper's
    with pytest.raises(ValueError, match="detail"):
        config_from_dict({"detail": {"sigma_px": -1.0}, "phases": [{"steps": 1}]})
