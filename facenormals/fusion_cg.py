"""Conjugate gradients on one CPU core for the fusion's 5-point stencil (:class:`facenormals.fusion.FusionProblem`).

The torch solver (:mod:`facenormals.fusion_torch`, the CUDA route of :func:`facenormals.fusion.solve_cg`) is
written for batches on CUDA; on a CPU core its ~20 tensor operations per iteration each allocate and sweep the
whole crop, ~0.3 ms an iteration on a 200² face.
Here one numba loop does the stencil product and the dot products in one or two sweeps (float64 throughout, no
allocation per iteration), and the preconditioner is **SSOR** (symmetric over-relaxed Gauss–Seidel) instead of
Jacobi: the stencil's off-diagonal coupling is what makes the normals' mid frequencies slow for Jacobi-CG, and a
forward and a backward sweep carry them across the face (benchmarks/face3d.py: fewer iterations to the same
tolerance). ``omega`` 1 is symmetric Gauss–Seidel; 0 selects Jacobi (the torch solver's preconditioner).

The matrix, for pixel p with right/down neighbours (edge residual ``a·z_q − b·z_p`` with weight w)::

    A_pp = w_pos + Σ_edges w·(a² or b²),   A_pq = −w·a·b
"""

from __future__ import annotations

import numba
import numpy as np

SSOR_OMEGA = 1.5  # over-relaxation of the preconditioner's sweeps: 1.2–1.7 all within a few % (see the benchmark)


@numba.njit(cache=True, nogil=True)
def _stencil(w_pos, ax, bx, wx, ay, by, wy):
    """A on a grid padded by one pixel (no branches in the sweeps): diagonal, right and down couplings, all
    (H+2)×(W+2); ``right[i, j]`` couples padded pixel (i, j) with (i, j+1), ``down[i, j]`` with (i+1, j)."""
    height, width = w_pos.shape
    diag = np.ones((height + 2, width + 2))
    right = np.zeros((height + 2, width + 2))
    down = np.zeros((height + 2, width + 2))
    for i in range(height):
        for j in range(width):
            diag[i + 1, j + 1] = w_pos[i, j]
    for i in range(height):
        for j in range(width - 1):
            w = np.float64(wx[i, j])
            if w != 0.0:
                a, b = np.float64(ax[i, j]), np.float64(bx[i, j])
                diag[i + 1, j + 2] += w * a * a
                diag[i + 1, j + 1] += w * b * b
                right[i + 1, j + 1] = -w * a * b
    for i in range(height - 1):
        for j in range(width):
            w = np.float64(wy[i, j])
            if w != 0.0:
                a, b = np.float64(ay[i, j]), np.float64(by[i, j])
                diag[i + 2, j + 1] += w * a * a
                diag[i + 1, j + 1] += w * b * b
                down[i + 1, j + 1] = -w * a * b
    return diag, right, down


@numba.njit(cache=True, nogil=True, fastmath=True)
def _product(diag, right, down, z, out):
    """out = A·z on the padded grid (z is 0 on the pad); returns z·A·z (CG's denominator) from the same sweep."""
    height, width = diag.shape
    total = 0.0
    for i in range(1, height - 1):
        for j in range(1, width - 1):
            v = (diag[i, j] * z[i, j] + right[i, j] * z[i, j + 1] + right[i, j - 1] * z[i, j - 1]
                 + down[i, j] * z[i + 1, j] + down[i - 1, j] * z[i - 1, j])
            out[i, j] = v
            total += v * z[i, j]
    return total


@numba.njit(cache=True, nogil=True, fastmath=True)
def _precondition(inverse, left, up, right, down, omega, r, z):
    """z = M⁻¹ r; returns r·z. SSOR: M ∝ (D/ω + L) D⁻¹ (D/ω + U), with the couplings pre-scaled by ω/D (``left``,
    ``up``, ``right``, ``down``) so each sweep's chain from pixel to pixel is one multiply-add; Jacobi (``omega``
    0): M = D, ``inverse`` = 1/D."""
    height, width = inverse.shape
    total = 0.0
    if omega <= 0.0:
        for i in range(1, height - 1):
            for j in range(1, width - 1):
                z[i, j] = r[i, j] * inverse[i, j]
                total += r[i, j] * z[i, j]
        return total
    for i in range(1, height - 1):  # forward: (D/ω + L) y = r; the lower neighbours are left and up
        for j in range(1, width - 1):
            z[i, j] = r[i, j] * inverse[i, j] - up[i, j] * z[i - 1, j] - left[i, j] * z[i, j - 1]
    for i in range(height - 2, 0, -1):  # backward: (D/ω + U) z = D y; the upper neighbours are right and down
        for j in range(width - 2, 0, -1):
            z[i, j] = omega * z[i, j] - down[i, j] * z[i + 1, j] - right[i, j] * z[i, j + 1]
            total += r[i, j] * z[i, j]
    return total


