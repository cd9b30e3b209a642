"""Exact-answer tests of pdediff.learning.losses with the exact denoiser of Gaussian data.

For x0 ~ N(0, diag(s^2)) and D(x, sigma) = s^2/(s^2+sigma^2) x, the denoising error at fixed
sigma is E (D(x0 + n) - x0)_i^2 = s_i^2 sigma^2 / (s_i^2 + sigma^2), so each loss's expectation is
a one-dimensional integral over the noise-level distribution, done here by quadrature.
"""

import math

import numpy as np
import pytest
import torch

from pdediff.learning.losses import LOSSES, EDMLoss, SDELoss
from pdediff.maths.sdes import SDES

torch.set_num_threads(1)  # the test machines are shared; threads only fight over tiny tensors

F64 = torch.float64
S = torch.linspace(0.3, 2.0, 8, dtype=F64)
N_SAMPLES = 20_000


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def exact_denoiser(x, sigma, cond=None):
    return S**2 / (S**2 + sigma[:, None] ** 2) * x


def denoising_error(sigma):
    """mean_i s_i^2 sigma^2 / (s_i^2 + sigma^2) for an array of sigma."""
    s2 = S.numpy()[None, :] ** 2
    sigma2 = np.asarray(sigma, dtype=np.float64)[:, None] ** 2
    return (s2 * sigma2 / (s2 + sigma2)).mean(axis=1)


def data(seed=0, n=N_SAMPLES):
    return S * torch.randn(n, 8, generator=_gen(seed), dtype=F64)


def assert_mc_close(losses, expected):
    """Sample mean within 5 standard errors of the exact expectation."""
    standard_error = float(losses.std()) / math.sqrt(losses.numel())
    assert abs(float(losses.mean()) - expected) < 5 * standard_error, (float(losses.mean()), expected, standard_error)


def test_fixed_sigma_denoising_error():
    """P_std = 0 fixes sigma = exp(P_mean): the loss is lambda(sigma) * mean_i s^2 sigma^2/(s^2+sigma^2)."""
    loss = EDMLoss(P_mean=math.log(0.7), P_std=0.0, sigma_data=0.5)
    losses = loss(exact_denoiser, data(1), generator=_gen(2))
    sigma = 0.7
    expected = (sigma**2 + 0.25) / (sigma * 0.5) ** 2 * denoising_error([sigma])[0]
    assert_mc_close(losses, expected)


@pytest.mark.parametrize("P_mean, P_std", [(-1.2, 1.2), (0.0, 0.5)])
def test_edm_loss_matches_its_log_normal_expectation(P_mean, P_std):
    loss = EDMLoss(P_mean=P_mean, P_std=P_std, sigma_data=0.5)
    losses = loss(exact_denoiser, data(3), generator=_gen(4))
    assert losses.shape == (N_SAMPLES,)
    # Gauss-Hermite: E f(sigma) with ln sigma = P_mean + P_std sqrt(2) u, weight exp(-u^2)/sqrt(pi).
    nodes, weights = np.polynomial.hermite.hermgauss(120)
    sigma = np.exp(P_mean + P_std * math.sqrt(2) * nodes)
    lam = (sigma**2 + 0.25) / (sigma * 0.5) ** 2
    expected = float(np.sum(weights * lam * denoising_error(sigma)) / math.sqrt(math.pi))
    assert_mc_close(losses, expected)


def _sde_loss_expectation(sde, eps, weighting):
    """E_{t ~ U[eps, T]} [w(t) mean_i s_i^2 sigma^2/(s_i^2+sigma^2)] by Gauss-Legendre in log t,
    with Song's weights divided through by std^2 sigma^2 (see SDELoss): w = lambda / (std sigma)^2,
    lambda = std^2 ("sigma2") or g^2 ("likelihood")."""
    nodes, weights = np.polynomial.legendre.leggauss(800)
    lo, hi = math.log(eps), math.log(float(sde.T))
    u = 0.5 * (hi - lo) * nodes + 0.5 * (hi + lo)
    t = torch.from_numpy(np.exp(u))
    sigma = sde.sigma(t)
    _, std = sde.marginal_prob(torch.ones(t.shape[0], dtype=F64), t)
    lam = std**2 if weighting == "sigma2" else sde.sde(torch.zeros_like(t), t)[1] ** 2
    integrand = (lam / (std * sigma) ** 2).numpy() * denoising_error(sigma.numpy()) * np.exp(u)
    return float(0.5 * (hi - lo) * np.sum(weights * integrand) / (float(sde.T) - eps))


@pytest.mark.parametrize("weighting", ["sigma2", "likelihood"])
@pytest.mark.parametrize("kind", sorted(SDES))
def test_sde_loss_matches_its_expectation(kind, weighting):
    sde = SDES[kind]()
    # The likelihood weighting behaves like 1/t near t = 0 for all but VE, so its variance grows
    # like 1/eps: a larger eps keeps the Monte Carlo error at a few percent.
    eps = 2e-2 if weighting == "likelihood" else 1e-3
    loss = SDELoss(sde, eps=eps, weighting=weighting)
    losses = loss(exact_denoiser, data(5), generator=_gen(6))
    assert losses.shape == (N_SAMPLES,)
    assert_mc_close(losses, _sde_loss_expectation(sde, eps, weighting))


