"""The landmark → pixel convention (``facenormals.faces.mesh_to_pixels``), measured on MediaPipe itself.

MediaPipe's normalised landmarks are pixel-centre coordinates divided by the image size. Two checks that a
half-pixel error in either direction fails: exact pixel replication of a photo (model-free: the network sees
the same face either way, so only the pipeline's convention moves the points), and a rendered ICT face whose
landmark vertices' true pixels are known (the renderer samples pixel centres at integers).
"""

from __future__ import annotations

import numpy as np
import pytest

from facenormals import ict_fit
from facenormals.faces import FaceMesh
from tests.conftest import SHARED

SHARED_ICT = SHARED / "data" / "ict-facekit" / "ict_facekit.npz"
TOLERANCE_PX = 0.25  # half of the half pixel in question


def _mean_landmark(face_mesh: FaceMesh, rgb: np.ndarray) -> np.ndarray:
    found = face_mesh.find(np.ascontiguousarray(rgb))
    assert found, "MediaPipe found no face"
    return found[0].points[:468].astype(np.float64).mean(axis=0)


def test_pixel_replication_maps_landmarks_as_pixel_centres() -> None:
    """Pixel c of an image is pixel k·c + (k − 1)/2 of its k× replication (pixel centres at integers): the
    landmarks must follow. Read as image edges (``− 0.5``), they would miss by (k − 1)/2 px."""
    skimage_data = pytest.importorskip("skimage.data")
    photo = skimage_data.astronaut()
    misses = []
    with FaceMesh() as face_mesh:
        for y0, x0, side in ((0, 60, 300), (10, 90, 260), (30, 110, 220), (0, 40, 340), (20, 100, 241), (5, 75, 283)):
            crop = photo[y0:y0 + side, x0:x0 + side]
            small = _mean_landmark(face_mesh, crop)
            for k in (2, 3):
                big = _mean_landmark(face_mesh, np.repeat(np.repeat(crop, k, axis=0), k, axis=1))
                misses.append((big - (k * small + (k - 1) / 2)) / (k - 1))
    miss = np.mean(misses, axis=0)  # per pixel of replication; one image's points are noisy (~0.2 px), not biased
    assert np.abs(miss).max() < TOLERANCE_PX, f"mean miss {miss} px per replicated pixel"


@pytest.mark.shared  # the ICT-FaceKit head to render
def test_landmarks_land_on_their_rendered_vertices() -> None:
    """A neutral ICT head rendered small (128², 160²; the correspondence was derived at 768², where half a pixel is
    negligible), slightly turned: MediaPipe's landmarks average onto their ICT vertices' true pixels. The vertices
    derived on this very head (``landmark_neutral_vertices``), not the fit's surface points: those are unbiased over
    many textured faces, where MediaPipe sits differently than on this plain neutral head."""
    from facenormals.training.data import ict
    from facenormals.training.data.ict_correspondence import KEPT_REGIONS, _rotation, head_colors
    from facenormals.training.data.sources import frontal_render

    model = ict.IctModel(SHARED_ICT)
    kept = np.nonzero(np.isin(model.region, KEPT_REGIONS))[0]
    with np.load(ict_fit.ASSET, allow_pickle=False) as asset:
        vertices = kept[asset["landmark_neutral_vertices"][:468]]
    colors = head_colors(model)
    centre = model.neutral[model.region == ict.FACE].mean(axis=0)
    offsets = []
    with FaceMesh() as face_mesh:
        for size in (128, 160):
            for yaw, pitch in ((0.0, 0.0), (6.0, -4.0), (-5.0, 3.0), (3.0, 5.0)):
                posed = (model.neutral - centre) @ _rotation(yaw, pitch).T.astype(np.float32) + centre
                image, xy, _frags, _front = frontal_render(posed, model.faces, None, None, None, colors, size)
                offsets.append(_mean_landmark(face_mesh, image) - xy[vertices].mean(axis=0))
    offset = np.mean(offsets, axis=0)
    assert np.abs(offset).max() < TOLERANCE_PX, f"landmarks sit {offset} px (x, y) from their vertices"
