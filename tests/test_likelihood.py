"""Likelihood through the probability-flow ODE (pdediff.maths.likelihood, Solver.log_likelihood).

Exact answers: for Gaussian data the exact denoiser is linear, its divergence is a trace known in
closed form, and the ODE's log-density must match the Gaussian's log-density (noised by
sigma_min) in closed form; for a solver, the fields' density in their own units (the
normalisation's Jacobian, log-normal coefficients) is known in closed form too.
"""

import math

import numpy as np
import pytest
import torch

from pdediff.maths import likelihood
from pdediff.learning.conditioning import Normalisation, unknown_nodes
from pdediff.learning.config import Config, DataConfig, ModelConfig
from pdediff.solver import Solver

D_ = 12
SIGMA_MIN = 0.002


def gaussian(seed=0):
    """A correlated Gaussian in 12 dimensions and its exact denoiser."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(D_, D_, generator=g, dtype=torch.float64) * 0.3
    cov = a @ a.T + 0.2 * torch.eye(D_, dtype=torch.float64)
    mu = torch.randn(D_, generator=g, dtype=torch.float64) * 0.3

    def denoiser(x, sigma, cond):
        gain = cov @ torch.linalg.inv(cov + sigma**2 * torch.eye(D_, dtype=torch.float64))
        return mu + (x - mu) @ gain.T

    x0 = mu + torch.randn(5, D_, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    return mu, cov, denoiser, x0


def closed_form(mu, cov, x0, sigma=SIGMA_MIN):
    return torch.distributions.MultivariateNormal(mu, cov + sigma**2 * torch.eye(D_, dtype=torch.float64)).log_prob(x0)


def test_exact_divergence_is_the_trace_of_the_denoisers_jacobian():
    mu, cov, denoiser, x0 = gaussian()
    sigma = 0.7
    _, div = likelihood.drift_and_divergence(denoiser, x0, sigma, None, torch.ones(1, D_, dtype=torch.float64), None)
    gain = cov @ torch.linalg.inv(cov + sigma**2 * torch.eye(D_, dtype=torch.float64))
    assert torch.allclose(div, (D_ - torch.trace(gain)) / sigma * torch.ones(5, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("probe", likelihood.PROBES)
def test_hutchinson_estimate_is_unbiased(probe):
    mu, cov, denoiser, x0 = gaussian()
    free = torch.ones(1, D_, dtype=torch.float64)
    _, exact = likelihood.drift_and_divergence(denoiser, x0, 0.7, None, free, None)
    gens = [torch.Generator().manual_seed(k) for k in range(5)]
    v = likelihood.draw_probes(x0.shape, 4000, probe, gens, dtype=torch.float64)
    if probe == "rademacher":
        assert torch.all(v.abs() == 1)
    _, estimate = likelihood.drift_and_divergence(denoiser, x0, 0.7, None, free, v)
    assert torch.allclose(estimate, exact, rtol=0.03)


def test_ode_log_likelihood_matches_the_gaussian_density_and_converges():
    mu, cov, denoiser, x0 = gaussian()
    exact = closed_form(mu, cov, x0)
    free = torch.ones(1, D_, dtype=torch.float64)
    prior = math.hypot(500.0, float(cov.diagonal().mean().sqrt()))
    errors = []
    for steps in (8, 16, 32):
        sigmas = likelihood.log_sigmas(steps + 1, SIGMA_MIN, 500.0)
        logp, nfe = likelihood.ode_log_likelihood(denoiser, x0, None, sigmas, free, prior)
        assert nfe == 4 * steps
        errors.append(float((logp - exact).abs().max()))
    assert errors[-1] < 0.01 * float(exact.abs().min())
    assert errors[-1] < 0.05 and errors[0] > 8 * errors[1] and errors[1] > 8 * errors[2]  # fourth order: 16x
    # Hutchinson's estimate along the same path: unbiased, its errors spread about zero
    x = x0.repeat(8, 1)  # 8 probe sets of 16 for each sample
    gens = [torch.Generator().manual_seed(k) for k in range(len(x))]
    v = likelihood.draw_probes(x.shape, 16, "rademacher", gens, dtype=torch.float64)
    noisy, _ = likelihood.ode_log_likelihood(denoiser, x, None, likelihood.log_sigmas(33, SIGMA_MIN, 500.0), free,
                                             prior, v)
    error = noisy - exact.repeat(8)
    assert 0 < float(error.std()) < 1.0
    assert abs(float(error.mean())) < 3 * float(error.std()) / math.sqrt(len(error))


def test_fixed_coordinates_are_not_part_of_the_density():
    """Coordinates outside ``free`` keep their values and leave the density: with the free ones
    independent of them, log p is the free coordinates' marginal."""
    mu, cov, denoiser, x0 = gaussian()
    fixed = 3

    def padded(x, sigma, cond):  # three extra coordinates, returned as they are
        return torch.cat([denoiser(x[:, :D_], sigma, cond), x[:, D_:]], dim=1)

    x = torch.cat([x0, torch.full((5, fixed), 7.0, dtype=torch.float64)], dim=1)
    free = torch.cat([torch.ones(1, D_), torch.zeros(1, fixed)], dim=1).double()
    prior = math.hypot(500.0, float(cov.diagonal().mean().sqrt()))
    logp, _ = likelihood.ode_log_likelihood(padded, x, None, likelihood.log_sigmas(33, SIGMA_MIN, 500.0), free, prior)
    assert float((logp - closed_form(mu, cov, x0)).abs().max()) < 0.05


