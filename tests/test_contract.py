"""The Problem contract: the engine names no PDE, and every problem declares what it calls."""

import re
from pathlib import Path

import numpy as np
import pytest

from pdediff.physics.problems import COEFFICIENT, DIRICHLET, PROBLEMS, ROLES, SOURCE, get_problem
from pdediff.physics.sources import BOUNDARIES, SOURCES
from pdediff.physics.coefficients import COEFFICIENTS

PACKAGE = Path(__file__).resolve().parents[1] / "pdediff"


#: Modules allowed to name a PDE besides the problems and the model catalogue, with why.
NAMES_A_PDE = {
    ("data", "examples.py"): "writes other people's files (neuraloperator's Darcy tensors) under their own "
                             "names, solved by the problems' own reference solvers",
}


def test_nothing_outside_problems_names_a_pde():
    pattern = re.compile("|".join(PROBLEMS), re.IGNORECASE)
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[:2] == ("physics", "problems") or rel.parts[0] == "models" or rel.parts in NAMES_A_PDE:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("name", PROBLEMS)
def test_every_problem_declares_the_contract(name):
    problem = PROBLEMS[name]
    assert problem.name == name
    assert problem.fields and all(f.role in ROLES for f in problem.fields)
    assert len(problem.solution_fields) >= 1 and isinstance(problem.solution_fields, tuple)
    assert sum(f.role == DIRICHLET for f in problem.fields) <= 1
    assert problem.iterative_methods
    registry = {SOURCE: SOURCES, DIRICHLET: BOUNDARIES, COEFFICIENT: COEFFICIENTS}
    for spec in problem.fields:  # the generator's default family of each field exists
        assert spec.family in registry[spec.role], (spec.name, spec.family)
        assert spec.degree == (-1 if spec.role == COEFFICIENT else 1)
    n = 9
    ring = np.zeros((n, n), bool)
    ring[[0, -1]] = ring[:, [0, -1]] = True
    for spec in problem.fields:
        expected = {DIRICHLET: ring, SOURCE: ~ring, COEFFICIENT: np.ones_like(ring)}[spec.role]
        np.testing.assert_array_equal(problem.support(spec.name, n), expected)
    # every operation the engine calls exists on the class, not through getattr fallbacks
    for method in ("operator", "rhs", "residual", "residual_terms", "relative_residual", "reference_solve",
                   "iterative_solve", "exact_solve", "check_grid", "params"):
        assert callable(getattr(problem, method))


@pytest.mark.parametrize("name", PROBLEMS)
def test_exact_solve_matches_reference_and_iterative_polish(name):
    problem = PROBLEMS[name]
    rng = np.random.default_rng(0)
    n = 17
    fields = []
    for spec in problem.fields:
        if spec.role == COEFFICIENT:
            fields.append(np.exp(rng.normal(size=(2, n, n)) * 0.5))
        else:
            fields.append(rng.normal(size=(2, n, n)))
    exact = problem.reference_solve(*fields)
    np.testing.assert_allclose(problem.exact_solve(*fields), exact, rtol=1e-9, atol=1e-12)
    assert np.all(problem.relative_residual(exact, *fields) < 1e-10)
    for method in problem.iterative_methods:
        polished, iters = problem.iterative_solve(np.zeros_like(exact), *fields, maxiter=2000, rtol=1e-10,
                                                  method=method)
        assert np.abs(polished - exact).max() < 1e-7 * np.abs(exact).max(), method


def test_get_problem_parameters():
    assert get_problem("helmholtz", k=5.0).params() == {"k": 5.0}
    assert get_problem("poisson").params() == {}
    with pytest.raises(ValueError, match="no parameter"):
        get_problem("poisson", k=1.0)
    with pytest.raises(ValueError, match="problem='nope'.*darcy"):
        get_problem("nope")
    with pytest.raises(ValueError, match="k"):
        get_problem("helmholtz", k=float("nan"))


@pytest.mark.parametrize("name", PROBLEMS)
@pytest.mark.parametrize("size", [1e-190, 1e190])
def test_reference_and_fast_solves_are_equivariant_at_extreme_sizes(name, size):
    """Solves divide each sample by its largest acting value (and a coefficient by its geometric
    mean) first, so the honoured extremes give the unit-size answer times the right factor."""
    problem = PROBLEMS[name]
    rng = np.random.default_rng(4)
    fields = {spec.name: (np.exp(rng.normal(size=(2, 17, 17))) if spec.role == COEFFICIENT
                          else rng.normal(size=(2, 17, 17))) for spec in problem.fields}
    solves = [problem.reference_solve] + ([problem.fast_solve] if problem.fast_solve is not None else [])
    for solve in solves:
        unit = solve(**fields)
        # sources and Dirichlet data times size: u times size
        bigger = solve(**{k: v if problem.field(k).role == COEFFICIENT else v * size for k, v in fields.items()})
        np.testing.assert_allclose(bigger / size, unit, rtol=1e-9, atol=1e-12 * np.abs(unit).max())
        if problem.coefficient_fields:  # coefficients and sources times size: u unchanged
            same = solve(**{k: v if problem.field(k).role == DIRICHLET else v * size for k, v in fields.items()})
            np.testing.assert_allclose(same, unit, rtol=1e-9, atol=1e-12 * np.abs(unit).max())
