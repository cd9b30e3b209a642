"""Exact tests of the Gaussian posteriors through the operator (kriging, Gauss-Newton, the
physics posterior denoiser fed the exact denoiser of Gaussian data)."""

import numpy as np
import pytest
import scipy.linalg
import torch

from pdediff.maths.gauss_newton import EllipticModel, map_estimate
from pdediff.maths.gaussian import DenseGaussian, SpectralGaussian, inverse, transform, transform_1d
from pdediff.maths.kriging import LinearModel, krige, prior_amplitude, ring_nodes
from pdediff.maths.physics_posterior import linear_posterior
from pdediff.physics.problems import Darcy, Helmholtz, Poisson
from pdediff.maths.samplers import get_sigmas_karras, sample_heun


def _spectrum(n, basis, rng, decay=2.0):
    m = n - 2 if basis == "dst" else n
    k = np.arange(1, m + 1)
    return (1.0 / (k[:, None] ** 2 + k[None, :] ** 2) ** (decay / 2)) * rng.uniform(0.5, 1.5, (m, m))


def _lift(problem, n):
    nodes = ring_nodes(n)
    g = np.zeros((len(nodes), n * n))
    g[np.arange(len(nodes)), nodes] = 1.0
    return problem.fast_solve(np.zeros((len(nodes), n, n)), g.reshape(-1, n, n))


def _dense_posterior(problem, n, prior, ring, phi_nodes, rho_nodes, y, sigma_y):
    """The same posterior by brute force: explicit matrices of G, E, C and the textbook formula."""
    m = (n - 2) ** 2
    t1 = transform_1d(np.eye(n - 2), "dst")
    t = np.kron(t1, t1)
    c_rho = t.T @ np.diag(prior.variance.ravel()) @ t
    mu_rho = prior.mean[1:-1, 1:-1].ravel()
    inv = np.linalg.inv(problem.operator(n).toarray())
    inner = np.zeros((n * n, m))
    idx = np.flatnonzero(~np.isin(np.arange(n * n), ring_nodes(n)))
    inner[idx, np.arange(m)] = 1.0
    e = _lift(problem, n).reshape(len(ring_nodes(n)), -1).T
    # unknowns (rho interior, g ring); fields as maps of them
    rho_map = np.hstack([inner, np.zeros((n * n, e.shape[1]))])
    phi_map = np.hstack([inner @ inv, e])
    mean = np.concatenate([mu_rho, ring.mean])
    cov = scipy.linalg.block_diag(c_rho, ring.cov)
    h = np.vstack([phi_map[phi_nodes], rho_map[rho_nodes]])
    s = h @ cov @ h.T + sigma_y**2 * np.eye(len(h))
    gain = cov @ h.T @ np.linalg.inv(s)
    post_mean = mean + gain @ (y - h @ mean)
    post_cov = cov - gain @ h @ cov
    return {name: (f @ post_mean, np.sqrt(np.maximum(np.diag(f @ post_cov @ f.T), 0)))
            for name, f in (("rho", rho_map), ("phi", phi_map))}


