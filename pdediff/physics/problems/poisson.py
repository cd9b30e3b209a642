"""Poisson's equation -lap(phi) = rho on the unit square with Dirichlet data phi = g.

Discretisation: the 5-point stencil on the interior nodes,
    (4 phi[i, j] - phi[i+1, j] - phi[i-1, j] - phi[i, j+1] - phi[i, j-1]) / h^2 = rho[i, j],
with boundary nodes fixed to g. Boundary values of g enter the interior equations as a lifted
right-hand side; values of rho on the boundary ring are ignored, as are interior values of g.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.fft
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from pdediff.physics.problems.base import (check_polish_limits, DIRICHLET, SOURCE, FieldSpec, Grid, Problem, as_field, boundary_mask, relative_norm,
                                   check_finite, sample_magnitude)


@functools.lru_cache(maxsize=16)
def _laplacian_1d(m: int, h: float) -> sp.csr_matrix:
    main = np.full(m, 2.0 / h**2)
    off = np.full(m - 1, -1.0 / h**2)
    return sp.diags([off, main, off], [-1, 0, 1], format="csr")


@functools.lru_cache(maxsize=16)
def _operator(n: int) -> sp.csr_matrix:
    grid = Grid(n)
    m = n - 2
    t = _laplacian_1d(m, grid.h)
    eye = sp.identity(m, format="csr")
    a = (sp.kron(eye, t) + sp.kron(t, eye)).tocsc()
    a.sort_indices()
    return a


@functools.lru_cache(maxsize=8)
def _factorisation(n: int):
    return spla.splu(_operator(n))


@functools.lru_cache(maxsize=16)
def _dst_eigenvalues(n: int) -> np.ndarray:
    """Eigenvalues of the interior 5-point operator in the DST-I basis, shape (n-2, n-2)."""
    h = 1.0 / (n - 1)
    k = np.arange(1, n - 1)
    lam = (2.0 - 2.0 * np.cos(np.pi * k / (n - 1))) / h**2
    out = lam[:, None] + lam[None, :]
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=8)
def laplacian_hierarchy(n: int):
    """pyamg's classical (Ruge-Stueben) AMG hierarchy of the N-node interior Laplacian (cached
    per N); its finest level's ``A`` is the operator in CSR form."""
    import pyamg

    return pyamg.ruge_stuben_solver(_operator(n).tocsr())


@functools.lru_cache(maxsize=8)
def _amg_preconditioner(n: int):
    """One V-cycle of :func:`laplacian_hierarchy` (pyamg's Gauss-Seidel cycle, one vector)."""
    return laplacian_hierarchy(n).aspreconditioner(cycle="V")


@functools.lru_cache(maxsize=8)
def _batched_vcycle(n: int):
    """The same hierarchy as :func:`_amg_preconditioner`, cycled on many samples at once."""
    from pdediff.maths.multigrid import BatchedVCycle

    return BatchedVCycle(laplacian_hierarchy(n))


#: The largest start ``phi0`` that :meth:`Poisson.iterative_solve` iterates from, as a multiple of
#: the sample's largest |rho| or |g|: beyond it CG's inner products overflow float64.
PHI0_RATIO_MAX = 1e100

#: Preconditioners of the conjugate-gradient polish, by name: ``n -> M`` (None: plain CG).
ITERATIVE = {
    "cg": lambda n: None,
    "amg": _amg_preconditioner,
}


def _neg_laplacian(p):
    """5-point -lap_h at the interior nodes of (..., n, n) NumPy arrays or torch tensors."""
    h2 = (1.0 / (p.shape[-1] - 1)) ** 2
    return (
        4.0 * p[..., 1:-1, 1:-1] - p[..., 2:, 1:-1] - p[..., :-2, 1:-1] - p[..., 1:-1, 2:] - p[..., 1:-1, :-2]
    ) / h2


