"""PDE problems: a grid, field roles, a sparse operator, a residual and reference solves.

Nothing outside this package names a particular PDE (``pdediff/models`` excepted): a new problem
is one module here and one entry in :data:`PROBLEMS`.
"""

import dataclasses

from pdediff.physics.problems.base import (COEFFICIENT, DIRICHLET, ROLES, SOURCE, DataDriven, FieldSpec, Grid, Problem, as_field,
                                   data_problem)
from pdediff.physics.problems.darcy import Darcy
from pdediff.physics.problems.helmholtz import Helmholtz
from pdediff.physics.problems.poisson import Poisson

#: The problem of configs and cards that name none.
DEFAULT_PROBLEM = "poisson"

#: Every problem with its default parameters; :func:`get_problem` makes one with others.
PROBLEMS: dict[str, Problem] = {
    "poisson": Poisson(),
    "darcy": Darcy(),
    "helmholtz": Helmholtz(),
}


def get_problem(name: str, **params) -> Problem:
    """The problem registered under ``name``, with parameters ``params`` (e.g. ``k=8`` for
    Helmholtz) replacing its defaults.

    Raises:
        ValueError: an unknown name (listing the names), or a parameter the problem does not have
            (listing its parameters), or an invalid parameter value.
    """
    try:
        problem = PROBLEMS[name]
    except (KeyError, TypeError):
        raise ValueError(f"problem={name!r} is not a known problem; expected one of {sorted(PROBLEMS)}") from None
    if not params:
        return problem
    allowed = problem.params()
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"problem {name!r} has no parameter(s) {unknown}; expected some of {sorted(allowed) or 'none'}")
    return dataclasses.replace(problem, **params)


__all__ = ["COEFFICIENT", "DEFAULT_PROBLEM", "DIRICHLET", "PROBLEMS", "ROLES", "SOURCE", "DataDriven", "FieldSpec", "data_problem", "Grid", "Problem",
           "as_field", "get_problem", "Darcy", "Helmholtz", "Poisson"]
