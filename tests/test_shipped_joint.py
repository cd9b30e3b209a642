"""The shipped joint models (poisson-joint, darcy-joint): reconstruct on fresh draws of their laws."""

import numpy as np
import pytest

import pdediff
from pdediff.physics import metrics
from pdediff.physics.problems.base import boundary_mask
from pdediff.physics.sources import draw


def sensors(field: np.ndarray, share: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    keep = rng.random(field.shape) < share
    return np.where(keep, field, np.nan)


@pytest.fixture(scope="module")
def poisson_pairs():
    solver = pdediff.load_solver("poisson-joint")
    rho, g = draw(64, 2, source="blobs", boundary="smooth", seed=11)
    return solver, rho, g, solver.problem.reference_solve(rho, g)


@pytest.mark.parametrize("method", ["diffusion", "gaussian", "dps+residual"])
def test_poisson_joint_given_the_whole_source_solves_it(poisson_pairs, method):
    solver, rho, g, phi = poisson_pairs
    ds = solver.reconstruct(samples=2, rho=rho, g=g, steps=4 if method == "diffusion" else 8,
                            method=None if method == "diffusion" else method)
    assert ds.attrs["method"] == method  # diffusion: the default, the best measured
    ring = boundary_mask(64)
    assert np.array_equal(ds["phi"].values[:, ring], g[:, ring])
    if method == "dps+residual":
        # the residual step (one V-cycle-preconditioned CG step a call) ties phi to the given rho
        assert np.all(metrics.relative_l2(ds["phi"].values, phi) < 0.02)
        assert np.array_equal(ds["rho"].values[:, ~ring], rho[:, ~ring])
    else:  # the exact solve of the given source
        assert np.all(metrics.relative_l2(ds["phi"].values, phi) < 1e-10)
        np.testing.assert_allclose(ds["rho"].values, rho * ~ring, atol=1e-12 * np.abs(rho).max())
        assert ds["residual_rel"].values.max() < 1e-10


@pytest.mark.parametrize("method", ["diffusion", "gaussian"])
def test_poisson_joint_from_sensors_fits_them_with_exact_physics_and_spread(poisson_pairs, method):
    solver, rho, g, phi = poisson_pairs
    seen = sensors(phi, 0.03, 0)
    ds = solver.reconstruct(samples=2, phi=seen, g=g, steps=3, method=method, return_samples=True)
    inside = np.isfinite(seen) & ~boundary_mask(64)
    if method == "diffusion":  # a tenth of the observations is held back to check the posterior
        held = ds["phi_heldout"].values
        assert held.sum() == sum(round(0.1 * k) for k in inside.sum(axis=(1, 2)))
        inside &= ~held
    np.testing.assert_allclose(ds["phi"].values[inside], phi[inside], atol=1e-4 * np.abs(phi).max())
    assert np.all(ds["rho_std"].values[:, 1:-1, 1:-1].mean(axis=(-2, -1)) > 0)
    assert ds["residual"].shape == phi.shape
    # every draw is an exact solution of the PDE with its own source
    draws = ds["phi_samples"].values.reshape(-1, 64, 64)
    sources = ds["rho_samples"].values.reshape(-1, 64, 64)
    assert solver.problem.relative_residual(draws, sources, np.repeat(g, 2, axis=0)).max() < 1e-10
    assert ds["residual_heldout"].shape == (2,) and np.isfinite(ds.attrs["residual"])


def test_poisson_joint_infers_dirichlet_data_that_are_not_given(poisson_pairs):
    solver, rho, g, phi = poisson_pairs
    seen = sensors(phi, 0.1, 1)
    ds = solver.reconstruct(samples=2, phi=seen, method="gaussian")
    assert ds.attrs["dirichlet"] == "inferred" and "g_std" in ds
    ring = boundary_mask(64)
    # the ring of phi is the inferred g, and its error is well below g's own size
    np.testing.assert_allclose(ds["phi"].values[:, ring], ds["g"].values[:, ring])
    assert np.all(metrics.relative_l2(ds["g"].values * ring, g * ring) < 0.5)


def test_observations_unlike_the_training_law_warn(poisson_pairs):
    from pdediff import AccuracyWarning

    solver, rho, g, phi = poisson_pairs
    noise = np.random.default_rng(3).normal(size=phi.shape) * np.abs(phi).max()
    with pytest.warns(AccuracyWarning, match="predicted poorly by their own posterior"):
        solver.reconstruct(samples=2, phi=sensors(noise, 0.03, 2), g=g, method="gaussian")


def test_darcy_joint_runs_from_sparse_coefficients():
    solver = pdediff.load_solver("darcy-joint")

    a = np.where(np.random.default_rng(0).random((64, 64)) < 0.5, 3.0, 12.0)
    ds = solver.reconstruct(samples=2, a=sensors(a, 0.03, 1), steps=8, return_samples=True)
    assert ds.attrs["method"] == "gaussian"  # the default: the best measured for Darcy
    assert ds["u"].dims == ("y", "x") and np.all(np.isfinite(ds["u"])) and np.all(ds["a"].values > 0)
    assert np.all(ds["u"].values[boundary_mask(64)] == 0)
    # every draw's u is the exact solve of its a
    for a_k, u_k in zip(ds["a_samples"].values, ds["u_samples"].values):
        assert solver.problem.relative_residual(u_k, a_k) < 1e-10


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
    from pdediff.physics.coefficients import get_coefficient
    from pdediff.physics.problems.base import Grid

    solver = pdediff.load_solver("darcy-joint")
    assert solver.card["coefficient"] == "threshold"  # its training law (the family's defaults)
    a = {name: get_coefficient(name).sample(Grid(64), [np.random.default_rng([5, k]) for k in range(2)])
         for name in ("lognormal", "threshold")}
    scores = {name: solver.log_likelihood(a=v, u=solver.problem.reference_solve(v), steps=4) for name, v in a.items()}
    assert scores["lognormal"].max() < scores["threshold"].min()