@numba.njit(cache=True, nogil=True, fastmath=True)
def _pcg(diag, right, down, rhs, x, max_iterations, tolerance, omega):
    """Preconditioned CG from ``x`` (padded, updated in place); returns the iterations used."""
    height, width = diag.shape
    ssor = omega > 0.0
    inverse = (omega if ssor else 1.0) / diag
    # the preconditioner's couplings scaled by ω/D of the pixel being solved (zero on the pad)
    left = np.zeros((height, width))
    up = np.zeros((height, width))
    right_s = np.zeros((height, width))
    down_s = np.zeros((height, width))
    if ssor:
        for i in range(1, height - 1):
            for j in range(1, width - 1):
                left[i, j] = right[i, j - 1] * inverse[i, j]
                up[i, j] = down[i - 1, j] * inverse[i, j]
                right_s[i, j] = right[i, j] * inverse[i, j]
                down_s[i, j] = down[i, j] * inverse[i, j]
    r = np.zeros((height, width))
    _product(diag, right, down, x, r)
    b_norm = 0.0
    r_norm = 0.0
    for i in range(1, height - 1):
        for j in range(1, width - 1):
            b_norm += rhs[i, j] * rhs[i, j]
            r[i, j] = rhs[i, j] - r[i, j]
            r_norm += r[i, j] * r[i, j]
    b_norm = max(np.sqrt(b_norm), 1e-30)
    if np.sqrt(r_norm) / b_norm < tolerance:
        return 0
    z = np.zeros((height, width))
    q = np.zeros((height, width))
    rz = _precondition(inverse, left, up, right_s, down_s, omega, r, z)
    p = z.copy()
    for iteration in range(1, max_iterations + 1):
        pq = _product(diag, right, down, p, q)
        alpha = rz / max(pq, 1e-300)
        r_norm = 0.0
        for i in range(1, height - 1):
            for j in range(1, width - 1):
                x[i, j] += alpha * p[i, j]
                r[i, j] -= alpha * q[i, j]
                r_norm += r[i, j] * r[i, j]
        if np.sqrt(r_norm) / b_norm < tolerance:
            return iteration
        rz_new = _precondition(inverse, left, up, right_s, down_s, omega, r, z)
        beta = rz_new / max(rz, 1e-300)
        rz = rz_new
        for i in range(1, height - 1):
            for j in range(1, width - 1):
                p[i, j] = z[i, j] + beta * p[i, j]
    return max_iterations


def solve_pcg(problem, init: np.ndarray, max_iterations: int = 400, tolerance: float = 1e-5,
              omega: float = SSOR_OMEGA) -> tuple[np.ndarray, int]:
    """Solve one :class:`~facenormals.fusion.FusionProblem` from ``init``: (solution float32, iterations).

    Stops when ‖b − A z‖ / ‖b‖ < ``tolerance`` (the torch solver's criterion). Pixels outside the problem's region
    have no edges and weight 1 toward ``target``, so they keep the target, as in the torch solver.
    """
    diag, right, down = _stencil(problem.w_pos, problem.ax, problem.bx, problem.wx, problem.ay, problem.by,
                                 problem.wy)
    rhs = np.pad(problem.w_pos.astype(np.float64) * problem.target, 1)
    x = np.pad(np.asarray(init, dtype=np.float64), 1)
    iterations = _pcg(diag, right, down, rhs, x, int(max_iterations), float(tolerance), float(omega))
    return x[1:-1, 1:-1].astype(np.float32), int(iterations)


def compile_kernels() -> None:
    """Run the solver once on a tiny problem (why: compiling — or loading numba's disk cache — then happens when a
    stage is built, not on the first face of a live run: ~0.5 s from the cache, ~7 s without, on the 2-core machine)."""
    from facenormals.fusion import FusionProblem

    grid, right, down = np.ones((3, 3), np.float32), np.ones((3, 2), np.float32), np.ones((2, 3), np.float32)
    problem = FusionProblem(grid, grid, right, right, right, down, down, down, np.ones((3, 3), bool))
    for omega in (SSOR_OMEGA, 0.0):
        solve_pcg(problem, grid, 2, 1e-9, omega)


__all__ = ["SSOR_OMEGA", "compile_kernels", "solve_pcg"]
