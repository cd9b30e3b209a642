"""Grid convention, input validation and the interface every PDE problem implements.

Convention (part of the public contract): an N x N node grid on [0, 1]^2 including the
boundary, spacing h = 1 / (N - 1); array index ``[i, j]`` is the node ``(x_j, y_i)``.
Boundary nodes carry Dirichlet data ``g``; interior nodes satisfy the discrete PDE.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

MIN_N = 5

#: The magnitudes the solvers honour: a sample whose largest acting value |f| lies outside
#: [MAGNITUDE_MIN, MAGNITUDE_MAX] (and is not exactly zero) gets a ValueError. Inside it, a linear
#: problem is solved on the sample divided by that largest value, so that no intermediate
#: (squares in float32, h^-2 in float64) leaves the floating-point range; the answer is then
#: scaled back, exactly equivariant under any factor that keeps the sample in range.
MAGNITUDE_MIN = 1e-200
MAGNITUDE_MAX = 1e200


@dataclass(frozen=True)
class Grid:
    """An ``n x n`` node grid on the unit square, boundary nodes included."""

    n: int

    def __post_init__(self):
        if not isinstance(self.n, (int, np.integer)) or isinstance(self.n, bool) or self.n < MIN_N:
            raise ValueError(f"n={self.n!r} is not a valid grid size; expected an integer >= {MIN_N}")

    @property
    def h(self) -> float:
        return 1.0 / (self.n - 1)

    @property
    def x(self) -> np.ndarray:
        return np.linspace(0.0, 1.0, self.n)

    @property
    def y(self) -> np.ndarray:
        return np.linspace(0.0, 1.0, self.n)

    def mesh(self) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(X, Y)`` of shape (n, n) with ``X[i, j] = x_j`` and ``Y[i, j] = y_i``."""
        return np.meshgrid(self.x, self.y, indexing="xy")

    @property
    def boundary_mask(self) -> np.ndarray:
        return boundary_mask(self.n)

    @property
    def n_interior(self) -> int:
        return (self.n - 2) ** 2


@functools.lru_cache(maxsize=32)
def _boundary_mask(n: int) -> np.ndarray:
    mask = np.zeros((n, n), dtype=bool)
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = True
    mask.setflags(write=False)
    return mask


def boundary_mask(n: int) -> np.ndarray:
    """Boolean (n, n) array that is True on the boundary ring (read-only, cached)."""
    return _boundary_mask(int(n))


def as_field(name: str, value, *, like: np.ndarray | None = None, dtype=None) -> np.ndarray:
    """Validate a field given to the public API and return it as a numpy array.

    Accepts an (N, N) or (B, N, N) array-like of finite real numbers with N >= 5. With ``like``,
    the shape must equal ``like.shape``.

    Raises:
        ValueError: naming ``name``, the offending value or shape, and what was expected.
    """
    if value is None:
        raise ValueError(f"{name} is None; expected an array of shape (N, N) or (B, N, N)")
    try:
        arr = np.asarray(value)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise ValueError(f"{name} could not be converted to an array: {exc}") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name} has dtype {arr.dtype}; expected real numbers")
    if np.iscomplexobj(arr):
        raise ValueError(f"{name} is complex; expected real numbers")
    if like is not None:
        if arr.shape != like.shape:
            raise ValueError(
                f"{name} has shape {arr.shape}; expected {like.shape} to match rho"
            )
    elif arr.ndim not in (2, 3):
        raise ValueError(f"{name} has shape {arr.shape}; expected (N, N) or (B, N, N)")
    if arr.shape[-1] != arr.shape[-2]:
        raise ValueError(f"{name} has shape {arr.shape}; expected a square (N, N) node grid")
    if arr.shape[-1] < MIN_N:
        raise ValueError(f"{name} has shape {arr.shape}; expected N >= {MIN_N} nodes per side")
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    elif not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name} contains {bad} NaN or inf value(s); expected finite numbers")
    # flipped views and other negative or odd strides: torch and the sparse solvers want C order
    return np.ascontiguousarray(arr)


