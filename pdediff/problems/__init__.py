"""PDE problems: a grid, boundary handling, a sparse operator, a residual and a reference solve.

Nothing outside this package names a particular PDE: a new problem is one module here and one
entry in :data:`PROBLEMS`.
"""

from pdediff.problems.base import Grid, Problem, as_field
from pdediff.problems.poisson import Poisson

PROBLEMS: dict[str, Problem] = {
    "poisson": Poisson(),
}


def get_problem(name: str) -> Problem:
    """Return the problem registered under ``name`` or raise a ``ValueError`` listing the names."""
    try:
        return PROBLEMS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"problem={name!r} is not a known problem; expected one of {sorted(PROBLEMS)}"
        ) from None


__all__ = ["PROBLEMS", "Grid", "Problem", "Poisson", "as_field", "get_problem"]
