"""Error estimates (``Problem.estimate_error``, ``solve(tol=)``, ``AccuracyWarning``) against the
exact discrete solution: the estimate must read the true error of any perturbation."""

import warnings

import numpy as np
import pytest

import pdediff
from pdediff.physics import metrics
from pdediff.physics.coefficients import LogNormalField, ThresholdField
from pdediff.physics.problems import Grid, get_problem
from pdediff.solver import TOL_MAX_ITERATIONS
from tests.test_solver import N, _data, solver  # noqa: F401  (the untrained-model fixture)


def _perturbations(n, count, seed):
    """Smooth, oscillating and node-to-node errors of unit RMS, zero on the ring."""
    rng = np.random.default_rng(seed)
    x, y = Grid(n).mesh()
    out = []
    for k in range(count):
        kind = k % 3
        if kind == 0:
            e = np.sin(np.pi * x) * np.sin(np.pi * y) * rng.normal()
        elif kind == 1:
            m = rng.integers(3, n // 3, 2)
            e = np.sin(m[0] * np.pi * x) * np.sin(m[1] * np.pi * y)
        else:
            e = rng.normal(size=(n, n))
        e[Grid(n).boundary_mask] = 0.0
        out.append(e / np.sqrt(np.mean(e**2)))
    return np.stack(out)


def _cases(n=33, count=6, seed=0):
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(count, n, n)) * 10
    g = np.zeros((count, n, n))
    g[:, 0, :] = rng.normal(size=(count, n))
    rngs = [np.random.default_rng([seed, k]) for k in range(count)]
    return {
        "poisson": (get_problem("poisson"), (f, g)),
        "darcy threshold": (get_problem("darcy"), (ThresholdField().sample(Grid(n), rngs), f, g)),
        "darcy rough log-normal": (get_problem("darcy"), (LogNormalField(alpha=1.5, sigma=2.0).sample(Grid(n), rngs), f, g)),
        "helmholtz k = 8": (get_problem("helmholtz", k=8.0), (f, g)),
    }


#: (smallest estimate / true, largest, error left after the step / before) that each method
#: must keep: pyamg's AMG set up per sample, and the batched V-cycle step (on Darcy with the
#: Laplacian's interpolations, weaker where the coefficient jumps by orders of magnitude)
BOUNDS = {"amg": (0.8, 1.25, 0.2), "vcycle": (0.8, 1.25, 0.2), "darcy vcycle": (0.6, 1.25, 0.5), "fast": (0.8, 1.25, 0.2)}


@pytest.mark.parametrize("case", list(_cases()))
@pytest.mark.parametrize("size", [1e-1, 1e-4])
@pytest.mark.parametrize("method", ["default", "amg", "vcycle"])
def test_the_estimate_reads_the_true_error(case, size, method):
    problem, fields = _cases()[case]
    if method == "vcycle" and problem.name not in ("poisson", "darcy"):
        pytest.skip("no batched V-cycle step")
    if method != "default" and method == problem.estimate_method:
        pytest.skip("the problem's default: measured as 'default'")
    method = problem.estimate_method if method == "default" else method
    low, high, left = BOUNDS[f"darcy {method}" if problem.name == "darcy" and method == "vcycle" else method]
    exact = problem.reference_solve(*fields)
    scale = np.sqrt(np.mean(exact**2, axis=(1, 2)))[:, None, None]
    u = exact + size * scale * _perturbations(exact.shape[-1], len(exact), 1)
    true = metrics.relative_l2(u, exact)
    est, improved = problem.estimate_error(u, *fields, method=method)
    ratio = est / true
    assert np.all((ratio > low) & (ratio < high)), (case, ratio)  # never small when the error is large
    assert np.all(metrics.relative_l2(improved, exact) < left * true)  # and the iteration helped
    # the exact answer has a (round-off) estimate of zero
    assert np.all(problem.estimate_error(exact, *fields, method=method)[0] < 1e-9)


def test_solve_estimates_warns_and_polishes_to_tol(solver):  # noqa: F811
    rho, g, phi = _data(4)
    with pytest.warns(pdediff.AccuracyWarning, match=r"4 of 4 samples have an estimated error above 5%.*tol"):
        out, info = solver.solve(rho, g, steps=2, return_info=True)
    true = metrics.relative_l2(out, phi)
    assert len(info.error_estimate) == 4 and info.tol_met == [] and info.polish_iterations == []
    np.testing.assert_allclose(info.error_estimate, true, rtol=0.2)  # an untrained network: large errors, read

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning when every sample reaches tol
        out, info = solver.solve(rho, g, steps=2, return_info=True, tol=1e-6)
    assert info.tol_met == [True] * 4 and max(info.error_estimate) <= 1e-6
    assert all(1 <= k < 20 for k in info.polish_iterations)
    assert np.all(metrics.relative_l2(out, phi) < 3e-6)
    # a sample that is already good stops after the one iteration of its estimate
    mixed = np.stack([phi[0], phi[1] + 1e-2 * (out[1] - phi[1]) / max(metrics.relative_l2(out[1], phi[1]), 1e-300)])
    _, info = _tol_stage(solver, mixed, rho[:2], g[:2])
    assert info.polish_iterations[0] == 1 < info.polish_iterations[1]

    # estimate=False: no estimate, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, info = solver.solve(rho, g, steps=2, return_info=True, estimate=False)
    assert info.error_estimate == []


