"""A multigrid V-cycle that acts on many right-hand sides at once, and one preconditioned
conjugate-gradient step with it: the error estimate's work, batched.

pyamg builds the hierarchy (its interpolation P, restriction R = P^T and Galerkin operators
A_{l+1} = R A_l P); its own cycle takes one vector at a time with Gauss-Seidel, a C loop that
cannot be batched. Here the smoother is weighted Jacobi, x += omega D^-1 (r - A x), with
omega = 4 / (3 rho(D^-1 A)) on every level (the smoothing weight pyamg uses, with rho bounded by
Gershgorin's row sums instead of estimated by power iteration), one sweep before
and one after the coarse correction: the cycle is then a symmetric positive-definite
preconditioner for a symmetric positive-definite A, and every step is a sparse matrix times an
(n, B) block, so a batch of B samples costs about as much Python as one.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla


def _gershgorin_bound(a: sp.csr_matrix, dinv: np.ndarray) -> float:
    """An upper bound of the spectral radius of D^-1 A: the largest row sum of |D^-1 A|
    (2 for the 5-point Laplacian, whose radius tends to 2 as N grows)."""
    return float(np.max(dinv * np.asarray(abs(a).sum(axis=1)).ravel()))


class BatchedVCycle:
    """``M(r)``: one V-cycle applied to each column of ``r`` (n, B) (or to ``r`` of shape (n,)).

    Args:
        hierarchy: a pyamg ``MultilevelSolver`` of a symmetric positive-definite matrix whose
            levels carry ``A``, ``P`` and ``R``.
    """

    def __init__(self, hierarchy):
        levels = hierarchy.levels
        self._setup([(lvl.A, lvl.P, lvl.R) for lvl in levels[:-1]], levels[-1].A)

    @classmethod
    def galerkin(cls, a: sp.spmatrix, interpolations) -> "BatchedVCycle":
        """The cycle for ``a`` on a hierarchy given by its interpolations (fine to coarse), with
        Galerkin coarse operators P^T A P: e.g. the interpolations of a constant-coefficient
        operator's AMG reused for a variable-coefficient one on the same grid, no set-up."""
        out = []
        a = sp.csr_matrix(a)
        for p in interpolations:
            p = sp.csr_matrix(p)
            out.append((a, p, p.T.tocsr()))
            a = (p.T @ a @ p).tocsr()
        obj = cls.__new__(cls)
        obj._setup(out, a)
        return obj

    def _setup(self, levels, coarsest) -> None:
        self.levels = []
        for a, p, r in levels:
            a = sp.csr_matrix(a)
            dinv = 1.0 / a.diagonal()
            omega = 4.0 / (3.0 * _gershgorin_bound(a, dinv))
            self.levels.append((a, (omega * dinv)[:, None], sp.csr_matrix(p), sp.csr_matrix(r)))
        self.coarse = spla.splu(sp.csc_matrix(coarsest))

    def __call__(self, r: np.ndarray) -> np.ndarray:
        flat = r.ndim == 1
        out = self._cycle(0, r[:, None] if flat else r)
        return out[:, 0] if flat else out

    def _cycle(self, level: int, r: np.ndarray) -> np.ndarray:
        if level == len(self.levels):
            return self.coarse.solve(np.ascontiguousarray(r))
        a, wdinv, p, restrict = self.levels[level]
        x = wdinv * r
        x += p @ self._cycle(level + 1, restrict @ (r - a @ x))
        x += wdinv * (r - a @ x)
        return x


def pcg_step(a: sp.spmatrix, preconditioner, b: np.ndarray, x0: np.ndarray, segments: int = 1) -> np.ndarray:
    """The first step of preconditioned conjugate gradients from ``x0`` for every column of
    ``b`` (n, B): ``x0 + alpha z`` with ``r = b - A x0``, ``z = M r``,
    ``alpha = (r . z) / (z . A z)`` (the exact line minimiser of the A-norm error along z).

    ``segments``: the rows are that many independent systems of equal size stacked (a
    block-diagonal ``a``), each with its own alpha. A system with r = 0 is returned unchanged."""
    r = b - a @ x0
    z = preconditioner(r)
    az = a @ z
    shape = (segments, -1, b.shape[-1])
    rz = np.einsum("sij,sij->sj", r.reshape(shape), z.reshape(shape))
    zaz = np.einsum("sij,sij->sj", z.reshape(shape), az.reshape(shape))
    alpha = np.divide(rz, zaz, out=np.zeros_like(rz), where=zaz > 0)
    return x0 + (alpha[:, None, :] * z.reshape(shape)).reshape(z.shape)
