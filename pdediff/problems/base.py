"""Grid convention, input validation and the interface every PDE problem implements.

Convention (part of the public contract): an N x N node grid on [0, 1]^2 including the
boundary, spacing h = 1 / (N - 1); array index ``[i, j]`` is the node ``(x_j, y_i)``.
Boundary nodes carry Dirichlet data ``g``; interior nodes satisfy the discrete PDE.
"""

from __future__ import annotations

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


def check_finite(name: str, result: np.ndarray) -> np.ndarray:
    """Never return a non-finite answer: raise a ValueError naming what overflowed instead."""
    if not np.all(np.isfinite(result)):
        raise ValueError(
            f"{name} is not finite (values beyond the float64 range); expected fields of smaller magnitude"
        )
    return result


class Problem:
    """Interface of a PDE problem on the node grid (see the module docstring).

    A problem names the fields that condition its solution (``condition_fields``), the field it
    solves for (``solution_field``), and whether the solution is linear in the condition
    (``linear``); the engine reads these and never names a particular PDE. Fields listed in
    ``dirichlet_field`` hold boundary data that the solution must equal on the ring.
    """

    name: str = ""
    condition_fields: tuple[str, ...] = ()
    solution_field: str = ""
    dirichlet_field: str | None = None
    linear: bool = False
    iterative_methods: tuple[str, ...] = ()  # names accepted by iterative_solve(method=...)

    def grid(self, n: int) -> Grid:
        return Grid(int(n))

    def operator(self, n: int):
        raise NotImplementedError

    def residual(self, solution, *fields, **kw):
        raise NotImplementedError

    def reference_solve(self, *fields, **kw):
        raise NotImplementedError