@pytest.mark.parametrize("sampler, steps", [("euler", 2), ("heun", 12)])
def test_with_tol_the_network_takes_its_samplers_fewest_steps(solver, monkeypatch, sampler, steps):  # noqa: F811
    """With tol and neither sampler nor steps given, the answer that starts the polish is sampled
    with the floor of the model's sampler (SAMPLER_STEPS); an explicit setting is kept."""
    from pdediff.solver import SAMPLER_STEPS

    monkeypatch.setattr(solver.config.model, "sampler", sampler)  # as the shipped forward models (euler, 2)
    monkeypatch.setattr(solver.config.model, "steps", steps)
    rho, g, phi = _data(2)
    floor = SAMPLER_STEPS[solver.config.model.sampler]
    _, default = solver.solve(rho, g, return_info=True, estimate=False)
    out, info = solver.solve(rho, g, return_info=True, tol=1e-6)
    same, info_same = solver.solve(rho, g, return_info=True, tol=1e-6, steps=floor)
    _, info_kept = solver.solve(rho, g, return_info=True, tol=1e-6, steps=steps)
    assert solver.config.model.steps > floor and default.nfe > info.nfe == info_same.nfe
    np.testing.assert_array_equal(out, same)
    assert info_kept.nfe > info.nfe and info.tol_met == [True, True]
    assert np.all(metrics.relative_l2(out, phi) < 3e-6)


def _tol_stage(solver, start, rho, g):
    """The tol stage alone, from given answers (a good one and a bad one)."""
    from pdediff.solver.solve import SolveInfo, estimate_error

    info = SolveInfo()
    out = estimate_error(solver, start.copy(), {"rho": rho, "g": g}, 1e-6, info)
    return out, info


def test_an_unreachable_tol_is_reported_never_met(solver, monkeypatch):  # noqa: F811
    import pdediff.solver.solve

    monkeypatch.setattr(pdediff.solver.solve, "TOL_MAX_ITERATIONS", 1)
    rho, g, _ = _data(3)
    with pytest.warns(pdediff.AccuracyWarning, match=r"tol=1e-12 was not reached for 3 of 3 samples after 1 "):
        _, info = solver.solve(rho, g, steps=2, return_info=True, tol=1e-12)
    assert info.tol_met == [False] * 3 and info.polish_iterations == [1] * 3 and TOL_MAX_ITERATIONS > 1


@pytest.mark.parametrize("tol", [0, -1e-3, float("nan"), float("inf"), "1e-4", True])
def test_bad_tol(solver, tol):  # noqa: F811
    rho, g, _ = _data(1)
    with pytest.raises(ValueError, match=r"tol=.* is invalid; expected a finite number > 0"):
        solver.solve(rho, g, tol=tol)
    with pytest.raises(ValueError, match=r"tol needs the error estimate"):
        solver.solve(rho, g, tol=1e-4, estimate=False)
    with pytest.raises(ValueError, match=r"estimate='yes' is invalid; expected True or False"):
        solver.solve(rho, g, estimate="yes")


@pytest.mark.parametrize("case", list(_cases()))
@pytest.mark.parametrize("method", ["default", "amg", "vcycle"])
@pytest.mark.parametrize("tol", [1e-4, 1e-7])
def test_polish_to_tolerance_reaches_it_in_fewer_iterations_than_restarts(case, method, tol):
    from pdediff.physics.problems.base import Problem

    problem, fields = _cases()[case]
    if method == "vcycle" and problem.name not in ("poisson", "darcy"):
        pytest.skip("no batched V-cycle")
    if method != "default" and (method == problem.estimate_method or problem.name == "helmholtz"):
        pytest.skip("the problem's default: measured as 'default'")
    method = problem.estimate_method if method == "default" else method
    exact = problem.reference_solve(*fields)
    scale = np.sqrt(np.mean(exact**2, axis=(1, 2)))[:, None, None]
    for size in (1e-1, 0.0):  # a network-like start, and zeros (the classical solve from zero)
        start = exact + size * scale * _perturbations(exact.shape[-1], len(exact), 1) if size else 0 * exact
        u, est, iters = problem.polish_to_tolerance(start, *fields, tol=tol, maxiter=200, method=method)
        assert np.all(est <= tol) and np.all(iters >= 1)
        assert np.all(metrics.relative_l2(u, exact) <= tol), (case, metrics.relative_l2(u, exact))
        assert np.all(iters <= (8 if tol > 1e-6 else 12) + 4 * (problem.name == "helmholtz")), iters
        if size:  # the restarted iteration (one step at a time) needs at least as many
            _, est_r, iters_r = Problem.polish_to_tolerance(problem, start, *fields, tol=tol, maxiter=200,
                                                            method=method)
            assert np.all(iters <= iters_r) and np.all(est_r <= tol), (iters, iters_r)


@pytest.mark.parametrize("case", ["poisson", "darcy threshold", "helmholtz k = 8"])
@pytest.mark.parametrize("bad", [{"tol": 0.0}, {"tol": float("nan")}, {"tol": "1e-4"}, {"maxiter": 0},
                                 {"maxiter": 2.5}])
def test_polish_to_tolerance_refuses_bad_limits(case, bad):
    problem, fields = _cases(count=1)[case]
    kwargs = {"tol": 1e-4, "maxiter": 10, **bad}
    name = next(iter(bad))
    with pytest.raises(ValueError, match=rf"{name}=.* is invalid; expected"):
        problem.polish_to_tolerance(np.zeros_like(fields[0]), *fields, **kwargs)
