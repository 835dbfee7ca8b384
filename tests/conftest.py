"""Shared test fixtures. Tests use ../shared when present but never need it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACENORMALS_SHARED", REPO.parent / "shared"))

torch.set_num_threads(2)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def astronaut_landmarks() -> tuple[np.ndarray, np.ndarray]:
    """skimage's astronaut photo (public domain, NASA) and MediaPipe's 478 landmarks on it (normalised)."""
    from facenormals import mesh_prior

    skimage_data = pytest.importorskip("skimage.data")
    image = skimage_data.astronaut()
    with mesh_prior.create_face_mesh() as face_mesh:
        found = face_mesh.find(image)
    assert found, "MediaPipe found no face on the astronaut photo"
    return image, found[0].normalised.astype(np.float64)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that read ../shared carry the ``shared`` marker (no silent switch to other fixtures): using the
    ``shared_data`` fixture without it is an error; without the data, marked tests skip and say where it was sought."""
    data = SHARED / "data"
    for item in items:
        marked = item.get_closest_marker("shared") is not None
        if "shared_data" in getattr(item, "fixturenames", ()) and not marked:
            raise pytest.UsageError(f"{item.nodeid} uses ../shared (shared_data): mark it @pytest.mark.shared")
        if marked and not data.is_dir():
            item.add_marker(pytest.mark.skip(reason=f"needs ../shared: no data at {data}"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (tests using it are marked ``shared`` and skip without it)."""
    return SHARED / "data"
