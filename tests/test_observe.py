"""Sampling joint models from observations (pdediff.observe, Solver.reconstruct).

Exact answers: for isotropic Gaussian data the posterior given noisy or exact observations of
some nodes is known in closed form (observed nodes: the precision-weighted mean of prior and
observation; the others: the prior), and with the exact prior denoiser the guided probability-
flow ODE must sample it: means and spreads of reconstruct's draws are checked against it.
"""

import numpy as np
import pytest
import torch

from pdediff import observe
from pdediff.conditioning import Normalisation
from pdediff.config import Config, DataConfig, ModelConfig
from pdediff.problems.base import boundary_mask
from pdediff.solver import Solver

N = 8
MU, S = 0.3, 0.7  # prior mean and standard deviation of every interior node (model units)


class GaussianOracle(torch.nn.Module):
    """The exact denoiser of rho, phi ~ N(MU, S^2) independently at interior nodes (rho = 0 and
    phi = g on the ring): D = MU + S^2 / (S^2 + sigma^2) (x - MU)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("sigma_data", torch.tensor(S, dtype=torch.float64))
        self.anchor = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))  # sets the solver's dtype
        self.calls = 0

    def forward(self, x, sigma, cond):
        self.calls += 1
        sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1, 1, 1)
        d = MU + S**2 / (S**2 + sigma**2) * (x - MU)
        ring = cond[:, -1:].bool()
        g = cond[:, :1]
        return torch.cat([torch.where(ring, 0.0, d[:, :1]), torch.where(ring, g, d[:, 1:])], dim=1) + 0 * self.anchor


def oracle_solver(steps=24):
    config = Config(data=DataConfig(problem="poisson"),
                    model=ModelConfig(joint=["rho", "phi"], sampler="heun", steps=steps, sigma_max=40.0,
                                      precond="edm"))
    norm = Normalisation({"rho": 1.0, "g": 1.0}, 1.0, S)
    return Solver(GaussianOracle(), config, norm, {"n": N})


def test_posterior_denoisers_are_exact_for_isotropic_gaussian_data():
    torch.manual_seed(0)
    x = torch.randn(3, 2, N, N, dtype=torch.float64) * 2
    y = torch.randn(3, 2, N, N, dtype=torch.float64)
    mask = (torch.rand(3, 2, N, N) < 0.3).double()
    prior = lambda x, sigma, cond: MU + S**2 / (S**2 + torch.as_tensor(sigma).reshape(-1, 1, 1, 1)**2) * (x - MU)  # noqa: E731
    for sigma in (0.05, 0.8, 12.0):
        for sigma_y in (0.0, 0.4):
            # Bayes: x0 | x ~ N(D, r^2), y = x0 + N(0, sigma_y^2) at observed nodes
            r2 = sigma**2 * S**2 / (sigma**2 + S**2)
            d = prior(x, torch.tensor(sigma, dtype=torch.float64), None)
            exact = d + mask * r2 / (r2 + sigma_y**2) * (y - d)
            for make in (observe.replacement, observe.observation_guided):
                got = make(prior, y, mask, S, sigma_y)(x, torch.full((3,), sigma, dtype=torch.float64), None)
                assert torch.allclose(got, exact, atol=1e-12), (make.__name__, sigma, sigma_y)


@pytest.mark.parametrize("method", ["dps", "replace"])
def test_reconstruct_samples_the_gaussian_posterior(method):
    solver = oracle_solver()
    rng = np.random.default_rng(0)
    phi = np.full((N, N), np.nan)
    rho = np.full((N, N), np.nan)
    phi[2, 3], phi[5, 5] = 1.5, -0.4
    rho[3, 3] = 2.0
    sigma_y = 0.5
    draws = 3000
    ds = solver.reconstruct(samples=draws, seed=1, method=method, sigma_y=sigma_y, batch_size=1000,
                            rho=rho, phi=phi, return_samples=True)
    inside = ~boundary_mask(N)
    se = S / np.sqrt(draws)
    post_var = S**2 * sigma_y**2 / (S**2 + sigma_y**2)
    for name, obs in (("rho", rho), ("phi", phi)):
        seen = np.isfinite(obs) & inside
        mean_exact = np.where(seen, MU + S**2 / (S**2 + sigma_y**2) * (np.nan_to_num(obs) - MU), MU)
        std_exact = np.where(seen, np.sqrt(post_var), S)
        mean, std = ds[name].values, ds[f"{name}_std"].values
        assert np.all(np.abs(mean - mean_exact)[inside] < 4.5 * se), name
        assert np.all(np.abs(std / std_exact - 1)[inside] < 0.08), name
        assert ds[f"{name}_samples"].shape == (draws, N, N)
        assert np.array_equal(ds[f"{name}_observed"].values, seen)
    ring = boundary_mask(N)
    assert np.all(ds["phi"].values[ring] == 0) and np.all(ds["rho"].values[ring] == 0)
    assert ds.attrs["nfe"] == 2 * 24 - 1 and ds.attrs["method"] == method


def test_exact_observations_are_returned_exactly_and_draws_are_seeded():
    solver = oracle_solver(steps=8)
    phi = np.full((2, N, N), np.nan)
    phi[:, 4, 4] = [1.0, -2.0]
    g = np.zeros((2, N, N))
    g[:, 0, :] = 0.25
    ds = solver.reconstruct(samples=5, seed=3, phi=phi, g=g, batch_size=3)
    assert ds["phi"].dims == ("sample", "y", "x")
    assert np.array_equal(ds["phi"].values[:, 4, 4], [1.0, -2.0])
    assert np.all(ds["phi_std"].values[:, 4, 4] == 0)
    assert np.all(ds["phi"].values[:, 0, :] == 0.25)
    again = solver.reconstruct(samples=5, seed=3, phi=phi, g=g, batch_size=10)
    assert np.array_equal(again["rho"].values, ds["rho"].values)  # batching does not change the draws
    other = solver.reconstruct(samples=5, seed=4, phi=phi, g=g)
    assert not np.array_equal(other["rho"].values, ds["rho"].values)
    assert "residual" in ds and ds["residual_rel"].shape == (2,)


def test_reconstruct_bad_input_names_the_field():
    solver = oracle_solver(steps=4)
    phi = np.full((N, N), np.nan)
    phi[3, 3] = 1.0
    cases = [
        (dict(phi=np.zeros((N, N + 1))), "phi has shape"),
        (dict(phi=phi, rho=np.zeros((N + 1, N + 1))), "rho has shape"),
        (dict(phi=np.full((N, N), np.nan)), "phi has no observed node"),
        (dict(phi=np.stack([phi, np.full((N, N), np.nan)])), "sample 1 of the batch has no observed node"),
        (dict(phi=phi, samples=0), "samples=0"),
        (dict(phi=phi, g=np.full((N, N), np.nan)), "g is a condition"),
        (dict(phi=np.where(np.isnan(phi), np.nan, np.inf)), "phi contains inf"),
        (dict(psi=phi), "not fields of problem"),
        (dict(g=np.zeros((N, N))), "nothing of"),
        (dict(phi=phi, method="magic"), "method='magic'"),
        (dict(phi=phi, sigma_y=-1.0), "sigma_y=-1.0"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            solver.reconstruct(**kwargs)


def test_forward_model_refuses_to_reconstruct():
    import pdediff

    solver = pdediff.load_solver()
    with pytest.raises(ValueError, match="forward model.*joint model"):
        solver.reconstruct(phi=np.zeros((64, 64)))
