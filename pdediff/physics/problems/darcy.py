"""Darcy flow -div(a grad u) = f on the unit square with Dirichlet data u = g.

Discretisation: the 5-point flux (finite-volume) form on the interior nodes. At an interior node
P with neighbours E, W, N, S,

    (1 / h^2) * sum_{nb in E, W, N, S} a_face(P, nb) * (u_P - u_nb) = f_P,

with the face coefficient the harmonic mean a_face = 2 a_P a_nb / (a_P + a_nb) of the two node
values (exact for a coefficient that jumps between nodes, second order for a smooth one). The
matrix is symmetric positive definite for every a > 0. Boundary nodes are fixed to g and enter
the interior equations as a lifted right-hand side; the coefficient a is needed at every node,
the ring included (faces next to the ring use it), while values of f on the ring and interior
values of g are ignored. With a = 1 the scheme is :class:`~pdediff.physics.problems.poisson.Poisson`'s.

Unlike Poisson, the operator depends on the sample (through a): every solve factorises or sets
up its own matrix; nothing is cached across samples.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from pdediff.physics.problems.base import (check_polish_limits, COEFFICIENT, DIRICHLET, SOURCE, FieldSpec, Problem, as_field, boundary_mask, check_finite,
                                   relative_norm)
from pdediff.physics.problems.poisson import _cg, laplacian_hierarchy


def amg_preconditioner(matrix: sp.spmatrix, kind: str = "ruge_stuben"):
    """Set up one V-cycle of pyamg's algebraic multigrid on ``matrix`` as a preconditioner.

    This is the whole set-up cost of the ``"amg"`` method (one call per sample); it is a
    separate function so that a benchmark can time it on its own.

    Args:
        matrix: a sparse symmetric positive definite matrix (e.g. :meth:`Darcy.operator`).
        kind: ``"ruge_stuben"`` (classical AMG) or ``"smoothed_aggregation"``.

    Returns:
        A SciPy ``LinearOperator`` applying one V-cycle.
    """
    import pyamg

    builders = {"ruge_stuben": pyamg.ruge_stuben_solver, "smoothed_aggregation": pyamg.smoothed_aggregation_solver}
    if kind not in builders:
        raise ValueError(f"kind={kind!r} is unknown; expected one of {sorted(builders)}")
    return builders[kind](sp.csr_matrix(matrix)).aspreconditioner(cycle="V")


_AMG_CACHE: "OrderedDict[bytes, object]" = OrderedDict()
_AMG_CACHE_SIZE = 64


def cached_amg_preconditioner(matrix: sp.spmatrix):
    """:func:`amg_preconditioner`, remembered for the last 64 operators by a hash of their values,
    so that an error estimate and the polish that follows it (``solve(tol=...)``, one iteration
    at a time) set up each sample's AMG once."""
    csr = sp.csr_matrix(matrix)
    key = hashlib.blake2b(np.ascontiguousarray(csr.data).tobytes(), digest_size=16,
                          person=str(csr.shape).encode()[:16]).digest()
    if key in _AMG_CACHE:
        _AMG_CACHE.move_to_end(key)
        return _AMG_CACHE[key]
    preconditioner = amg_preconditioner(csr)
    _AMG_CACHE[key] = preconditioner
    if len(_AMG_CACHE) > _AMG_CACHE_SIZE:
        _AMG_CACHE.popitem(last=False)
    return preconditioner


def clear_amg_cache() -> None:
    """Forget the remembered AMG set-ups (a benchmark timing the set-up calls this first)."""
    _AMG_CACHE.clear()


#: Preconditioners of the conjugate-gradient polish, by name: ``matrix -> M`` (None: plain CG).
ITERATIVE = {
    "cg": lambda matrix: None,
    "amg": cached_amg_preconditioner,
}


def _harmonic(p, q):
    return 2.0 * p * q / (p + q)


