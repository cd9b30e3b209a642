"""Helmholtz's equation -lap(u) - k^2 u = f on the unit square with Dirichlet data u = g.

Discretisation: :mod:`pdediff.physics.problems.poisson`'s 5-point stencil and lifted boundary data with
the diagonal shifted by -k^2,

    (4 u[i, j] - u[i+1, j] - u[i-1, j] - u[i, j+1] - u[i, j-1]) / h^2 - k^2 u[i, j] = f[i, j].

The discrete operator has the eigenvalues lam_pq - k^2 (lam_pq those of -lap_h, the smallest
~ 2 pi^2), so it is indefinite once k^2 > lam_11 and singular when k^2 equals some lam_pq: a k
whose k^2 lies within a relative 1e-8 of an eigenvalue of the N-grid operator is rejected when
an operator for that N is built or a system solved. Conjugate gradients do not apply to the
indefinite operator; the iterative methods are MINRES and GMRES (see :data:`ITERATIVE`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import scipy.fft
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from pdediff.physics.problems.base import (DIRICHLET, SOURCE, FieldSpec, Grid, Problem, as_field, boundary_mask, check_finite,
                                   relative_norm)
from pdediff.physics.problems.poisson import Poisson, _dst_eigenvalues, _neg_laplacian
from pdediff.physics.problems.poisson import _operator as _laplacian

#: relative distance |k^2 - lam| / lam below which the N-grid operator counts as singular
SINGULAR_RTOL = 1e-8

_POISSON = Poisson()


def check_wavenumber(k) -> float:
    """Return k as a float, or raise ValueError naming k unless it is a finite number >= 0."""
    if isinstance(k, bool) or not isinstance(k, (int, float, np.integer, np.floating)) or not (
        math.isfinite(k) and k >= 0
    ):
        raise ValueError(f"k={k!r} is invalid; expected a finite wavenumber >= 0")
    return float(k)


@functools.lru_cache(maxsize=64)
def check_nonsingular(n: int, k: float) -> None:
    """Raise ValueError (naming k, the nearest eigenvalue and N) if -lap_h - k^2 is singular on N."""
    lam = _dst_eigenvalues(n)
    nearest = float(lam.flat[np.argmin(np.abs(lam - k * k))])
    if abs(nearest - k * k) <= SINGULAR_RTOL * nearest:
        raise ValueError(
            f"k={k!r} makes the Helmholtz operator singular on the N={n} grid: k^2={k * k!r} is within "
            f"a relative {SINGULAR_RTOL:g} of the discrete eigenvalue {nearest!r} of -lap_h; "
            "expected k^2 away from the eigenvalues (choose another k or N)"
        )


@functools.lru_cache(maxsize=16)
def _operator(n: int, k: float) -> sp.csc_matrix:
    check_nonsingular(n, k)
    a = (_laplacian(n) - (k * k) * sp.identity((n - 2) ** 2, format="csc")).tocsc()
    a.sort_indices()
    return a


@functools.lru_cache(maxsize=8)
def _factorisation(n: int, k: float):
    return spla.splu(_operator(n, k))


@functools.lru_cache(maxsize=8)
def shifted_laplacian_preconditioner(n: int, k: float):
    """One V-cycle of classical AMG on the positive definite shifted Laplacian -lap_h + k^2 I.

    Its inverse approximates the Helmholtz operator's inverse up to the sign of the modes with
    lam < k^2: the preconditioned spectrum (lam - k^2) / (lam + k^2) lies in (-1, 1) with a few
    negative outliers, which Krylov methods resolve in a few steps. Set up once per (N, k) and
    cached; a separate function so that a benchmark can time the set-up.
    """
    import pyamg

    shifted = (_laplacian(n) + (k * k) * sp.identity((n - 2) ** 2, format="csr")).tocsr()
    return pyamg.ruge_stuben_solver(shifted).aspreconditioner(cycle="V")


class _Converged(Exception):
    """Raised by a callback to stop SciPy's MINRES once the true residual is small enough."""


def _minres(a, b, x0, maxiter: int, atol: float, preconditioner):
    """MINRES from x0, stopped on the true residual ||b - A x|| <= atol (SciPy's own test is
    relative to ||A|| ||x||); returns (x, iterations used)."""
    state = {"count": 0, "x": x0}

    def tick(x):
        state["count"] += 1
        state["x"] = x
        if np.linalg.norm(b - a @ x) <= atol:
            raise _Converged

    try:
        x, _ = spla.minres(a, b, x0=x0, rtol=0.0, maxiter=int(maxiter), M=preconditioner, callback=tick)
    except _Converged:
        x = state["x"]
    return np.array(x, copy=True), state["count"]


def _gmres(a, b, x0, maxiter: int, atol: float, preconditioner, restart: int = 50):
    """Restarted GMRES(restart) from x0 (SciPy, left preconditioned), stopped on the true residual
    ||b - A x|| <= atol or after ``maxiter`` inner iterations; returns (x, iterations used)."""
    count = [0]

    def tick(_):
        count[0] += 1

    x, _ = spla.gmres(a, b, x0=x0, rtol=0.0, atol=atol, restart=min(restart, int(maxiter)),
                      maxiter=int(maxiter), M=preconditioner, callback=tick, callback_type="legacy")
    return x, count[0]