@pytest.mark.parametrize("problem", [Poisson(), Helmholtz(k=3.0)], ids=["poisson", "helmholtz"])
@pytest.mark.parametrize("sigma_y", [0.0, 1e-3])
def test_krige_is_the_closed_form_posterior(problem, sigma_y):
    n = 9
    rng = np.random.default_rng(0)
    prior = SpectralGaussian(np.zeros((n, n)), _spectrum(n, "dst", rng), "dst")
    prior.mean[1:-1, 1:-1] = rng.normal(0, 0.1, (n - 2, n - 2))
    r = len(ring_nodes(n))
    root = rng.normal(size=(r, r)) / r
    ring = DenseGaussian(rng.normal(0, 0.01, r), root @ root.T * 1e-3 + 1e-6 * np.eye(r))
    model = LinearModel(problem.eigenvalues(n), _lift(problem, n), prior, ring)
    phi_nodes = np.array([10, 20, 31, 40, 0, 8, 44])  # interior and ring nodes (the ring observes g)
    rho_nodes = np.array([12, 30, 57])
    truth = prior.sample(rng, 1)[0]
    g = np.zeros(n * n)
    g[ring_nodes(n)] = ring.sample(rng, 1)[0]
    phi = problem.fast_solve(truth, g.reshape(n, n))
    y = np.concatenate([phi.ravel()[phi_nodes], truth.ravel()[rho_nodes]]) + sigma_y * rng.normal(size=10)
    post = krige(model, phi_nodes, y[:7], rho_nodes, y[7:], sigma_y, rng, 3, fit_amplitude=False)
    want = _dense_posterior(problem, n, prior, ring, phi_nodes, rho_nodes, y, sigma_y)
    scale = {"rho": np.abs(want["rho"][0]).max(), "phi": np.abs(want["phi"][0]).max()}
    tol = 1e-6 if sigma_y else 1e-5  # exact observations: S's jitter (kriging.JITTER) and its conditioning
    np.testing.assert_allclose(post.rho.ravel(), want["rho"][0], atol=tol * scale["rho"])
    np.testing.assert_allclose(post.phi.ravel(), want["phi"][0], atol=tol * scale["phi"])
    # (the jitter's variance, 1e-10 of S's mean diagonal, is a spread of ~1e-5 at observed nodes)
    np.testing.assert_allclose(post.rho_std.ravel(), want["rho"][1], atol=1e-3 * want["rho"][1].max())
    np.testing.assert_allclose(post.phi_std.ravel(), want["phi"][1], atol=1e-3 * want["phi"][1].max())


def test_krige_draws_are_exact_solutions_with_the_posterior_moments():
    problem, n = Poisson(), 8
    rng = np.random.default_rng(1)
    prior = SpectralGaussian(np.zeros((n, n)), _spectrum(n, "dst", rng), "dst")
    model = LinearModel(problem.eigenvalues(n), _lift(problem, n), prior, None, np.zeros((n, n)))
    nodes = np.array([9, 18, 27, 36, 45])
    truth = prior.sample(rng, 1)[0]
    y = problem.fast_solve(truth).ravel()[nodes]
    draws = 4000
    post = krige(model, nodes, y, np.zeros(0, int), np.zeros(0), 0.0, rng, draws, fit_amplitude=False)
    rel = problem.relative_residual(post.phi_draws, post.rho_draws, post.g_draws)
    assert rel.max() < 1e-10
    # every draw fits the exact observations
    np.testing.assert_allclose(post.phi_draws.reshape(draws, -1)[:, nodes], np.broadcast_to(y, (draws, 5)),
                               atol=1e-6 * np.abs(y).max())
    spread = post.rho_std.max()
    assert np.abs(post.rho_draws.mean(0) - post.rho).max() < 5 * spread / np.sqrt(draws)
    np.testing.assert_allclose(post.rho_draws.std(0), post.rho_std, atol=0.06 * spread)


@pytest.mark.parametrize("sigma_y", [0.0, 0.05])
def test_prior_amplitude_maximises_the_marginal_likelihood(sigma_y):
    rng = np.random.default_rng(2)
    m, modes = 12, 30
    a = rng.normal(size=(m, modes))
    variance = rng.uniform(0.1, 1.0, modes)
    resid = 3.0 * (a * np.sqrt(variance)) @ rng.normal(size=modes) + sigma_y * rng.normal(size=m)
    s = prior_amplitude(a, np.zeros((m, 0)), resid, variance, np.zeros((0, 0)), np.full(m, sigma_y**2))
    k = (a * variance) @ a.T

    def loglik(scale):
        cov = scale**2 * k + (sigma_y**2 + 1e-10 * np.mean(np.diag(k)) * scale**2) * np.eye(m)
        sign, logdet = np.linalg.slogdet(cov)
        return -0.5 * (logdet + resid @ np.linalg.solve(cov, resid))

    grid = np.exp(np.linspace(np.log(s) - 1, np.log(s) + 1, 2001))
    best = grid[np.argmax([loglik(v) for v in grid])]
    assert abs(np.log(best / s)) < 2e-3


