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


def pcg(a, preconditioner, b: np.ndarray, x0: np.ndarray, tol: float, maxiter: int,
        segments: int = 1, fixed=0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Preconditioned conjugate gradients from ``x0`` for every column of ``b`` (n, B), each
    system stopped on its own once a step is small: ||x_{k+1} - x_k|| <= tol ||x_{k+1}||.

    A step of a well-preconditioned CG (a multigrid V-cycle contracts the error about tenfold an
    iteration) is about the error of the iterate it starts from, so the answer returned is one
    iteration past the first whose error read <= tol, and the last step's relative size is an
    upper estimate of its error. Its first step is :func:`pcg_step`'s, the error estimate's.

    Args:
        a: the (n, n) operator (anything with ``@``), symmetric positive definite.
        preconditioner: ``r -> M r`` on (n, B) blocks, symmetric positive definite.
        b, x0: (n, B) right-hand sides and starts.
        tol: the relative step that stops a system, > 0.
        maxiter: the most iterations of any system.
        segments: the rows are that many independent systems of equal size stacked (a
            block-diagonal ``a``), each with its own step lengths.
        fixed: the squared norm of each system's part that does not iterate (e.g. a field's
            Dirichlet ring), counted in the size of its answer; a scalar or (segments, B).

    Returns:
        ``(x, iterations, step)``: the iterates (n, B), and per system (segments, B) the
        iterations taken and the last step's relative size (0 for a system with b = 0 and
        x0 = 0, which takes none).
    """
    shape = (segments, -1, b.shape[-1])

    def dot(u, v):
        return np.einsum("sij,sij->sj", u.reshape(shape), v.reshape(shape))

    def norm(u):
        return np.sqrt(dot(u, u))

    def scale(c, u):  # each system's rows of u (n, B) times its c (segments, B)
        return (c[:, None, :] * u.reshape(shape)).reshape(u.shape)

    x = np.array(x0, dtype=np.float64, copy=True)
    r = b - a @ x
    z = preconditioner(r)
    p = z.copy()
    rz = dot(r, z)
    iterations = np.zeros((segments, b.shape[-1]), dtype=np.int64)
    step = np.zeros((segments, b.shape[-1]))
    active = rz > 0
    for _ in range(int(maxiter)):
        if not active.any():
            break
        ap = a @ p
        pap = dot(p, ap)
        alpha = np.divide(rz, pap, out=np.zeros_like(rz), where=active & (pap > 0))
        dx = scale(alpha, p)
        x += dx
        with np.errstate(divide="ignore", invalid="ignore"):  # 0 / 0: a zero answer, nothing moved
            step = np.where(active, np.nan_to_num(norm(dx) / np.sqrt(dot(x, x) + fixed), nan=0.0, posinf=np.inf),
                            step)
        iterations += active
        active &= (step > tol) & (alpha != 0)
        if not active.any():
            break
        r -= scale(alpha, ap)
        z = preconditioner(r)
        rz_new = dot(r, z)
        beta = np.divide(rz_new, rz, out=np.zeros_like(rz), where=active & (rz > 0))
        active &= rz_new > 0
        p = z + scale(beta, p)
        rz = rz_new
    return x, iterations, step
