"""The ``fit`` view draws the ICT face fitted to each face (what a model with an ICT prior is given) with its pose."""

from __future__ import annotations

import numpy as np
import pytest
from pipeline_media import face_photo

from facenormals.api import FaceNormals
from facenormals.frame import Frame
from facenormals.realtime.render import RenderState, get_view, view_names


@pytest.fixture(scope="module")
def processed():
    normals = FaceNormals()  # the shipped default (its INT8 twin on a CPU): a model with an ICT prior
    assert normals.engine.prior_source in ("ict-fit", "ict-blend")
    rgb = face_photo()
    return normals.engine.process(Frame(0, 0, rgb)), rgb


def test_fit_view_shades_the_fitted_face_under_the_light(processed):
    result, rgb = processed
    assert "fit" in view_names() and len(result.fits) == 1 and result.fits[0] is not None
    view = get_view("fit")
    lit_left = view(result, RenderState(light=np.array([-0.8, 0.0, 0.6], dtype=np.float32))).astype(int)
    lit_right = view(result, RenderState(light=np.array([0.8, 0.0, 0.6], dtype=np.float32))).astype(int)
    assert lit_left.shape == (*rgb.shape[:2], 3)
    changed = np.abs(lit_left - rgb[..., ::-1]).sum(axis=2) > 30
    x0, y0, x1, y1 = (int(v) for v in result.crops[0].box.as_xyxy())
    inside = changed[max(0, y0):y1, max(0, x0):x1].mean()
    assert inside > 0.2  # the fitted face covers much of its crop square
    assert changed.mean() < inside  # and little outside it (the HUD, the light gizmo)
    # The light from the left brightens the face's left half (image left), and the other way round.
    rows, cols = np.nonzero(changed[max(0, y0):y1, max(0, x0):x1])
    cols, rows = cols + max(0, x0), rows + max(0, y0)
    middle = np.median(cols)
    gray_l, gray_r = lit_left.sum(axis=2), lit_right.sum(axis=2)
    left, right = cols < middle - 5, cols > middle + 5
    assert gray_l[rows[left], cols[left]].mean() > gray_l[rows[right], cols[right]].mean()
    assert gray_r[rows[right], cols[right]].mean() > gray_r[rows[left], cols[left]].mean()


def test_fit_view_says_when_there_is_no_fit(processed):
    result, rgb = processed
    import dataclasses

    bare = dataclasses.replace(result, fits=(None,))
    out = get_view("fit")(bare, RenderState())
    assert np.abs(out.astype(int) - rgb[..., ::-1]).sum(axis=2).astype(bool).mean() < 0.05  # the note only
