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
