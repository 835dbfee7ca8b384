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
def shared_data() -> Path:
    """../shared/data, or skip: tests that need it say so in their skip reason."""
    data = SHARED / "data"
    if not data.is_dir():
        pytest.skip(f"shared data not present at {data}")
    return data