def sample_magnitude(fields: dict[str, np.ndarray], supports: dict[str, np.ndarray]) -> np.ndarray:
    """Largest |value| of each sample over the nodes where each field acts, shape (B,) or ().

    Raises:
        ValueError: naming the field whose magnitude lies outside the honoured range
            [MAGNITUDE_MIN, MAGNITUDE_MAX] (an all-zero sample is fine: its magnitude is 0).
    """
    peaks = []
    for name, f in fields.items():
        peak = np.max(np.abs(np.where(supports[name], f, 0.0)), axis=(-2, -1)).astype(np.float64)
        peaks.append(peak)
    m = np.max(np.stack(peaks), axis=0)
    bad = (m != 0) & ((m < MAGNITUDE_MIN) | (m > MAGNITUDE_MAX))
    if np.any(bad):
        k = int(np.flatnonzero(np.atleast_1d(bad))[0])
        culprit = max(fields, key=lambda name: float(np.atleast_1d(peaks[list(fields).index(name)])[k]))
        value = float(np.atleast_1d(m)[k])
        raise ValueError(
            f"{culprit} has largest magnitude {value:.3g} (sample {k}); expected the largest |value| of a "
            f"sample in [{MAGNITUDE_MIN:g}, {MAGNITUDE_MAX:g}] (or an all-zero sample): rescale the fields "
            f"and the answer"
        )
    return m


