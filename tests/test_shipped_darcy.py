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


def test_samples_it_answers_poorly_go_to_darcy_broad(solver):
    """load_solver("darcy") hands samples whose estimate exceeds ROUTE_ABOVE to darcy-broad and
    keeps, per sample, the lower estimate; without the fallback, the same call is darcy alone."""
    from pdediff.solver import ROUTE_ABOVE

    assert solver.fallback is not None and solver.fallback.name == "darcy-broad"
    a = fresh(LogNormalField(), solver.grid_size)
    ref = solver.problem.reference_solve(a)
    u, info = solver.solve(a, return_info=True)
    fallback, solver.fallback = solver.fallback, None
    try:
        alone, info_alone = solver.solve(a, return_info=True)
    finally:
        solver.fallback = fallback
    assert info_alone.models == []
    assert len(info.models) == len(a) and "darcy-broad" in info.models
    est, est_alone = np.array(info.error_estimate), np.array(info_alone.error_estimate)
    assert np.all(est <= est_alone + 1e-12)
    for k, m in enumerate(info.models):  # a sample kept by darcy is darcy's answer, bit for bit
        if m == "darcy":
            np.testing.assert_array_equal(u[k], alone[k])
        else:
            assert est_alone[k] > ROUTE_ABOVE
    err, err_alone = metrics.relative_l2(u, ref), metrics.relative_l2(alone, ref)
    assert np.mean(err) < 0.5 * np.mean(err_alone)
    assert np.mean(err) < 0.05


def test_with_tol_there_is_no_routing_and_every_sample_meets_it(solver):
    """With tol the polish reaches it from darcy's own answer: darcy-broad is never run, and
    every true error is within tol (log-normal coefficients, where darcy alone is far off)."""
    a = fresh(LogNormalField(), solver.grid_size)
    ref = solver.problem.reference_solve(a)
    for tol in (1e-4, 1e-6):
        u, info = solver.solve(a, tol=tol, return_info=True)
        assert info.models == ["darcy"] * len(a) and info.tol_met == [True] * len(a)
        assert np.all(metrics.relative_l2(u, ref) <= tol) and max(info.error_estimate) <= tol
        assert info.nfe == 1  # one network, not two, and one step: it only starts the polish