def face_coefficients(a):
    """Harmonic-mean face coefficients of (..., n, n) node values (NumPy or torch).

    Returns:
        ``(ax, ay)``: ``ax[..., i, j]`` on the face between nodes (i, j) and (i, j+1), shape
        (..., n, n-1); ``ay[..., i, j]`` between (i, j) and (i+1, j), shape (..., n-1, n).
    """
    return _harmonic(a[..., :, :-1], a[..., :, 1:]), _harmonic(a[..., :-1, :], a[..., 1:, :])


def _neg_divergence(u, a):
    """-div_h(a grad_h u) at the interior nodes of (..., n, n) NumPy arrays or torch tensors."""
    h2 = (1.0 / (u.shape[-1] - 1)) ** 2
    ax, ay = face_coefficients(a)
    fx = ax[..., 1:-1, :] * (u[..., 1:-1, 1:] - u[..., 1:-1, :-1])  # (..., n-2, n-1) fluxes in x
    fy = ay[..., :, 1:-1] * (u[..., 1:, 1:-1] - u[..., :-1, 1:-1])  # (..., n-1, n-2) fluxes in y
    return -((fx[..., :, 1:] - fx[..., :, :-1]) + (fy[..., 1:, :] - fy[..., :-1, :])) / h2


def _like(name: str, value, ref: np.ndarray, ref_name: str) -> np.ndarray:
    arr = as_field(name, value)
    if arr.shape != ref.shape:
        raise ValueError(f"{name} has shape {arr.shape}; expected {ref.shape} to match {ref_name}")
    return arr


def check_coefficient(a) -> np.ndarray:
    """Validate a coefficient field: finite, (N, N) or (B, N, N), and > 0 at every node.

    Raises:
        ValueError: naming ``a``, the offending minimum and the expectation.
    """
    a = as_field("a", a)
    low = float(a.min())
    if not low > 0:
        raise ValueError(f"a has minimum {low!r}; expected a > 0 at every node")
    return a


