"""The shipped joint models (poisson-joint, darcy-joint): reconstruct on fresh draws of their laws."""

import numpy as np
import pytest

import pdediff
from pdediff import metrics
from pdediff.problems.base import boundary_mask
from pdediff.sources import draw


def sensors(field: np.ndarray, share: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    keep = rng.random(field.shape) < share
    return np.where(keep, field, np.nan)


@pytest.fixture(scope="module")
def poisson_pairs():
    solver = pdediff.load_solver("poisson-joint")
    rho, g = draw(64, 2, source="blobs", boundary="smooth", seed=11)
    return solver, rho, g, solver.problem.reference_solve(rho, g)


def test_poisson_joint_given_the_whole_source_solves_it(poisson_pairs):
    solver, rho, g, phi = poisson_pairs
    ds = solver.reconstruct(samples=2, rho=rho, g=g, steps=8)
    assert ds.attrs["method"] == "dps+residual"
    # the residual step (one V-cycle-preconditioned CG step a call) ties phi to the given rho
    assert np.all(metrics.relative_l2(ds["phi"].values, phi) < 0.02)
    ring = boundary_mask(64)
    assert np.array_equal(ds["phi"].values[:, ring], g[:, ring])
    assert np.array_equal(ds["rho"].values[:, ~ring], rho[:, ~ring])


def test_poisson_joint_from_sensors_keeps_them_and_reports_spread(poisson_pairs):
    solver, rho, g, phi = poisson_pairs
    seen = sensors(phi, 0.03, 0)
    ds = solver.reconstruct(samples=2, phi=seen, g=g, steps=3)
    inside = np.isfinite(seen) & ~boundary_mask(64)
    assert np.array_equal(ds["phi"].values[inside], phi[inside])
    assert np.all(ds["rho_std"].values[:, 1:-1, 1:-1].mean(axis=(-2, -1)) > 0)
    assert ds["residual"].shape == phi.shape


def test_darcy_joint_runs_from_sparse_coefficients():
    solver = pdediff.load_solver("darcy-joint")

    a = np.where(np.random.default_rng(0).random((64, 64)) < 0.5, 3.0, 12.0)
    ds = solver.reconstruct(samples=2, a=sensors(a, 0.03, 1), steps=8)
    assert ds["u"].dims == ("y", "x") and np.all(np.isfinite(ds["u"])) and np.all(ds["a"].values > 0)
    assert np.all(ds["u"].values[boundary_mask(64)] == 0)


def test_poisson_joint_likelihood_ranks_its_law_above_point_charges(poisson_pairs):
    """A trust score: pairs of the training law (blobs) are likelier than exact pairs of
    single-node charges or short waves, sources the joint model never saw."""
    solver, rho, g, phi = poisson_pairs
    seen = solver.log_likelihood(rho=rho, phi=phi, g=g, steps=4)
    for family in ("deltas", "waves"):
        r, gg = draw(64, 2, source=family, boundary="smooth", seed=11)
        unseen = solver.log_likelihood(rho=r, phi=solver.problem.reference_solve(r, gg), g=gg, steps=4)
        assert seen.min() > unseen.max(), family


def test_darcy_joint_likelihood_flags_log_normal_coefficients():
    """darcy-joint saw thresholded coefficients only; reconstruct fails silently on log-normal
    ones (README), and the likelihood of such a pair is far below that of its own law's."""
    from pdediff.coefficients import get_coefficient
    from pdediff.problems.base import Grid

    solver = pdediff.load_solver("darcy-joint")
    assert solver.card["coefficient"] == "threshold"  # its training law (the family's defaults)
    a = {name: get_coefficient(name).sample(Grid(64), [np.random.default_rng([5, k]) for k in range(2)])
         for name in ("lognormal", "threshold")}
    scores = {name: solver.log_likelihood(a=v, u=solver.problem.reference_solve(v), steps=4) for name, v in a.items()}
    assert scores["lognormal"].max() < scores["threshold"].min()
