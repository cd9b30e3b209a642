"""A multigrid V-cycle that acts on many right-hand sides at once, and one preconditioned
conjugate-gradient step with it: the error estimate's work, batched.

pyamg builds the hierarchy (its interpolation P, restriction R = P^T and Galerkin operators
A_{l+1} = R A_l P); its own cycle takes one vector at a time with Gauss-Seidel, a C loop that
cannot be batched. Here the smoother is weighted Jacobi, x += omega D^-1 (r - A x), with
omega = 4 / (3 rho(D^-1 A)) on every level (the smoothing weight pyamg uses), one sweep before
and one after the coarse correction: the cycle is then a symmetric positive-definite
preconditioner for a symmetric positive-definite A, and every step is a sparse matrix times an
(n, B) block, so a batch of B samples costs about as much Python as one.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def _spectral_radius(a: sp.csr_matrix, dinv: np.ndarray, iterations: int = 30) -> float:
    """Largest eigenvalue of D^-1 A by power iteration (a deterministic start)."""
    x = np.cos(np.arange(a.shape[0]) * 0.7) + 1.5
    value = 1.0
    for _ in range(iterations):
        y = dinv * (a @ x)
        value = float(np.linalg.norm(y) / np.linalg.norm(x))
        x = y / np.linalg.norm(y)
    return value


class BatchedVCycle:
    """``M(r)``: one V-cycle applied to each column of ``r`` (n, B) (or to ``r`` of shape (n,)).

    Args:
        hierarchy: a pyamg ``MultilevelSolver`` of a symmetric positive-definite matrix whose
            levels carry ``A``, ``P`` and ``R``.
    """

    def __init__(self, hierarchy):
        self.levels = []
        for level in hierarchy.levels[:-1]:
            a = sp.csr_matrix(level.A)
            dinv = 1.0 / a.diagonal()
            omega = 4.0 / (3.0 * _spectral_radius(a, dinv))
            self.levels.append((a, (omega * dinv)[:, None], sp.csr_matrix(level.P), sp.csr_matrix(level.R)))
        self.coarse = np.linalg.pinv(np.asarray(hierarchy.levels[-1].A.todense()))

    def __call__(self, r: np.ndarray) -> np.ndarray:
        flat = r.ndim == 1
        out = self._cycle(0, r[:, None] if flat else r)
        return out[:, 0] if flat else out

    def _cycle(self, level: int, r: np.ndarray) -> np.ndarray:
        if level == len(self.levels):
            return self.coarse @ r
        a, wdinv, p, restrict = self.levels[level]
        x = wdinv * r
        x += p @ self._cycle(level + 1, restrict @ (r - a @ x))
        x += wdinv * (r - a @ x)
        return x


def pcg_step(a: sp.spmatrix, preconditioner, b: np.ndarray, x0: np.ndarray) -> np.ndarray:
    """The first step of preconditioned conjugate gradients from ``x0`` for every column of
    ``b`` (n, B): ``x0 + alpha z`` with ``r = b - A x0``, ``z = M r``,
    ``alpha = (r . z) / (z . A z)`` (the exact line minimiser of the A-norm error along z).
    A column with r = 0 is returned unchanged."""
    r = b - a @ x0
    z = preconditioner(r)
    rz = np.einsum("ij,ij->j", r, z)
    zaz = np.einsum("ij,ij->j", z, a @ z)
    alpha = np.divide(rz, zaz, out=np.zeros_like(rz), where=zaz > 0)
    return x0 + alpha * z