def test_sde_loss_is_songs_dsm_objective():
    """Per sample, the loss equals lambda(t) * mean (s_theta(x_t) - grad log p_0t(x_t|x0))^2 with the
    score in the x_t variable, s = (D(x_t/scale, sigma) - x_t/scale) / (scale sigma^2)."""
    sde = SDES["vp"]()
    torch.manual_seed(0)  # SDELoss must not touch the global RNG: compare draws by hand
    gen = _gen(7)
    x0 = data(8, n=5)
    losses = SDELoss(sde, eps=1e-3, weighting="likelihood")(exact_denoiser, x0, generator=gen)
    gen = _gen(7)
    t = 1e-3 + (1 - 1e-3) * torch.rand(5, generator=gen, dtype=F64)
    z = torch.randn(5, 8, generator=gen, dtype=F64)
    mean, std = sde.marginal_prob(x0, t)
    x_t = mean + std[:, None] * z
    scale, sigma = sde.scale(t)[:, None], sde.sigma(t)
    x_sigma = x_t / scale
    score = (exact_denoiser(x_sigma, sigma) - x_sigma) / (scale * sigma[:, None] ** 2)
    g2 = sde.sde(x0, t)[1] ** 2
    expected = g2 * ((score + z / std[:, None]) ** 2).mean(dim=1)
    torch.testing.assert_close(losses, expected, rtol=1e-10, atol=0)


@pytest.mark.parametrize("make", [lambda: EDMLoss(), lambda: SDELoss(SDES["ve"]())], ids=["edm", "sde"])
def test_losses_are_per_sample_reproducible_and_differentiable(make):
    loss = make()
    x0 = torch.randn(4, 1, 3, 3, generator=_gen(9))
    weight = torch.nn.Parameter(torch.tensor(0.9))

    def denoiser(x, sigma, cond):
        assert cond == "c" and sigma.shape == (4,)
        return weight * x / (1 + sigma[:, None, None, None] ** 2)

    first = loss(denoiser, x0, "c", generator=_gen(1))
    assert first.shape == (4,) and first.dtype == x0.dtype
    assert torch.equal(first, loss(denoiser, x0, "c", generator=_gen(1)))
    assert not torch.equal(first, loss(denoiser, x0, "c", generator=_gen(2)))
    first.mean().backward()
    assert weight.grad is not None and torch.isfinite(weight.grad)
    # one generator per sample: a sample's loss does not depend on its batch
    batch = loss(denoiser, x0, "c", generator=[_gen(10 + i) for i in range(4)])
    x_alone = x0[2:3]

    def denoiser_alone(x, sigma, cond):
        return weight * x / (1 + sigma[:, None, None, None] ** 2)

    alone = loss(denoiser_alone, x_alone, "c", generator=[_gen(12)])
    torch.testing.assert_close(batch[2:3], alone)


def test_registry_and_errors():
    assert LOSSES["edm"] is EDMLoss and LOSSES["sde"] is SDELoss
    with pytest.raises(ValueError, match="weighting"):
        SDELoss(SDES["vp"](), weighting="uniform")
    with pytest.raises(ValueError, match="eps"):
        SDELoss(SDES["vp"](), eps=2.0)


def test_relative_floor_makes_the_loss_a_relative_error():
    """With relative_floor, scaling x0 and the denoiser's answer by c leaves the loss unchanged
    (above the floor); below it the loss is the absolute one divided by the floor squared."""
    x0 = data(3)[:16].reshape(16, 1, 2, 4)
    offset = 0.1 * torch.randn(x0.shape, generator=_gen(5), dtype=F64)
    absolute = EDMLoss(P_mean=0.0, P_std=1.0, sigma_data=0.5)
    relative = EDMLoss(P_mean=0.0, P_std=1.0, sigma_data=0.5, relative_floor=1e-3)
    for scale in (1.0, 1e-2):
        den = lambda x, sigma, cond: scale * (x0 + offset)  # noqa: E731
        got = relative(den, scale * x0, generator=_gen(6))
        want = absolute(den, scale * x0, generator=_gen(6)) / (scale * x0).pow(2).flatten(1).mean(1)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(got, relative(lambda x, s, c: x0 + offset, x0, generator=_gen(6)))
    floored = EDMLoss(P_mean=0.0, P_std=1.0, sigma_data=0.5, relative_floor=10.0)
    den = lambda x, sigma, cond: x0 + offset  # noqa: E731
    torch.testing.assert_close(floored(den, x0, generator=_gen(6)), absolute(den, x0, generator=_gen(6)) / 100.0)
    with pytest.raises(ValueError, match="relative_floor"):
        EDMLoss(relative_floor=-1.0)