class Darcy(Problem):
    """-div(a grad u) = f in (0, 1)^2, u = g on the boundary; see the module docstring."""

    name = "darcy"
    fields = (FieldSpec("a", COEFFICIENT, "threshold"), FieldSpec("f", SOURCE, "unit", default=1.0),
              FieldSpec("g", DIRICHLET, "zero", default=0.0))
    solution_fields = ("u",)
    linear = True  # u is linear in (f, g) for a fixed coefficient a
    iterative_methods = tuple(ITERATIVE)
    # the estimate: one AMG-CG iteration per sample (AMG set up per sample; read 0.87-1.01 of the
    # true error). "vcycle" (estimate_step: one CG step for the whole batch, a V-cycle on the
    # Laplacian's interpolations, no per-sample set-up) read 0.67-1.09 under coefficient jumps,
    # but rebuilds its block hierarchy at every step: 16-70 % of the network on answers far off
    # (python -m benchmarks.tolerance --model darcy --count 16), so it is not the default
    estimate_method = "amg"
    # solve(tol=)'s polish: one continued CG run for the whole batch with the batched V-cycle
    # (set up once; no per-sample AMG), several times faster than AMG-CG with its per-sample set-up
    # (python -m benchmarks.time_to_tolerance)
    polish_method = "vcycle"
    # the network's operator input: one batched V-cycle step from zero (no per-sample set-up)
    guess_method = "vcycle"
    # reconstruct's residual step runs at every sampler call on coefficients that change from
    # call to call: the batched V-cycle needs no AMG set-up per sample (pyamg's Ruge-Stueben
    # set-up also complains on the extreme coefficients of noisy estimates)
    guidance_method = "vcycle"
    fast_solve = None  # no fast diagonalisation for a variable coefficient

    # ------------------------------------------------------------------ operator
    def operator(self, n: int | None = None, a=None) -> sp.csc_matrix:
        """Sparse (n-2)^2 x (n-2)^2 matrix of -div_h(a grad_h) on interior unknowns (row-major).

        Args:
            n: nodes per side (None: a's).
            a: one (N, N) coefficient sample, > 0 at every node (also accepted positionally).
        """
        if a is None and not isinstance(n, (int, np.integer)):
            n, a = None, n  # operator(a)
        if a is None:
            raise ValueError("a is required; expected one (N, N) coefficient sample")
        a = check_coefficient(a)
        if a.ndim != 2:
            raise ValueError(f"a has shape {a.shape}; the operator is built for one (N, N) sample")
        if n is not None and n != a.shape[-1]:
            raise ValueError(f"a has shape {a.shape}; expected ({n}, {n}) for n={n}")
        n = a.shape[-1]
        m = n - 2
        h2 = (1.0 / (n - 1)) ** 2
        ax, ay = face_coefficients(a)
        east, west = ax[1:-1, 1:], ax[1:-1, :-1]  # (m, m): faces to the right / left of each unknown
        north, south = ay[1:, 1:-1], ay[:-1, 1:-1]  # (m, m): faces above / below each unknown
        diag = (east + west + north + south).ravel() / h2
        right = east.copy()
        right[:, -1] = 0.0  # the face to the ring couples to a known value, not an unknown
        right = -right.ravel()[:-1] / h2
        up = -north[:-1, :].ravel() / h2
        mat = sp.diags([up, right, diag, right, up], [-m, -1, 0, 1, m], format="csc")
        mat.sort_indices()
        return mat

    def rhs(self, a: np.ndarray, f: np.ndarray, g: np.ndarray) -> np.ndarray:
        """Interior right-hand side with lifted boundary data, shape (..., n-2, n-2)."""
        ring = np.array(g, dtype=np.float64, copy=True)
        ring[..., 1:-1, 1:-1] = 0.0
        return np.asarray(f, dtype=np.float64)[..., 1:-1, 1:-1] - _neg_divergence(ring, np.asarray(a, dtype=np.float64))

    def apply(self, u: np.ndarray, a: np.ndarray) -> np.ndarray:
        """-div_h(a grad_h u) at the interior nodes, shape (..., n-2, n-2)."""
        return _neg_divergence(np.asarray(u, dtype=np.float64), np.asarray(a, dtype=np.float64))

    def residual_terms(self, u, a, f, g):
        """``(r, b)`` at the interior nodes for NumPy arrays or torch tensors (differentiable).

        ``r = f + div_h(a grad_h u)`` uses u's own boundary values; ``b`` is the right-hand side
        with lifted boundary data, the scale a relative residual ||r|| / ||b|| is measured on.
        """
        r = f[..., 1:-1, 1:-1] - _neg_divergence(u, a)
        ring = g.clone() if hasattr(g, "clone") else np.array(g, copy=True)
        ring[..., 1:-1, 1:-1] = 0
        b = f[..., 1:-1, 1:-1] - _neg_divergence(ring, a)
        return r, b

    # ------------------------------------------------------------------ checks
    def _inputs(self, a, f, g):
        a = check_coefficient(a)
        f = np.ones_like(a) if f is None else _like("f", f, a, "a")
        g = np.zeros_like(a) if g is None else _like("g", g, a, "a")
        return a, f, g

    def residual(self, u, a, f=None, g=None) -> np.ndarray:
        """Residual of a candidate solution, same shape as ``u``.

        Interior nodes hold ``f + div_h(a grad_h u)``; boundary nodes hold ``u - g`` (zero for
        a solution). ``f`` defaults to 1, ``g`` to 0.
        """
        a, f, g = self._inputs(a, f, g)
        u = _like("u", u, a, "a")
        out = u - g
        out[..., 1:-1, 1:-1] = f[..., 1:-1, 1:-1] - self.apply(u, a)
        return out

    def relative_residual(self, u, a, f=None, g=None) -> np.ndarray:
        """Per-sample ||rhs - A u_int|| / ||rhs|| over the interior (lifted boundary data)."""
        a, f, g = self._inputs(a, f, g)
        u = _like("u", u, a, "a")
        p = np.array(u, dtype=np.float64, copy=True)
        p[..., boundary_mask(p.shape[-1])] = 0.0
        b = self.rhs(a, f, g)
        r = b - self.apply(p, a)
        return relative_norm(r, b)

    # ------------------------------------------------------------------ solves
    def reference_solve(self, a, f=None, g=None) -> np.ndarray:
        """Exact discrete solution by SciPy sparse LU, one factorisation per sample.

        Args:
            a: (N, N) or (B, N, N) coefficient, > 0 at every node (the ring included).
            f: source of the same shape (None: f = 1); boundary values are ignored.
            g: Dirichlet data of the same shape (None: zero); interior values are ignored.

        Returns:
            u of the same shape as a, float64.
        """
        a, f, g = self._inputs(a, f, g)
        # a / c and f / c (c: the geometric mean of a) give the same u; then f and g are divided
        # by their largest acting value m, so that no honoured size overflows or underflows
        c = np.exp(np.mean(np.log(a), axis=(-2, -1), keepdims=True))
        scaled, m = self.scaled({"a": a / c, "f": f / c, "g": g})
        n = a.shape[-1]
        b = self.rhs(scaled["a"], scaled["f"], scaled["g"])
        flat_a = scaled["a"].reshape(-1, n, n)
        flat_b = b.reshape(len(flat_a), -1)
        out = np.empty_like(flat_b)
        for k in range(len(flat_a)):
            out[k] = spla.splu(self.operator(flat_a[k])).solve(flat_b[k])
        return check_finite("u", self._assemble(out.reshape(b.shape) * m, g))

    def iterative_solve(self, u0, a, f=None, g=None, *, maxiter: int = 1000, rtol: float = 1e-8,
                        method: str = "cg"):
        """Conjugate gradients on the interior system started from ``u0``.

        Used to polish a network's answer: ``maxiter`` iterations from ``u0`` (its boundary
        values are replaced by ``g``). Stops early once ||b - A u|| <= max(rtol, 1e-15) ||b||.

        Args:
            method: a key of :data:`ITERATIVE`: ``"cg"`` (SciPy's conjugate gradients) or
                ``"amg"`` (conjugate gradients preconditioned by one V-cycle of pyamg's classical
                algebraic multigrid, set up per sample by :func:`amg_preconditioner`).

        Returns:
            ``(u, iterations)``: u of the shape of a, and the iterations each sample took (an int
            array of shape (B,) or a 0-d array).
        """
        if method not in ITERATIVE:
            raise ValueError(f"method={method!r} is unknown; expected one of {sorted(ITERATIVE)}")
        _check_iteration_limits(maxiter, rtol)
        a, f, g = self._inputs(a, f, g)
        u0 = _like("u0", u0, a, "a")
        n = a.shape[-1]
        b = self.rhs(a, f, g).reshape(-1, (n - 2) ** 2)
        x0 = u0[..., 1:-1, 1:-1].reshape(-1, (n - 2) ** 2)
        flat_a = a.reshape(-1, n, n)
        out = np.empty_like(b)
        iters = np.zeros(len(b), dtype=np.int64)
        for k in range(len(b)):
            mat = self.operator(flat_a[k])
            out[k], iters[k] = _cg(mat, b[k], x0[k], maxiter, rtol, ITERATIVE[method](mat))
        u = self._assemble(out.reshape(a[..., 1:-1, 1:-1].shape), g)
        return u, iters.reshape(a.shape[:-2])

    def estimate_step(self, solution, *fields, method: str) -> np.ndarray:
        """``"vcycle"``: one conjugate-gradient step from ``solution`` for the whole batch at
        once, preconditioned by a V-cycle on the block-diagonal operator of the batch whose
        interpolations are those of the Laplacian's AMG on the same grid (Galerkin coarse
        operators, no per-sample set-up; :mod:`pdediff.maths.multigrid`). Other methods as
        :meth:`Problem.estimate_step`."""
        if method != "vcycle":
            return super().estimate_step(solution, *fields, method=method)
        from pdediff.maths.multigrid import pcg_step

        a, f, g = self._inputs(*fields)
        u0 = _like("solution", solution, a, "a")
        n = a.shape[-1]
        flat_a = a.reshape(-1, n, n)
        count = len(flat_a)
        block, cycle = self._batched_cycle(flat_a)
        b = self.rhs(a, f, g).reshape(-1, 1)
        x0 = u0[..., 1:-1, 1:-1].reshape(-1, 1)
        x1 = pcg_step(block, cycle, b, x0, segments=count)
        return self._assemble(x1.reshape(a[..., 1:-1, 1:-1].shape), g)

    def _batched_cycle(self, flat_a: np.ndarray):
        """The block-diagonal operator of a batch of coefficients (B, N, N) and its V-cycle on the
        Laplacian's AMG interpolations with Galerkin coarse operators (built once, no per-sample set-up)."""
        from pdediff.maths.multigrid import BatchedVCycle

        count, n = len(flat_a), flat_a.shape[-1]
        block = sp.block_diag([self.operator(flat_a[k]) for k in range(count)], format="csr")
        eye = sp.identity(count, format="csr")
        return block, BatchedVCycle.galerkin(block, [sp.kron(eye, lvl.P, format="csr")
                                                     for lvl in laplacian_hierarchy(n).levels[:-1]])

    def polish_to_tolerance(self, solution, a, f=None, g=None, *, tol: float, maxiter: int,
                            method: str | None = None):
        """One continued conjugate-gradient run a sample, each stopped once its step is <= ``tol``
        of its answer (:func:`pdediff.maths.multigrid.pcg`): ``"amg"``, preconditioned by the
        sample's AMG V-cycle (cached, :func:`cached_amg_preconditioner`); ``"vcycle"``, the whole
        batch at once with the batched Galerkin V-cycle of :meth:`estimate_step` (built once);
        ``"cg"``, unpreconditioned."""
        from pdediff.maths.multigrid import pcg

        check_polish_limits(tol, maxiter)
        method = method or self.polish_method or self.estimate_method
        if method not in (*ITERATIVE, "vcycle"):
            raise ValueError(f"method={method!r} is unknown; expected one of {sorted([*ITERATIVE, 'vcycle'])}")
        a, f, g = self._inputs(a, f, g)
        u0 = _like("solution", solution, a, "a")
        n = a.shape[-1]
        flat_a = a.reshape(-1, n, n)
        count = len(flat_a)
        b = self.rhs(a, f, g).reshape(count, -1)
        x0 = u0[..., 1:-1, 1:-1].reshape(count, -1)
        ring = np.sum(np.where(boundary_mask(n), g, 0.0).reshape(count, n, n) ** 2, axis=(-2, -1))
        out = np.empty_like(b)
        iters = np.zeros(count, dtype=np.int64)
        step = np.zeros(count)
        if method == "vcycle" and count:
            block, cycle = self._batched_cycle(flat_a)
            x, it, st = pcg(block, cycle, b.reshape(-1, 1), x0.reshape(-1, 1), tol, maxiter, segments=count,
                            fixed=ring[:, None])
            out, iters, step = x.reshape(count, -1), it[:, 0], st[:, 0]
        else:
            for k in range(count):
                mat = sp.csr_matrix(self.operator(flat_a[k]))
                m = ITERATIVE[method](mat)
                apply = (lambda r: r) if m is None else (lambda r, m=m: m @ r)
                x, it, st = pcg(mat, apply, b[k][:, None], x0[k][:, None], tol, maxiter, fixed=ring[k])
                out[k], iters[k], step[k] = x[:, 0], it[0, 0], st[0, 0]
        u = self._assemble(out.reshape(a[..., 1:-1, 1:-1].shape), g)
        shape = a.shape[:-2]
        return check_finite("u", u), step.reshape(shape), iters.reshape(shape)


def _check_iteration_limits(maxiter, rtol) -> None:
    if not isinstance(maxiter, (int, np.integer)) or isinstance(maxiter, bool) or maxiter < 0:
        raise ValueError(f"maxiter={maxiter!r} is invalid; expected an integer >= 0")
    if not isinstance(rtol, (int, float, np.floating)) or isinstance(rtol, bool) or not rtol >= 0:
        raise ValueError(f"rtol={rtol!r} is invalid; expected a number >= 0")