def test_bad_schedules_are_refused():
    _, _, denoiser, x0 = gaussian()
    free = torch.ones(1, D_, dtype=torch.float64)
    with pytest.raises(ValueError, match="must increase"):
        likelihood.ode_log_likelihood(denoiser, x0, None, torch.tensor([1.0, 0.5]), free, 1.0)
    with pytest.raises(ValueError, match="steps"):
        likelihood.log_sigmas(1, 0.1, 1.0)
    with pytest.raises(ValueError, match="probe"):
        likelihood.draw_probes((2, 3), 1, "uniform", [torch.Generator()] * 2)


# ------------------------------------------------------------------ the solver: units and Jacobians
N = 8
MU, S = 0.3, 0.7  # every unknown node of every joint field ~ N(MU, S^2) in model units, independently


class IidOracle(torch.nn.Module):
    """The exact denoiser of iid N(MU, S^2) data (the drift is zero off the free nodes anyway)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("sigma_data", torch.tensor(S, dtype=torch.float64))
        self.anchor = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x, sigma, cond):
        sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1, 1, 1)
        return MU + S**2 / (S**2 + sigma**2) * (x - MU) + 0 * self.anchor


def iid_solver(problem, joint, norm):
    config = Config(data=DataConfig(problem=problem),
                    model=ModelConfig(joint=list(joint), sigma_min=SIGMA_MIN, sigma_max=400.0, precond="edm"))
    return Solver(IidOracle(), config, norm, {"n": N})


def normal_logpdf(z, mean, std):
    return -0.5 * np.log(2 * np.pi * std**2) - (z - mean) ** 2 / (2 * std**2)


def test_solver_density_is_in_the_fields_units():
    """rho and phi in units of 2 and 0.5: each unknown node's density is that of N(MU, S^2)
    scaled by the unit, only interior nodes count (phi's ring is g, rho's is zero)."""
    solver = iid_solver("poisson", ["rho", "phi"], Normalisation({"rho": 2.0, "g": 0.5}, 0.5, S))
    rng = np.random.default_rng(0)
    std = np.hypot(S, SIGMA_MIN)
    rho = 2.0 * (MU + std * rng.standard_normal((3, N, N)))
    phi = 0.5 * (MU + std * rng.standard_normal((3, N, N)))
    inside = unknown_nodes(solver.problem, "phi", N)
    expected = (normal_logpdf(rho[:, inside], 2 * MU, 2 * std).sum(1)
                + normal_logpdf(phi[:, inside], 0.5 * MU, 0.5 * std).sum(1))
    logp = solver.log_likelihood(rho=rho, phi=phi, g=np.zeros((3, N, N)), steps=64, divergence="exact")
    assert logp.shape == (3,) and np.allclose(logp, expected, atol=0.03)
    # the solution's ring is the Dirichlet data, not a coordinate: whatever phi holds there
    ring = ~unknown_nodes(solver.problem, "phi", N)
    odd = np.where(ring, np.nan, phi)
    assert np.allclose(solver.log_likelihood(rho=rho, phi=odd, g=np.zeros((3, N, N)), steps=64, divergence="exact"),
                       logp, rtol=1e-12)
    bits = solver.log_likelihood(rho=rho[0], phi=phi[0], steps=64, divergence="exact", bits=True)
    assert isinstance(bits, float) and np.isclose(bits, -expected[0] / (2 * inside.sum() * np.log(2)), atol=1e-3)


def test_solver_density_of_a_coefficient_is_log_normal():
    """A coefficient is modelled as (log a - offset) / scale: its density carries 1 / a."""
    norm = Normalisation({"a": 0.4, "f": 1.0, "g": 2.0}, 2.0, S, {"a": 0.1})
    solver = iid_solver("darcy", ["a", "u"], norm)
    rng = np.random.default_rng(1)
    std = np.hypot(S, SIGMA_MIN)
    log_a = 0.1 + 0.4 * (MU + std * rng.standard_normal((2, N, N)))
    u = 2.0 * (MU + std * rng.standard_normal((2, N, N)))
    inside = unknown_nodes(solver.problem, "u", N)
    expected = ((normal_logpdf(log_a, 0.1 + 0.4 * MU, 0.4 * std) - log_a).reshape(2, -1).sum(1)
                + normal_logpdf(u[:, inside], 2 * MU, 2 * std).sum(1))
    logp = solver.log_likelihood(a=np.exp(log_a), u=u, steps=64, probes=1)  # iid: Hutchinson is exact here
    assert np.allclose(logp, expected, atol=0.03)


def test_log_likelihood_bad_input_says_what_is_wrong():
    import pdediff

    solver = iid_solver("poisson", ["rho", "phi"], Normalisation({"rho": 1.0, "g": 1.0}, 1.0, S))
    z = np.zeros((N, N))
    with pytest.raises(ValueError, match="probes=0"):
        solver.log_likelihood(rho=z, phi=z, probes=0)
    with pytest.raises(ValueError, match=r"phi has shape \(8, 7\)"):
        solver.log_likelihood(rho=z, phi=np.zeros((N, N - 1)))
    with pytest.raises(ValueError, match=r"\['phi'\] are missing"):
        solver.log_likelihood(rho=z)
    nan = z.copy()
    nan[3, 3] = np.nan
    with pytest.raises(ValueError, match="rho contains NaN"):
        solver.log_likelihood(rho=nan, phi=z)
    assert np.isfinite(solver.log_likelihood(rho=z, phi=z, steps=np.int64(2)))
    with pytest.raises(ValueError, match="divergence="):
        solver.log_likelihood(rho=z, phi=z, divergence="trace")
    forward = pdediff.load_solver()
    with pytest.raises(ValueError, match="spike.*load_solver\\('poisson-joint'\\)"):
        forward.log_likelihood(rho=np.zeros((64, 64)), phi=np.zeros((64, 64)))
