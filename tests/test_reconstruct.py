"""reconstruct's methods "gaussian" and "diffusion" at the API boundary: bad input, the check,
the limits, the forward models and the other problems."""

import numpy as np
import pytest

import pdediff
from pdediff import AccuracyWarning
from pdediff.maths.kriging import DENSE_MAX
from pdediff.physics.problems.base import boundary_mask
from pdediff.physics.sources import draw


@pytest.fixture(scope="module")
def joint():
    return pdediff.load_solver("poisson-joint")


@pytest.fixture(scope="module")
def sensed():
    rho, g = draw(64, 2, source="blobs", boundary="zero", seed=21)
    phi = pdediff.physics.problems.Poisson().fast_solve(rho, g)
    keep = np.random.default_rng(0).random(phi.shape) < 0.03
    return rho, g, phi, np.where(keep, phi, np.nan)


@pytest.mark.parametrize("method", ["gaussian", "diffusion"])
def test_bad_input_names_the_field(joint, sensed, method):
    _, _, phi, seen = sensed
    big = np.where(np.random.default_rng(1).random((64, 64)) < 0.9, 1.0, np.nan)  # 90 % of phi
    cases = [
        (dict(phi=seen[0, :63]), "phi has shape"),
        (dict(phi=np.full((64, 64), np.nan)), "phi has no observed node"),
        (dict(phi=np.where(np.isnan(seen), np.nan, np.inf)), "phi contains inf"),
        (dict(phi=seen, samples=0), "samples=0"),
        (dict(phi=seen, sigma_y=-1.0), "sigma_y=-1.0"),
        (dict(phi=seen, holdout=1.5), "holdout=1.5"),
        (dict(phi=seen, g=np.full((2, 64, 64), np.nan)), "g must be given whole"),
        (dict(phi=seen[:, :32, :32]), "trained on \\(64, 64\\)"),
        (dict(phi=big, rho=np.where(big > 0, 0.0, np.nan)), f"holds at most {DENSE_MAX}"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            joint.reconstruct(method=method, **kwargs)


def test_methods_the_model_does_not_support_are_refused(joint, sensed):
    _, _, _, seen = sensed
    forward = pdediff.load_solver()
    with pytest.raises(ValueError, match="method='diffusion' needs a joint model"):
        forward.reconstruct(phi=seen, method="diffusion")
    with pytest.raises(ValueError, match="method='magic' is unknown; expected one of \\['gaussian', 'diffusion'"):
        joint.reconstruct(phi=seen, method="magic")
    with pytest.raises(ValueError, match="forward model.*method='gaussian'"):
        forward.reconstruct(phi=seen)  # the default of a forward model: refused, with the way out
    # a forward model's training law still gives the Gaussian baseline
    ds = forward.reconstruct(phi=seen, method="gaussian", samples=2)
    assert ds["phi"].shape == seen.shape and ds.attrs["method"] == "gaussian"


def test_gaussian_works_for_any_spectral_problem_with_a_law():
    solver = pdediff.load_solver("helmholtz")
    f, g = draw(64, 1, source="blobs", boundary="zero", seed=3)
    u = solver.problem.fast_solve(f, g)
    seen = np.where(np.random.default_rng(2).random(u.shape) < 0.1, u, np.nan)
    ds = solver.reconstruct(u=seen, g=g, method="gaussian", samples=2)
    assert ds["residual_rel"].values.max() < 1e-10  # the mean is an exact solution
    assert ds.attrs["dirichlet"] == "given"


def test_gaussian_posterior_is_seeded_and_exact(joint, sensed):
    _, g, phi, seen = sensed
    a = joint.reconstruct(phi=seen, method="gaussian", samples=3, seed=5, return_samples=True)
    b = joint.reconstruct(phi=seen, method="gaussian", samples=3, seed=5, return_samples=True)
    c = joint.reconstruct(phi=seen, method="gaussian", samples=3, seed=6, return_samples=True)
    assert np.array_equal(a["rho_samples"].values, b["rho_samples"].values)
    assert not np.array_equal(a["rho_samples"].values, c["rho_samples"].values)
    assert np.array_equal(a["phi"].values, c["phi"].values)  # the mean is exact, not a sample mean
    assert a.attrs["check"] == "leave-one-out" and a["residual_heldout"].shape == (2,)
    assert a["residual_rel"].values.max() < 1e-10


def test_a_source_unlike_the_law_warns(joint):
    """Single-node charges from a prior of blobs and Gaussian fields: the posterior cannot predict
    its own observations, and says so."""
    rho, g = draw(64, 2, source="deltas", boundary="zero", seed=4)
    phi = joint.problem.fast_solve(rho, g)
    seen = np.where(np.random.default_rng(4).random(phi.shape) < 0.3, phi, np.nan)
    with pytest.warns(AccuracyWarning, match="predicted poorly"):
        joint.reconstruct(phi=seen, g=g, method="gaussian", samples=2)


def test_whole_source_is_substituted_and_the_ring_is_the_data(joint, sensed):
    rho, g, phi, _ = sensed
    ds = joint.reconstruct(rho=rho, g=g, method="gaussian", samples=2)
    assert np.abs(ds["phi"].values - phi).max() < 1e-12 * np.abs(phi).max()
    assert np.all(ds["phi_std"].values < 1e-12)
    ring = boundary_mask(64)
    assert np.array_equal(ds["phi"].values[:, ring], g[:, ring])