class Poisson(Problem):
    """-lap(phi) = rho in (0, 1)^2, phi = g on the boundary; see the module docstring."""

    name = "poisson"
    fields = (FieldSpec("rho", SOURCE, "mixture"), FieldSpec("g", DIRICHLET, "zero", default=0.0))
    solution_fields = ("phi",)
    linear = True
    iterative_methods = tuple(ITERATIVE)
    # one conjugate-gradient step preconditioned by a weighted-Jacobi V-cycle on the whole batch
    # (pdediff.maths.multigrid): on 8 source families it read 0.90-1.03 of the true error
    # (python -m benchmarks.tolerance; pyamg's Gauss-Seidel cycle, "amg": 0.97-0.99), and its
    # cost is within the timing noise of the network where "amg" took 17 % (benchmarks.speed)
    estimate_method = "vcycle"
    guess_method = "vcycle"  # one batched V-cycle-preconditioned CG step from zero

    # ------------------------------------------------------------------ operator
    def operator(self, n: int) -> sp.csc_matrix:
        """Sparse (n-2)^2 x (n-2)^2 matrix of -lap_h on interior unknowns (row-major order)."""
        Grid(int(n))
        return _operator(int(n))

    def eigenvalues(self, n: int) -> np.ndarray:
        """The interior operator's eigenvalues in the DST-I basis, shape (n-2, n-2) indexed by (p-1, q-1)."""
        Grid(int(n))
        return _dst_eigenvalues(int(n))

    def rhs(self, rho: np.ndarray, g: np.ndarray) -> np.ndarray:
        """Interior right-hand side with lifted boundary data, shape (..., n-2, n-2)."""
        n = rho.shape[-1]
        h2 = (1.0 / (n - 1)) ** 2
        b = np.array(rho[..., 1:-1, 1:-1], dtype=np.float64, copy=True)
        b[..., 0, :] += g[..., 0, 1:-1] / h2
        b[..., -1, :] += g[..., -1, 1:-1] / h2
        b[..., :, 0] += g[..., 1:-1, 0] / h2
        b[..., :, -1] += g[..., 1:-1, -1] / h2
        return b

    def apply(self, phi: np.ndarray) -> np.ndarray:
        """-lap_h(phi) at the interior nodes, shape (..., n-2, n-2)."""
        return _neg_laplacian(np.asarray(phi, dtype=np.float64))

    def residual_terms(self, phi, rho, g):
        """``(r, b)`` at the interior nodes for NumPy arrays or torch tensors (differentiable).

        ``r = rho + lap_h(phi)`` uses phi's own boundary values; ``b`` is the right-hand side
        with lifted boundary data, the scale a relative residual ||r|| / ||b|| is measured on.
        """
        r = rho[..., 1:-1, 1:-1] - _neg_laplacian(phi)
        ring = g.clone() if hasattr(g, "clone") else np.array(g, copy=True)
        ring[..., 1:-1, 1:-1] = 0
        b = rho[..., 1:-1, 1:-1] - _neg_laplacian(ring)
        return r, b

    # ------------------------------------------------------------------ checks
    def _inputs(self, rho, g):
        rho = as_field("rho", rho)
        if g is None:
            g = np.zeros_like(rho, dtype=np.float64)
        else:
            g = as_field("g", g, like=rho)
        return rho, g

    def _scaled(self, rho, g):
        """``(rho / m, g / m, m)`` with m (shape (..., 1, 1)) the largest acting |value| of each
        sample, so that the solves never overflow (see :data:`pdediff.physics.problems.base.MAGNITUDE_MAX`)."""
        ring = boundary_mask(rho.shape[-1])
        m = sample_magnitude({"rho": rho, "g": g}, {"rho": ~ring, "g": ring})
        m = np.where(m == 0, 1.0, m)[..., None, None]
        # values where a field does not act are ignored (and may be far larger than m)
        return np.where(ring, 0.0, rho) / m, np.where(ring, g, 0.0) / m, m

    def residual(self, phi, rho, g=None) -> np.ndarray:
        """Residual of a candidate solution, same shape as ``phi``.

        Interior nodes hold ``rho + lap_h(phi)``; boundary nodes hold ``phi - g``.

        Raises:
            ValueError: naming phi when the residual itself lies beyond the float64 range.
        """
        rho, g = self._inputs(rho, g)
        phi = np.asarray(as_field("phi", phi, like=rho), dtype=np.float64)
        ring = boundary_mask(phi.shape[-1])
        out = np.where(ring, phi - np.where(ring, g, 0.0), 0.0)
        _, _, m = self._scaled(rho, g)
        # divide by the larger of the data's and phi's own magnitude: phi / m alone may overflow
        # although the residual does not
        s = np.maximum(m, np.max(np.abs(phi), axis=(-2, -1), keepdims=True, initial=0.0))
        with np.errstate(over="ignore"):
            out[..., 1:-1, 1:-1] = (np.where(ring, 0.0, rho)[..., 1:-1, 1:-1] / s - self.apply(phi / s)) * s
        return check_finite("the residual of phi", out)

    def relative_residual(self, phi, rho, g=None) -> np.ndarray:
        """Per-sample ||rhs - A phi_int|| / ||rhs|| over the interior (lifted boundary data)."""
        rho, g = self._inputs(rho, g)
        phi = as_field("phi", phi, like=rho)
        rho, g, m = self._scaled(rho, g)
        p = np.array(phi / m, dtype=np.float64, copy=True)
        p[..., boundary_mask(p.shape[-1])] = 0.0
        b = self.rhs(rho, g)
        r = b - self.apply(p)
        return relative_norm(r, b)

    # ------------------------------------------------------------------ solves
    def reference_solve(self, rho, g=None) -> np.ndarray:
        """Exact discrete solution by SciPy sparse LU (one cached factorisation per N).

        Args:
            rho: (N, N) or (B, N, N) source; boundary values are ignored.
            g: Dirichlet data of the same shape (None: zero); interior values are ignored.

        Returns:
            phi of the same shape as rho, float64.
        """
        rho, g = self._inputs(rho, g)
        rho_s, g_s, m = self._scaled(rho, g)
        n = rho.shape[-1]
        b = self.rhs(rho_s, g_s)
        batch = b.reshape(-1, (n - 2) ** 2)
        u = _factorisation(n).solve(np.ascontiguousarray(batch.T)).T
        return check_finite("phi", self._assemble(u.reshape(b.shape) * m, g))

    def fast_solve(self, rho, g=None) -> np.ndarray:
        """Exact discrete solution by the type-I discrete sine transform, O(N^2 log N).

        The interior 5-point operator is diagonal in the DST-I basis with eigenvalues
        lam_k + lam_l, lam_k = (2 - 2 cos(pi k / (N - 1))) / h^2.
        """
        rho, g = self._inputs(rho, g)
        rho_s, g_s, m = self._scaled(rho, g)
        n = rho.shape[-1]
        b = self.rhs(rho_s, g_s)
        b_hat = scipy.fft.dstn(b, type=1, axes=(-2, -1))
        u = scipy.fft.idstn(b_hat / _dst_eigenvalues(n), type=1, axes=(-2, -1))
        return check_finite("phi", self._assemble(u * m, g))

    def iterative_solve(self, phi0, rho, g=None, *, maxiter: int = 1000, rtol: float = 1e-8,
                        method: str = "cg"):
        """A classical iterative method on the interior system started from ``phi0``.

        Used to polish a network's answer: ``maxiter`` iterations from ``phi0`` (its boundary
        values are replaced by ``g``). Stops early once ||b - A u|| <= max(rtol, 1e-15) ||b||
        (below that there is only round-off).

        Args:
            method: a key of :data:`ITERATIVE`: ``"cg"`` (SciPy's conjugate gradients) or
                ``"amg"`` (SciPy's conjugate gradients preconditioned by one V-cycle of pyamg's
                classical algebraic multigrid; the hierarchy is built once per N and cached).

        Returns:
            ``(phi, iterations)``: phi of the shape of rho, and the iterations each sample took
            (an int array of shape (B,) or a 0-d array).

        Raises:
            ValueError: naming the argument: a bad field, method, maxiter or rtol, or a ``phi0``
                more than :data:`PHI0_RATIO_MAX` times larger than its sample's rho and g.
        """
        if not isinstance(method, str) or method not in ITERATIVE:
            raise ValueError(f"method={method!r} is unknown; expected one of {sorted(ITERATIVE)}")
        if not isinstance(maxiter, (int, np.integer)) or isinstance(maxiter, bool) or maxiter < 0:
            raise ValueError(f"maxiter={maxiter!r} is invalid; expected an integer >= 0")
        if not isinstance(rtol, (int, float, np.floating)) or isinstance(rtol, bool) or not rtol >= 0:
            raise ValueError(f"rtol={rtol!r} is invalid; expected a number >= 0")
        rho, g = self._inputs(rho, g)
        phi0 = as_field("phi0", phi0, like=rho)
        rho_s, g_s, m = self._scaled(rho, g)
        n = rho.shape[-1]
        a = _operator(n)
        preconditioner = ITERATIVE[method](n)
        b = self.rhs(rho_s, g_s).reshape(-1, (n - 2) ** 2)
        with np.errstate(over="ignore"):
            u0 = (np.asarray(phi0, dtype=np.float64) / m)[..., 1:-1, 1:-1].reshape(-1, (n - 2) ** 2)
        size = np.max(np.abs(u0), axis=1, initial=0.0)
        far = np.any(b != 0, axis=1) & ~(size <= PHI0_RATIO_MAX)
        if np.any(far):
            k = int(np.flatnonzero(far)[0])
            peak = float(np.max(np.abs(phi0.reshape(-1, n * n)[k])))
            raise ValueError(
                f"phi0 has largest magnitude {peak:.3g} (sample {k}), more than {PHI0_RATIO_MAX:g} times that of "
                f"rho and g ({float(m.reshape(-1)[k]):.3g}); expected a start of the solution's size (or zeros)"
            )
        out = np.empty_like(b)
        iters = np.zeros(len(b), dtype=np.int64)
        for k in range(len(b)):
            out[k], iters[k] = _cg(a, b[k], u0[k], maxiter, rtol, preconditioner)
        phi = self._assemble(out.reshape(rho[..., 1:-1, 1:-1].shape) * m, g)
        return check_finite("phi", phi), iters.reshape(rho.shape[:-2])

    def estimate_step(self, solution, *fields, method: str) -> np.ndarray:
        """``"vcycle"``: one conjugate-gradient step from ``solution`` preconditioned by one
        batched V-cycle (:mod:`pdediff.maths.multigrid`) for all samples at once; other methods as
        :meth:`Problem.estimate_step`."""
        if method != "vcycle":
            return super().estimate_step(solution, *fields, method=method)
        from pdediff.maths.multigrid import pcg_step

        rho, g, b, u0, _, m = self._columns(solution, *fields)
        n = rho.shape[-1]
        u1 = pcg_step(laplacian_hierarchy(n).levels[0].A, _batched_vcycle(n), b, u0)
        return self._assemble(u1.T.reshape(rho[..., 1:-1, 1:-1].shape) * m, g)

    def _columns(self, solution, *fields):
        """The batch as columns of the interior system: ``(rho, g, b, u0, g_s, m)`` with b and
        the start u0 of shape ((N-2)^2, B), scaled by each sample's magnitude m (g_s: g scaled)."""
        rho, g = self._inputs(*fields)
        phi = as_field("solution", solution, like=rho)
        rho_s, g_s, m = self._scaled(rho, g)
        size = (rho.shape[-1] - 2) ** 2
        b = self.rhs(rho_s, g_s).reshape(-1, size).T
        with np.errstate(over="ignore", invalid="ignore"):
            u0 = (np.asarray(phi, dtype=np.float64) / m)[..., 1:-1, 1:-1].reshape(-1, size).T
        if not np.all(np.isfinite(u0)):
            raise ValueError("solution is not finite after scaling by its sample's rho and g; expected a finite "
                             "solution of the size of the exact one")
        return rho, g, b, u0, g_s, m

    def polish_to_tolerance(self, solution, rho, g=None, *, tol: float, maxiter: int, method: str | None = None):
        """``"vcycle"``: one continued conjugate-gradient run for the whole batch, preconditioned
        by the batched V-cycle, each sample stopped once its step is <= ``tol`` of its answer
        (:func:`pdediff.maths.multigrid.pcg`); other methods as :meth:`Problem.polish_to_tolerance`."""
        method = method or self.polish_method or self.estimate_method
        if method != "vcycle":
            return super().polish_to_tolerance(solution, rho, g, tol=tol, maxiter=maxiter, method=method)
        from pdediff.maths.multigrid import pcg

        check_polish_limits(tol, maxiter)
        rho, g, b, u0, g_s, m = self._columns(solution, rho, g)
        n = rho.shape[-1]
        ring = np.sum(np.where(boundary_mask(n), g_s, 0.0) ** 2, axis=(-2, -1)).reshape(1, -1)
        u, iters, step = pcg(laplacian_hierarchy(n).levels[0].A, _batched_vcycle(n), b, u0, tol, maxiter,
                             fixed=ring)
        shape = rho.shape[:-2]
        phi = self._assemble(u.T.reshape(rho[..., 1:-1, 1:-1].shape) * m, g)
        return check_finite("phi", phi), step.reshape(shape), iters.reshape(shape)


def _cg(a, b, x0, maxiter: int, rtol: float, preconditioner=None):
    """SciPy's (preconditioned) conjugate gradients from ``x0``; returns (x, iterations used).

    CG's recursively updated residual drifts from the true ``b - A x`` by round-off of order
    eps ||A x0||, so from a start much larger than the solution it stops early on a residual it
    does not have; the true residual is checked and CG restarted from where it stopped while it
    falls short and iterations remain.
    """
    if not np.any(b):
        return np.zeros_like(b), 0
    count = [0]

    def tick(_):
        count[0] += 1

    if maxiter <= 0:
        return x0, 0
    # atol: a residual at round-off level (an exact start, or a converged rtol = 0 run) would make
    # SciPy's next step 0/0; there is nothing left to gain below it
    norm_b = float(np.linalg.norm(b))
    atol = 1e-15 * norm_b
    x = x0
    while count[0] < maxiter:
        before = count[0]
        x, _ = spla.cg(a, b, x0=x, rtol=rtol, atol=atol, maxiter=int(maxiter - count[0]), M=preconditioner,
                       callback=tick)
        if count[0] == before or np.linalg.norm(b - a @ x) <= max(rtol * norm_b, atol):
            break
    return x, count[0]
