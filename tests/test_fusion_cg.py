"""The fusion's CPU conjugate-gradient solver (numba, SSOR or Jacobi preconditioner) against the exact sparse solve."""

from __future__ import annotations

import numpy as np
import pytest
from surfaces import sphere_depth

from facenormals.camera import Intrinsics
from facenormals.fusion import FusionConfig, prepare, solve_direct
from facenormals.fusion_cg import SSOR_OMEGA, solve_pcg

SIZE = 80
INTR = Intrinsics(SIZE, SIZE, 200.0, 200.0, (SIZE - 1) / 2, (SIZE - 1) / 2)


@pytest.fixture(scope="module")
def crop():
    """A sphere with noisy depth, a ragged region (holes in the stencil) and a small λ: a slowly converging system."""
    depth, normals, hit = sphere_depth(INTR, 0.6, 0.1)
    rng = np.random.default_rng(0)
    measured = depth + rng.normal(0, 0.002, depth.shape).astype(np.float32)
    region = hit & (rng.random(hit.shape) > 0.03)
    return prepare(measured, normals, region, INTR, FusionConfig(position_weight=0.001, crossover_px=0.0))


@pytest.mark.parametrize("omega", [0.0, 1.0, SSOR_OMEGA])
def test_matches_the_direct_solve(crop, omega):
    exact = solve_direct(crop.problem, "splu")
    solution, iterations = solve_pcg(crop.problem, crop.init, 3000, 1e-9, omega)
    region = crop.problem.region
    assert 0 < iterations < 3000
    assert np.abs(solution - exact)[region].max() < 1e-5  # metres
    np.testing.assert_array_equal(solution[~region], crop.problem.target[~region])  # pinned outside


def test_ssor_needs_fewer_iterations_than_jacobi(crop):
    _, jacobi = solve_pcg(crop.problem, crop.init, 3000, 1e-6, 0.0)
    _, ssor = solve_pcg(crop.problem, crop.init, 3000, 1e-6, SSOR_OMEGA)
    assert ssor < jacobi / 2


def test_a_converged_start_stops_at_once_and_the_cap_holds(crop):
    exact = solve_direct(crop.problem, "splu")
    assert solve_pcg(crop.problem, exact, 100, 1e-4)[1] == 0
    assert solve_pcg(crop.problem, crop.init, 3, 1e-12)[1] == 3