def test_amplitude_keeps_the_mean_of_exact_observations_and_scales_the_spread():
    problem, n = Poisson(), 9
    rng = np.random.default_rng(3)
    prior = SpectralGaussian(np.zeros((n, n)), _spectrum(n, "dst", rng), "dst")
    model = LinearModel(problem.eigenvalues(n), _lift(problem, n), prior, None, np.zeros((n, n)))
    nodes = np.array([10, 20, 30, 40, 50, 60])
    y = problem.fast_solve(10 * prior.sample(rng, 1)[0]).ravel()[nodes]
    fixed = krige(model, nodes, y, np.zeros(0, int), np.zeros(0), 0.0, rng, 1, fit_amplitude=False)
    fitted = krige(model, nodes, y, np.zeros(0, int), np.zeros(0), 0.0, rng, 1)
    np.testing.assert_allclose(fitted.phi, fixed.phi, atol=1e-8 * np.abs(fixed.phi).max())
    np.testing.assert_allclose(fitted.rho_std, fitted.amplitude * fixed.rho_std, rtol=1e-6, atol=1e-12)
    # the leave-one-out residuals of the fitted prior are of unit size, the fixed one's ten times that
    assert 0.2 < np.sqrt(np.mean(fitted.loo**2)) < 3
    assert np.sqrt(np.mean(fixed.loo**2)) > 3


def test_darcy_adjoint_rows_match_finite_differences():
    n = 12
    problem = Darcy()
    rng = np.random.default_rng(4)
    z = rng.normal(0, 0.5, (n, n))
    model = EllipticModel(problem, np.ones((n, n)) + rng.uniform(0, 1, (n, n)), np.zeros((n, n)))
    u, lu = model.solve(z)
    nodes = np.array([13, 30, 50, 77, 100])
    rows = model.jacobian_rows(z, u, lu, nodes)
    d = rng.normal(size=(n, n))
    eps = 1e-6
    fd = (model.solve(z + eps * d)[0].ravel()[nodes] - model.solve(z - eps * d)[0].ravel()[nodes]) / (2 * eps)
    np.testing.assert_allclose(rows @ d.ravel(), fd, rtol=1e-6, atol=1e-12)
    assert np.allclose(u, problem.reference_solve(np.exp(z), model.f, model.g))


def test_gauss_newton_on_observations_of_log_a_is_kriging():
    """Observations of log a alone are linear: one Gauss-Newton step is the exact posterior."""
    n = 8
    rng = np.random.default_rng(5)
    prior = SpectralGaussian(rng.normal(0, 0.1, (n, n)), _spectrum(n, "dct", rng), "dct")
    model = EllipticModel(Darcy(), np.ones((n, n)), np.zeros((n, n)))
    nodes = np.array([0, 9, 27, 40, 63])
    z_true = prior.sample(rng, 1)[0]
    sigma = 0.01
    y = z_true.ravel()[nodes] + sigma * rng.normal(size=5)
    post = map_estimate(model, prior, np.zeros(0, int), np.zeros(0), nodes, y, 0.0, np.full(5, sigma), rng, 2)
    t1 = transform_1d(np.eye(n), "dct")
    t = np.kron(t1, t1)
    c = t.T @ np.diag(prior.variance.ravel()) @ t
    h = np.eye(n * n)[nodes]
    mean = prior.mean.ravel() + c @ h.T @ np.linalg.solve(h @ c @ h.T + sigma**2 * np.eye(5), y - h @ prior.mean.ravel())
    np.testing.assert_allclose(post.z.ravel(), mean, atol=1e-8)
    assert np.allclose(post.u_draws[0], Darcy().reference_solve(np.exp(post.z_draws[0])))


