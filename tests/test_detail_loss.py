"""The optional detail term (training/detail_loss.py): it sees only the high-pass — a tilt costs nothing, a missing
ripple costs in full — (how steps take it: tests/test_train_schedule.py)."""

from __future__ import annotations

from test_anchor import _face_mask, _normals

from facenormals.training.detail_loss import DetailSection, detail_loss
from facenormals.training.losses import masked_cosine_distance


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