#: Iterative methods by name: ``(krylov, preconditioner)``, ``preconditioner(n, k)`` -> M or None.
ITERATIVE = {
    "minres": (_minres, lambda n, k: None),
    "gmres": (_gmres, shifted_laplacian_preconditioner),
    "amg": (_minres, shifted_laplacian_preconditioner),
}


def _like(name: str, value, ref: np.ndarray, ref_name: str) -> np.ndarray:
    arr = as_field(name, value)
    if arr.shape != ref.shape:
        raise ValueError(f"{name} has shape {arr.shape}; expected {ref.shape} to match {ref_name}")
    return arr


@dataclass(frozen=True)
class Helmholtz(Problem):
    """-lap(u) - k^2 u = f in (0, 1)^2, u = g on the boundary; see the module docstring.

    Args:
        k: the wavenumber, a finite number >= 0 (k = 0 is Poisson's equation).
    """

    k: float = 8.0

    name = "helmholtz"
    fields = (FieldSpec("f", SOURCE, "mixture"), FieldSpec("g", DIRICHLET, "zero", default=0.0))
    solution_fields = ("u",)
    linear = True
    iterative_methods = tuple(ITERATIVE)
    # One iteration of MINRES, GMRES or AMG-preconditioned MINRES read 1-40 % of the true error of
    # a network's answer at k = 8 (N = 64): the indefinite operator is barely contracted. The DST
    # solves the error equation exactly in O(N^2 log N).
    estimate_method = "fast"

    def __post_init__(self):
        object.__setattr__(self, "k", check_wavenumber(self.k))

    def check_grid(self, n: int) -> None:
        """Refuse a grid on which k^2 is (within a relative 1e-8) a discrete eigenvalue."""
        Grid(int(n))
        check_nonsingular(int(n), self.k)

    # ------------------------------------------------------------------ operator
    def operator(self, n: int) -> sp.csc_matrix:
        """Sparse (n-2)^2 x (n-2)^2 matrix of -lap_h - k^2 on interior unknowns (row-major order).

        Raises:
            ValueError: k^2 is (within a relative 1e-8) an eigenvalue of -lap_h on this grid.
        """
        Grid(int(n))
        return _operator(int(n), self.k)

    def eigenvalues(self, n: int) -> np.ndarray:
        """The operator's (n-2)^2 eigenvalues lam_pq - k^2, shape (n-2, n-2) indexed by (p-1, q-1)."""
        Grid(int(n))
        return _dst_eigenvalues(int(n)) - self.k**2

    def rhs(self, f: np.ndarray, g: np.ndarray) -> np.ndarray:
        """Interior right-hand side with lifted boundary data, shape (..., n-2, n-2)."""
        return _POISSON.rhs(f, g)

    def apply(self, u: np.ndarray) -> np.ndarray:
        """(-lap_h - k^2) u at the interior nodes, shape (..., n-2, n-2)."""
        u = np.asarray(u, dtype=np.float64)
        return _neg_laplacian(u) - self.k**2 * u[..., 1:-1, 1:-1]

    def residual_terms(self, u, f, g):
        """``(r, b)`` at the interior nodes for NumPy arrays or torch tensors (differentiable).

        ``r = f + lap_h(u) + k^2 u`` uses u's own boundary values; ``b`` is the right-hand side
        with lifted boundary data, the scale a relative residual ||r|| / ||b|| is measured on.
        """
        r = f[..., 1:-1, 1:-1] - _neg_laplacian(u) + self.k**2 * u[..., 1:-1, 1:-1]
        ring = g.clone() if hasattr(g, "clone") else np.array(g, copy=True)
        ring[..., 1:-1, 1:-1] = 0
        b = f[..., 1:-1, 1:-1] - _neg_laplacian(ring)
        return r, b

    # ------------------------------------------------------------------ checks
    def _inputs(self, f, g):
        f = as_field("f", f)
        g = np.zeros_like(f) if g is None else _like("g", g, f, "f")
        return f, g

    def residual(self, u, f, g=None) -> np.ndarray:
        """Residual of a candidate solution, same shape as ``u``.

        Interior nodes hold ``f + lap_h(u) + k^2 u``; boundary nodes hold ``u - g``.
        """
        f, g = self._inputs(f, g)
        u = _like("u", u, f, "f")
        out = u - g
        out[..., 1:-1, 1:-1] = f[..., 1:-1, 1:-1] - self.apply(u)
        return out

    def relative_residual(self, u, f, g=None) -> np.ndarray:
        """Per-sample ||rhs - A u_int|| / ||rhs|| over the interior (lifted boundary data)."""
        f, g = self._inputs(f, g)
        u = _like("u", u, f, "f")
        p = np.array(u, dtype=np.float64, copy=True)
        p[..., boundary_mask(p.shape[-1])] = 0.0
        b = self.rhs(f, g)
        r = b - self.apply(p)
        return relative_norm(r, b)

    # ------------------------------------------------------------------ solves
    def reference_solve(self, f, g=None) -> np.ndarray:
        """Exact discrete solution by SciPy sparse LU (one cached factorisation per (N, k)).

        Args:
            f: (N, N) or (B, N, N) source; boundary values are ignored.
            g: Dirichlet data of the same shape (None: zero); interior values are ignored.

        Returns:
            u of the same shape as f, float64.

        Raises:
            ValueError: bad fields, or k^2 at an eigenvalue of the N-grid operator.
        """
        f, g = self._inputs(f, g)
        scaled, m = self.scaled({"f": f, "g": g})  # no overflow or underflow at any honoured size
        n = f.shape[-1]
        b = self.rhs(scaled["f"], scaled["g"])
        batch = b.reshape(-1, (n - 2) ** 2)
        u = _factorisation(n, self.k).solve(np.ascontiguousarray(batch.T)).T
        return check_finite("u", self._assemble(u.reshape(b.shape) * m, g))

    def fast_solve(self, f, g=None) -> np.ndarray:
        """Exact discrete solution by the type-I discrete sine transform, O(N^2 log N).

        The interior operator is diagonal in the DST-I basis with eigenvalues
        lam_p + lam_q - k^2, lam_p = (2 - 2 cos(pi p / (N - 1))) / h^2.
        """
        f, g = self._inputs(f, g)
        scaled, m = self.scaled({"f": f, "g": g})
        n = f.shape[-1]
        check_nonsingular(n, self.k)
        b = self.rhs(scaled["f"], scaled["g"])
        b_hat = scipy.fft.dstn(b, type=1, axes=(-2, -1))
        u = scipy.fft.idstn(b_hat / (_dst_eigenvalues(n) - self.k**2), type=1, axes=(-2, -1))
        return check_finite("u", self._assemble(u * m, g))

    def iterative_solve(self, u0, f, g=None, *, maxiter: int = 1000, rtol: float = 1e-8,
                        method: str = "amg"):
        """A Krylov method for the (indefinite) interior system started from ``u0``.

        Used to polish a network's answer: at most ``maxiter`` iterations from ``u0`` (its
        boundary values are replaced by ``g``). Stops once ||b - A u|| <= max(rtol, 1e-15) ||b||
        (the true residual, for every method).

        Args:
            method: a key of :data:`ITERATIVE`:
                ``"minres"``: SciPy's MINRES, unpreconditioned;
                ``"gmres"``: SciPy's restarted GMRES(50), left-preconditioned by one AMG V-cycle
                on the shifted Laplacian -lap_h + k^2 I (:func:`shifted_laplacian_preconditioner`);
                ``"amg"``: MINRES preconditioned by the same (symmetric positive definite)
                V-cycle, the fastest of the three.
                The AMG hierarchy is built once per (N, k) and cached.

        Returns:
            ``(u, iterations)``: u of the shape of f, and the iterations each sample took (an int
            array of shape (B,) or a 0-d array).
        """
        if method not in ITERATIVE:
            raise ValueError(f"method={method!r} is unknown; expected one of {sorted(ITERATIVE)}")
        if not isinstance(maxiter, (int, np.integer)) or isinstance(maxiter, bool) or maxiter < 0:
            raise ValueError(f"maxiter={maxiter!r} is invalid; expected an integer >= 0")
        if not isinstance(rtol, (int, float, np.floating)) or isinstance(rtol, bool) or not rtol >= 0:
            raise ValueError(f"rtol={rtol!r} is invalid; expected a number >= 0")
        f, g = self._inputs(f, g)
        u0 = _like("u0", u0, f, "f")
        n = f.shape[-1]
        a = _operator(n, self.k)
        krylov, make_preconditioner = ITERATIVE[method]
        preconditioner = make_preconditioner(n, self.k)
        b = self.rhs(f, g).reshape(-1, (n - 2) ** 2)
        x0 = u0[..., 1:-1, 1:-1].reshape(-1, (n - 2) ** 2)
        out = np.empty_like(b)
        iters = np.zeros(len(b), dtype=np.int64)
        for s in range(len(b)):
            bnorm = float(np.linalg.norm(b[s]))
            # below 1e-15 ||b|| there is only round-off (and SciPy's next step would be 0 / 0)
            atol = max(float(rtol), 1e-15) * bnorm
            if bnorm == 0:
                out[s] = 0.0
            elif maxiter == 0 or np.linalg.norm(b[s] - a @ x0[s]) <= atol:
                out[s] = x0[s]
            else:
                out[s], iters[s] = krylov(a, b[s], x0[s], maxiter, atol, preconditioner)
        u = self._assemble(out.reshape(f[..., 1:-1, 1:-1].shape), g)
        return u, iters.reshape(f.shape[:-2])