def test_gauss_newton_fits_observations_of_the_solution():
    n = 12
    problem = Darcy()
    rng = np.random.default_rng(6)
    prior = SpectralGaussian(np.zeros((n, n)), 0.3 * _spectrum(n, "dct", rng), "dct")
    model = EllipticModel(problem, np.ones((n, n)), np.zeros((n, n)))
    z_true = prior.sample(rng, 1)[0]
    u_true, _ = model.solve(z_true)
    interior = np.flatnonzero(~np.isin(np.arange(n * n), ring_nodes(n)))
    nodes = rng.choice(interior, 20, replace=False)
    y = u_true.ravel()[nodes]
    start = model.solve(prior.mean)[0].ravel()[nodes]
    post = map_estimate(model, prior, nodes, y, np.zeros(0, int), np.zeros(0), 0.0, np.zeros(0), rng, 2)
    assert np.linalg.norm(post.u.ravel()[nodes] - y) < 1e-3 * np.linalg.norm(start - y)
    for zd, ud in zip(post.z_draws, post.u_draws):
        assert problem.relative_residual(ud, np.exp(zd)) < 1e-10


def test_physics_posterior_with_the_exact_denoiser_samples_the_kriging_posterior():
    """The probability-flow ODE of the conditioned exact Gaussian denoiser lands on the exact
    posterior: its draws' mean and spread are kriging's, and every draw solves the PDE."""
    problem, n = Poisson(), 8
    rng = np.random.default_rng(7)
    prior = SpectralGaussian(np.zeros((n, n)), _spectrum(n, "dst", rng), "dst")
    prior.mean[1:-1, 1:-1] = 0.05
    model = LinearModel(problem.eigenvalues(n), _lift(problem, n), prior, None, np.zeros((n, n)))
    nodes = np.array([10, 19, 28, 37, 46, 21])
    truth = prior.sample(rng, 1)[0]
    y = problem.fast_solve(truth).ravel()[nodes]
    want = krige(model, nodes, y, np.zeros(0, int), np.zeros(0), 0.0, rng, 1, fit_amplitude=False)
    a, _ = model.rows(nodes, np.zeros(0, int))

    def denoiser(x, sigma, cond):
        s = float(sigma.reshape(-1)[0])
        rho = prior.denoise(x[:, 0].double().numpy(), s)
        return torch.stack([torch.as_tensor(rho), x[:, 1]], dim=1).to(x.dtype)

    def model_of(rho, phi, d):
        return torch.stack([torch.as_tensor(rho), torch.as_tensor(phi)], dim=1).to(d.dtype)

    draws = 3000
    groups = [(np.arange(draws), a, y, np.zeros(len(y)), prior.variance)]
    post = linear_posterior(denoiser, lambda d: d[:, 0].double().numpy(), model_of, groups, 1.0,
                            lambda f: model.solution(f, np.zeros((len(f), len(model.lift)))))
    sigmas = get_sigmas_karras(64, 0.002, 80.0, dtype=torch.float64)
    x = torch.randn((draws, 2, n, n), generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 80.0
    x, _ = sample_heun(post, x, sigmas)
    rho = np.where(np.isin(np.arange(n * n), ring_nodes(n)).reshape(n, n), 0.0, x[:, 0].numpy())
    phi = problem.fast_solve(rho)
    spread = want.rho_std.max()
    assert np.abs(rho.mean(0) - want.rho).max() < 0.1 * spread
    np.testing.assert_allclose(rho.std(0), want.rho_std, atol=0.1 * spread)
    np.testing.assert_allclose(phi.reshape(draws, -1)[:, nodes], np.broadcast_to(y, (draws, len(y))),
                               atol=1e-4 * np.abs(y).max())
