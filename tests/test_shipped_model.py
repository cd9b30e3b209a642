"""The model shipped in pdediff/models: it loads with no argument and meets its measured figures.

Thresholds are the README's measured figures with a margin, on fresh samples the model never saw
(a seed stream the generator's splits do not use), so a regression in the engine or the file
shows up here.
"""

import numpy as np
import pytest

import pdediff
from pdediff import metrics
from pdediff.sources import draw

# measured with `python -m benchmarks` (see README); margins allow for other fresh samples
IN_DISTRIBUTION_REL_L2 = 0.02  # measured 0.0066 on these 8 samples
POLISHED_REL_L2 = 1e-4  # issue 5's target; measured 1.4e-6 with 2 AMG-preconditioned CG iterations
SEED_SPREAD = 1e-3  # issue 5's target; measured 1.2e-5 over 4 seeds
# other source families, 16 fresh samples each: (family, seed, threshold); measured 0.0091,
# 0.061 and 0.022. The base model without rough fields in training had 2.8 %, 13 % and 70 %
# over 128 samples (python -m benchmarks.families).
FAMILIES = [("disks_rects", 80, 0.05), ("point_dipoles", 81, 0.10), ("rough", 82, 0.06)]
RESAMPLED_128_REL_L2 = 0.02  # measured 0.0017 on 4 samples at N = 128 (issue 5's target: 5 %)


@pytest.fixture(scope="module")
def solver():
    return pdediff.load_solver()


@pytest.fixture(scope="module")
def fresh():
    rho, g = draw(64, 8, source="blobs,grf", boundary="zero,smooth", seed=77)
    return rho, g


def test_shipped_model_loads_with_its_card(solver):
    assert solver.grid_size == 64
    # fine-tuned (15,000 pairs of blobs, grf, rough) from the base model trained on 20,000 pairs
    assert solver.card["problem"] == "poisson" and solver.card["counts"]["train"] >= 15000
    assert solver.card["source"] == "blobs,grf,rough"
    assert "default64" in solver.config.train.init  # the base run (configs/default64.yaml)
    assert solver.config.model.network == "unet" and solver.config.model.sampler == "euler"
    assert solver.config.model.precond == "x0"


def test_accuracy_boundary_and_equivariance_on_fresh_samples(solver, fresh):
    rho, g = fresh
    ref = solver.problem.reference_solve(rho, g)
    phi = solver.solve(rho, g)
    rep = metrics.report(solver.problem, phi, {"rho": rho, "g": g}, ref)
    assert np.mean(rep["rel_l2"]) < IN_DISTRIBUTION_REL_L2
    assert np.max(rep["boundary_err"]) <= 1e-6
    for c in (1e-3, 1e3):
        np.testing.assert_allclose(solver.solve(c * rho, c * g), c * phi, rtol=1e-5, atol=1e-5 * c * np.abs(phi).max())


@pytest.mark.parametrize("family,seed,threshold", FAMILIES)
def test_other_source_families(solver, family, seed, threshold):
    rho, g = draw(64, 16, source=family, boundary="zero,smooth", seed=seed)
    phi = solver.solve(rho, g)
    assert np.mean(metrics.relative_l2(phi, solver.problem.reference_solve(rho, g))) < threshold


def test_polish_reaches_the_exact_solution_faster_than_from_zero(solver, fresh):
    rho, g = fresh
    ref = solver.problem.reference_solve(rho, g)
    phi = solver.solve(rho, g, polish=2)  # AMG-preconditioned CG
    assert np.mean(metrics.relative_l2(phi, ref)) < POLISHED_REL_L2
    start = solver.solve(rho, g)
    for method in ("cg", "amg"):
        _, from_net = solver.problem.iterative_solve(start, rho, g, maxiter=5000, rtol=1e-8, method=method)
        _, from_zero = solver.problem.iterative_solve(np.zeros_like(rho), rho, g, maxiter=5000, rtol=1e-8,
                                                      method=method)
        assert np.mean(from_net) < np.mean(from_zero)


def test_seeds_agree(solver, fresh):
    rho, g = fresh
    runs = np.stack([solver.solve(rho[:4], g[:4], seed=s) for s in range(4)])
    spread = np.linalg.norm(runs - runs.mean(0), axis=(2, 3)).mean(0) / np.linalg.norm(runs.mean(0), axis=(1, 2))
    assert np.mean(spread) < SEED_SPREAD


def test_the_unet_refuses_other_grids_unless_resampled(solver):
    with pytest.raises(ValueError, match=r"rho has shape \(128, 128\); this unet model was trained on \(64, 64\)"):
        solver.solve(np.zeros((128, 128)))
    rho, g = draw(128, 4, source="blobs,grf", boundary="zero,smooth", seed=79)
    ref = solver.problem.reference_solve(rho, g)
    assert np.mean(metrics.relative_l2(solver.solve(rho, g, resample=True), ref)) < RESAMPLED_128_REL_L2


@pytest.mark.slow
def test_test_split_accuracy_over_many_samples(solver):
    rho, g = draw(64, 256, source="blobs,grf", boundary="zero,smooth", seed=78)
    ref = solver.problem.reference_solve(rho, g)
    phi = solver.solve(rho, g)
    assert np.mean(metrics.relative_l2(phi, ref)) < IN_DISTRIBUTION_REL_L2
