"""The shipped variable-coefficient model (``load_solver("darcy")``) on fresh draws of its training
law and of two laws it never saw; thresholds are the figures of ``python -m benchmarks.problems --problem darcy``
(benchmarks/results/problems/darcy.md) with a margin, so a regression in the engine or the file shows."""

import numpy as np
import pytest

import pdediff
from pdediff.physics import metrics
from pdediff.physics.coefficients import LogNormalField, ThresholdField
from pdediff.models import MODELS
from pdediff.physics.problems import Grid

NAME = "darcy"
pytestmark = pytest.mark.skipif(NAME not in MODELS, reason="no shipped model of this name")

CASES = {  # family, bound on the mean relative L2 error over 8 fresh samples
    "training law": (ThresholdField(), 0.03),
    "finer inclusions (tau = 6)": (ThresholdField(tau=6.0), 0.08),
    "log-normal": (LogNormalField(), 0.25),  # measured 16.9 %: issue 11's 5 % target is missed
}


@pytest.fixture(scope="module")
def solver():
    return pdediff.load_solver(NAME)


def fresh(family, n, count=8, seed=2027):
    return family.sample(Grid(n), [np.random.default_rng([seed, 4_242, k]) for k in range(count)])


@pytest.mark.parametrize("case", CASES)
def test_accuracy_boundary_and_polish(solver, case):
    family, bound = CASES[case]
    a = fresh(family, solver.grid_size)
    ref = solver.problem.reference_solve(a)
    u = solver.solve(a)
    assert np.mean(metrics.relative_l2(u, ref)) < bound
    ring = Grid(a.shape[-1]).boundary_mask
    assert np.all(u[:, ring] == 0.0)
    polished = solver.solve(a, polish=5)
    assert np.mean(metrics.relative_l2(polished, ref)) < 1e-5  # issue 11's polish target


def test_units_of_the_coefficient_divide_out(solver):
    a = fresh(ThresholdField(), solver.grid_size, count=2)
    u = solver.solve(a)
    np.testing.assert_allclose(solver.solve(10 * a), u / 10, rtol=1e-4, atol=1e-6 * np.abs(u).max())
    np.testing.assert_allclose(solver.solve(a, f=-3 * np.ones_like(a)), -3 * u, rtol=1e-4,
                               atol=1e-6 * np.abs(u).max())
    with pytest.raises(ValueError, match="has no parameter"):
        pdediff.load_solver(NAME, k=8.0)
    with pytest.raises(ValueError, match="neither a shipped model .*darcy"):
        pdediff.load_solver("nope")