def relative_norm(r: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-sample ||r|| / ||b|| over the last two axes (||r|| where b = 0)."""
    num = np.sqrt((r**2).sum(axis=(-2, -1)))
    den = np.sqrt((b**2).sum(axis=(-2, -1)))
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), num)


def check_finite(name: str, result: np.ndarray) -> np.ndarray:
    """Never return a non-finite answer: raise a ValueError naming what overflowed instead."""
    if not np.all(np.isfinite(result)):
        raise ValueError(
            f"{name} is not finite (values beyond the float64 range); expected fields of smaller magnitude"
        )
    return result


#: Field roles. A source acts at interior nodes; Dirichlet data on the boundary ring; a
#: coefficient at every node, is positive, and enters the operator.
SOURCE, COEFFICIENT, DIRICHLET = "source", "coefficient", "dirichlet"
ROLES = (SOURCE, COEFFICIENT, DIRICHLET)


@dataclass(frozen=True)
class FieldSpec:
    """One condition field of a problem.

    Attributes:
        name: the field's name (an argument name of the problem's methods, an HDF5 key).
        role: one of :data:`ROLES`.
        family: the generator's default family for it (a key of ``pdediff.physics.sources.SOURCES``,
            ``BOUNDARIES`` or ``pdediff.physics.coefficients.COEFFICIENTS`` by role).
        default: the constant it takes when not given (None: it must be given).
    """

    name: str
    role: str
    family: str
    default: float | None = None

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"role={self.role!r} is unknown; expected one of {ROLES}")

    @property
    def degree(self) -> int:
        """How the solution scales with this field alone: u(c f) = c^degree u(f) when the other
        fields of the same degree scale with it (1: sources and Dirichlet data; -1: coefficients,
        whose scale divides the sources')."""
        return -1 if self.role == COEFFICIENT else 1

    def support(self, n: int) -> np.ndarray:
        """Boolean (n, n) mask of the nodes where the field acts."""
        ring = boundary_mask(n)
        if self.role == DIRICHLET:
            return ring
        if self.role == SOURCE:
            return ~ring
        return np.ones((n, n), dtype=bool)


class Problem:
    """The contract between a PDE problem and the engine: every operation the engine calls.

    A problem declares its condition fields with their roles (:class:`FieldSpec`), its solution
    fields, its parameters (the dataclass fields of a subclass, e.g. Helmholtz's ``k``; recorded in
    dataset cards and checkpoints) and its solvers. All methods take the condition fields
    positionally in the order of :attr:`condition_fields` (optional ones may be None), as (N, N)
    or (B, N, N) arrays. The engine reads these declarations and never names a particular PDE.

    ``linear`` says that the solution is linear in the source and Dirichlet fields for fixed
    coefficients, so that a per-sample scale makes the solver exactly equivariant.
    """

    name: str = ""
    fields: tuple[FieldSpec, ...] = ()
    solution_fields: tuple[str, ...] = ()
    linear: bool = True
    iterative_methods: tuple[str, ...] = ()  # names accepted by iterative_solve(method=...)
    offers_residual = True  # False: residual, reference solves and polish are not offered
    fast_solve = None  # optional: a method (*fields) -> solution, exact and faster than reference_solve

    # ------------------------------------------------------------------ declarations
    @property
    def condition_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def solution_field(self) -> str:
        """The first (today: the only) solution field."""
        return self.solution_fields[0]

    @property
    def dirichlet_field(self) -> str | None:
        names = [f.name for f in self.fields if f.role == DIRICHLET]
        return names[0] if names else None

    @property
    def coefficient_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.role == COEFFICIENT)

    @property
    def source_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.role == SOURCE)

    def field(self, name: str) -> FieldSpec:
        for f in self.fields:
            if f.name == name:
                return f
        raise ValueError(f"{name!r} is not a field of problem {self.name!r}; expected one of "
                         f"{list(self.condition_fields)}")

    def support(self, name: str, n: int) -> np.ndarray:
        """Where condition field ``name`` acts on the n x n grid."""
        return self.field(name).support(n)

    def params(self) -> dict:
        """The problem's parameters (its dataclass fields), JSON-able; {} for none."""
        if dataclasses.is_dataclass(self):
            return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {}

    def grid(self, n: int) -> Grid:
        return Grid(int(n))

    def check_grid(self, n: int) -> None:
        """Raise a ValueError if the problem cannot be posed on the n x n grid (e.g. a singular
        operator); the default accepts every grid that :class:`Grid` accepts."""
        Grid(int(n))

    def check_coefficients(self, fields: dict[str, np.ndarray]) -> None:
        """Raise a ValueError naming a coefficient field that is not > 0 at every node."""
        for name in self.coefficient_fields:
            if name in fields:
                low = float(np.min(fields[name])) if np.size(fields[name]) else 1.0
                if not low > 0:
                    raise ValueError(f"{name} has minimum {low!r}; expected {name} > 0 at every node")

    # ------------------------------------------------------------------ operations
    def operator(self, n: int, **coefficients):
        """The sparse matrix of one sample on the interior unknowns (row-major order); a problem
        with coefficient fields takes them by name, one (N, N) sample each."""
        raise NotImplementedError

    def rhs(self, *fields) -> np.ndarray:
        """Interior right-hand side with lifted Dirichlet data, shape (..., N-2, N-2)."""
        raise NotImplementedError

    def residual(self, solution, *fields):
        """Residual of a candidate solution: the interior equations, and solution - g on the ring."""
        raise NotImplementedError

    def residual_terms(self, solution, *fields):
        """``(r, b)`` at the interior nodes, for NumPy arrays or torch tensors (differentiable):
        the residual and the right-hand side it is measured against."""
        raise NotImplementedError

    def relative_residual(self, solution, *fields) -> np.ndarray:
        """Per-sample ||b - A u|| / ||b|| over the interior."""
        raise NotImplementedError

    def reference_solve(self, *fields) -> np.ndarray:
        """The exact discrete solution by a sparse direct solver."""
        raise NotImplementedError

    def iterative_solve(self, start, *fields, maxiter: int = 1000, rtol: float = 1e-8, method: str = ""):
        """``(solution, iterations)``: a classical iterative method (a key of
        :attr:`iterative_methods`) started from ``start``; used to polish a network's answer."""
        raise NotImplementedError

    #: The method of :meth:`estimate_error`: a key of :attr:`iterative_methods` (one iteration of
    #: it), ``"fast"``: the error equation solved by :meth:`fast_solve`, or another name that the
    #: problem's :meth:`estimate_step` knows (Poisson: ``"vcycle"``, batched).
    estimate_method: str = "amg"
    #: The method of the residual step of ``Solver.reconstruct`` (one iteration a sampler call on
    #: the solution given the other denoised fields); None: :attr:`estimate_method`.
    guidance_method: str | None = None

    def estimate_error(self, solution, *fields, method: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Estimate each sample's relative L2 error against the exact discrete solution, from the
        operator alone (no reference solve).

        One iteration of a preconditioned iterative method (``method``, default
        :attr:`estimate_method`; :meth:`estimate_step`) applied to the error equation
        A e = r, r = b - A u, gives the correction d = u1 - u; when the method contracts the
        error by a factor q per iteration, ||d|| lies between (1 - q) and (1 + q) times ||e||.
        For multigrid-preconditioned Krylov methods on a definite operator q is well below one,
        so the estimate reads the true error to within that, however large it is. An indefinite
        operator is contracted far less by one iteration; a problem with a fast exact solve then
        sets ``estimate_method = "fast"``.

        Returns:
            ``(estimate, improved)``: ||u1 - u|| / ||u1|| per sample ((B,) or 0-d), and u1, the
            answer after that iteration (better than ``solution``, its error about q times the
            estimate).
        """
        method = method or self.estimate_method
        improved = self.estimate_step(solution, *fields, method=method)
        estimate = _relative_change(solution, improved)
        # an answer far off (the estimate above FAR_ESTIMATE): ||u1|| is then still off the
        # solution's size and the ratio reads low (0.3 of a true error of 3,000 % after one
        # V-cycle step); up to two more steps for those samples (an exact "fast" step needs none)
        for _ in range(2 if method != "fast" else 0):
            far = np.atleast_1d(estimate) > FAR_ESTIMATE
            if not far.any():
                break
            if improved.ndim == 2:
                improved = self.estimate_step(improved, *fields, method=method)
            else:
                k = np.flatnonzero(far)
                picked = (None if f is None else np.broadcast_to(f, improved.shape)[k] for f in fields)
                improved[k] = self.estimate_step(improved[k], *picked, method=method)
            estimate = _relative_change(solution, improved)
        return estimate, improved

    #: The method of :meth:`polish_to_tolerance` in ``solve(tol=...)``; None: :attr:`estimate_method`.
    polish_method: str | None = None

    def polish_to_tolerance(self, solution, *fields, tol: float, maxiter: int,
                            method: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Iterate each sample from ``solution`` until its estimated relative error is <= ``tol``,
        and one iteration more (the one whose size read the error): ``solve(tol=...)``'s polish.

        Here, :meth:`estimate_error` restarted one iteration at a time (an exact ``"fast"``
        step stops after one); a problem with a preconditioned conjugate-gradient method
        overrides it with one continued run (:func:`pdediff.maths.multigrid.pcg`), which needs
        fewer iterations and builds its operator and preconditioner once.

        Returns:
            ``(u, estimate, iterations)`` per sample: the answers (B, N, N), the estimate of each
            (the last iteration's relative size: an upper estimate of the answer's error) and
            the iterations taken; a sample whose estimate is still above ``tol`` after
            ``maxiter`` iterations has ``estimate > tol``.
        """
        check_polish_limits(tol, maxiter)
        method = method or self.polish_method or self.estimate_method
        out = np.array(solution, dtype=np.float64, copy=True)
        count = len(out)
        est, improved = self.estimate_error(out, *fields, method=method)
        est = np.atleast_1d(est).astype(np.float64)
        iters = np.ones(count, dtype=np.int64)
        need = np.flatnonzero(est > tol)
        for _ in range(int(maxiter) - 1):
            if not len(need):
                break
            out[need] = improved[need]
            iters[need] += 1
            picked = [None if f is None else np.broadcast_to(f, out.shape)[need] for f in fields]
            e, imp = self.estimate_error(out[need], *picked, method=method)
            est[need], improved[need] = np.atleast_1d(e), imp
            need = need[est[need] > tol]
        return improved, est, iters

    #: The method of :meth:`operator_guess` (a name :meth:`estimate_step` knows); None: the
    #: problem offers no guess (a network of it cannot take ``model.operator_input``).
    guess_method: str | None = None

    def operator_guess(self, *fields) -> np.ndarray:
        """A cheap physics-based first answer (B, N, N): one step of :attr:`guess_method` from
        zero (in the interior; the Dirichlet data on the ring). A network with
        ``model.operator_input`` takes it as an input channel and learns the correction.

        Raises:
            ValueError: the problem offers no guess.
        """
        if self.guess_method is None:
            raise ValueError(f"problem {self.name!r} offers no operator guess (guess_method is None); expected "
                             "model.operator_input: false for it")
        first = np.asarray(fields[0], dtype=np.float64)
        return self.estimate_step(np.zeros_like(first), *fields, method=self.guess_method)

    def estimate_step(self, solution, *fields, method: str) -> np.ndarray:
        """One iteration of ``method`` from ``solution`` (see :meth:`estimate_error`); returns
        the improved solution."""
        if method == "fast" and self.fast_solve is not None:
            return self.fast_solve(*fields)  # u + A^-1 (b - A u), exactly
        return self.iterative_solve(solution, *fields, maxiter=1, rtol=0.0, method=method)[0]

    @staticmethod
    def _assemble(interior: np.ndarray, g: np.ndarray) -> np.ndarray:
        """A full field: ``g`` on the ring, ``interior`` (..., N-2, N-2) inside."""
        u = np.array(g, dtype=np.float64, copy=True)
        u[..., 1:-1, 1:-1] = interior
        return u

    def exact_solve(self, *fields) -> np.ndarray:
        """The exact discrete solution by the fastest exact method the problem has."""
        return self.fast_solve(*fields) if self.fast_solve is not None else self.reference_solve(*fields)

    def scaled(self, fields: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Fields divided, sample by sample, by their largest acting value, and the factors
        (B, 1, 1) or (1, 1): the solution of the scaled fields times the factor is the solution.

        Coefficient fields keep their values. Only for a ``linear`` problem; the factor is 1
        otherwise.

        Raises:
            ValueError: a sample outside the honoured range (see :data:`MAGNITUDE_MAX`).
        """
        first = fields[self.condition_fields[0]]
        if not self.linear:
            return dict(fields), np.ones(first.shape[:-2] + (1, 1))
        n = first.shape[-1]
        scaled_names = [k for k in fields if self.field(k).role != COEFFICIENT]
        m = sample_magnitude({k: fields[k] for k in scaled_names}, {k: self.support(k, n) for k in scaled_names})
        m = np.where(m == 0, 1.0, m)[..., None, None]
        return {k: (v / m if k in scaled_names else v) for k, v in fields.items()}, m


class DataDriven(Problem):
    """A problem's fields on data whose discretisation is not the problem's own (e.g. a
    cell-centred grid described by a dataset card): every field acts at every node, there is no
    Dirichlet ring, and the model learns from the data alone. The residual, the reference solves
    and the polish are not offered: they would measure another discretisation.

    Args:
        base: the problem the data describe (its name and parameters are kept).
        fields: the data's condition fields (roles: coefficient or source).
        solution_fields: the data's solution fields.
        reason: why the problem's own operator does not apply, for the error messages.
    """

    offers_residual = False
    iterative_methods = ()

    def __init__(self, base: Problem, fields: tuple[FieldSpec, ...], solution_fields: tuple[str, ...], reason: str):
        self.base, self.name, self.fields = base, base.name, tuple(fields)
        self.solution_fields, self.linear, self.reason = tuple(solution_fields), base.linear, reason
        if any(f.role == DIRICHLET for f in self.fields):
            raise ValueError(f"fields={[f.name for f in self.fields]}: data without a boundary ring take no "
                             f"Dirichlet field; expected coefficient or source fields")

    def params(self) -> dict:
        return self.base.params()

    def support(self, name: str, n: int) -> np.ndarray:
        self.field(name)
        return np.ones((n, n), dtype=bool)

    def check_grid(self, n: int) -> None:
        Grid(int(n))

    def _not_offered(self, *args, **kwargs):
        raise ValueError(f"problem {self.name!r} on these data is data-driven: residual, reference solves and "
                         f"polish are not offered ({self.reason})")

    operator = rhs = residual = residual_terms = relative_residual = _not_offered
    reference_solve = iterative_solve = exact_solve = _not_offered


def data_problem(base: Problem, card: dict) -> Problem:
    """The problem as the engine sees a dataset described by ``card`` (a ``read_card`` dict): the
    problem itself on pdediff's node grid, a :class:`DataDriven` view on any other grid.

    Raises:
        ValueError: a card whose fields are not the problem's.
    """
    grid = card.get("grid") or {}
    if not isinstance(grid, dict) or grid.get("kind", "node") == "node":
        return base
    kinds = card.get("kinds") or {}
    names = list(card.get("condition_fields") or [])
    unknown = [k for k in names + [card.get("solution_field")] if k not in (*base.condition_fields, *base.solution_fields)]
    if unknown:
        raise ValueError(f"the dataset card names field(s) {unknown} that problem {base.name!r} does not have; "
                         f"expected some of {[*base.condition_fields, *base.solution_fields]}")
    fields = tuple(FieldSpec(k, COEFFICIENT if (kinds.get(k) or base.field(k).role) == COEFFICIENT else SOURCE,
                             base.field(k).family) for k in names)
    return DataDriven(base, fields, (card["solution_field"],),
                      f"the card's {grid.get('kind')!r} grid is not pdediff's node grid")


def check_polish_limits(tol, maxiter) -> None:
    """Validate :meth:`Problem.polish_to_tolerance`'s ``tol`` (finite, > 0) and ``maxiter`` (an int >= 1)."""
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.floating)) or not 0 < tol < np.inf:
        raise ValueError(f"tol={tol!r} is invalid; expected a finite number > 0")
    if isinstance(maxiter, bool) or not isinstance(maxiter, (int, np.integer)) or maxiter < 1:
        raise ValueError(f"maxiter={maxiter!r} is invalid; expected an integer >= 1")


#: An estimate above this takes further steps (see :meth:`Problem.estimate_error`).
FAR_ESTIMATE = 0.5


def _relative_change(solution, improved: np.ndarray) -> np.ndarray:
    """||improved - solution|| / ||improved|| over the last two axes (inf where improved is 0 and
    solution is not)."""
    d = (improved - np.asarray(solution, dtype=np.float64)).reshape(*improved.shape[:-2], -1)
    size = np.linalg.norm(improved.reshape(d.shape), axis=-1)
    change = np.linalg.norm(d, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(size > 0, change / np.where(size > 0, size, 1.0), np.where(change > 0, np.inf, 0.0))
