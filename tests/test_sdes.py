"""Exact-answer tests of pdediff.maths.sdes: marginals against a simulated forward SDE, the prior
against scipy, the sigma-parameterisation against Song et al.'s closed forms, and the
probability-flow ODE against the exact Gaussian flow."""

import math

import pytest
import torch
from scipy import stats

from pdediff.maths.noise import randn
from pdediff.maths.sdes import SDES
from pdediff.maths.tensors import append_dims

torch.set_num_threads(1)  # the test machines are shared; threads only fight over tiny tensors

F64 = torch.float64
KINDS = sorted(SDES)
PRIOR_STD = {"edm": 80.0, "ve": 50.0, "vp": 1.0, "subvp": 1.0}


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_defaults_follow_the_papers():
    assert (SDES["ve"]().sigma_min, SDES["ve"]().sigma_max) == (0.01, 50.0)
    assert (SDES["vp"]().beta_min, SDES["vp"]().beta_max) == (0.1, 20.0)
    assert (SDES["subvp"]().beta_min, SDES["subvp"]().beta_max) == (0.1, 20.0)
    edm = SDES["edm"]()
    assert (edm.sigma_min, edm.sigma_max, edm.eps, edm.T) == (0.002, 80.0, 0.002, 80.0)
    for kind in ("ve", "vp", "subvp"):
        assert SDES[kind]().T == 1.0


@pytest.mark.parametrize("kind", KINDS)
def test_marginal_prob_matches_simulated_forward_sde(kind):
    """Euler-Maruyama on sde() from t = eps, started in the exact kernel at eps, against
    marginal_prob at three later times. x0 ~ N(1.5, 0.5^2), so both the mean coefficient and
    the std enter: mean = c * 1.5, var = c^2 0.25 + std^2."""
    sde = SDES[kind]()
    n_samples, n_steps = 20_000, 1_000
    gen = _gen(0)
    x0 = 1.5 + 0.5 * torch.randn(n_samples, 1, generator=gen, dtype=F64)
    t0 = float(sde.eps)
    mean0, std0 = sde.marginal_prob(x0, t0)
    x = mean0 + std0 * torch.randn(x0.shape, generator=gen, dtype=F64)
    times = torch.linspace(t0, float(sde.T), n_steps + 1, dtype=F64)
    checkpoints = {n_steps // 10, n_steps // 2, n_steps}
    for k in range(n_steps):
        t, dt = times[k], times[k + 1] - times[k]
        drift, diffusion = sde.sde(x, t.expand(n_samples))
        x = x + drift * dt + append_dims(diffusion, x.ndim) * dt.sqrt() * torch.randn(x.shape, generator=gen, dtype=F64)
        if k + 1 in checkpoints:
            one = torch.ones(1, 1, dtype=F64)
            coeff, std = sde.marginal_prob(one, times[k + 1])
            mean_exact = float(coeff) * 1.5
            std_exact = math.sqrt(float(coeff) ** 2 * 0.25 + float(std) ** 2)
            # 5 Monte Carlo standard errors plus a first-order weak discretisation allowance.
            tol_mean = 5 * std_exact / math.sqrt(n_samples) + 5e-3 * (abs(mean_exact) + std_exact)
            tol_std = 5 * std_exact / math.sqrt(2 * n_samples) + 5e-3 * std_exact
            assert abs(float(x.mean()) - mean_exact) < tol_mean, (kind, float(times[k + 1]))
            assert abs(float(x.std()) - std_exact) < tol_std, (kind, float(times[k + 1]))


@pytest.mark.parametrize("kind", KINDS)
def test_marginal_prob_closed_forms(kind):
    """Against the formulas of Song et al. (sde_lib.py) written out independently."""
    sde = SDES[kind]()
    t = torch.linspace(sde.eps, sde.T, 7, dtype=F64)
    x0 = torch.randn(7, 3, generator=_gen(1), dtype=F64)
    mean, std = sde.marginal_prob(x0, t)
    if kind in ("vp", "subvp"):
        log_coeff = -0.25 * t**2 * (20.0 - 0.1) - 0.5 * t * 0.1
        expected_std = 1 - torch.exp(2 * log_coeff)
        expected_std = expected_std.sqrt() if kind == "vp" else expected_std
        expected_mean = torch.exp(log_coeff)[:, None] * x0
    elif kind == "ve":
        expected_std, expected_mean = 0.01 * (50.0 / 0.01) ** t, x0
    else:
        expected_std, expected_mean = t, x0
    # (the reference 1 - exp(.) cancels near t = 0; sdes.py uses expm1)
    torch.testing.assert_close(mean, expected_mean, rtol=1e-9, atol=0)
    torch.testing.assert_close(std, expected_std, rtol=1e-9, atol=0)
    # The sigma-parameterisation: mean = scale * x0, std = scale * sigma.
    torch.testing.assert_close(mean, sde.scale(t)[:, None] * x0, rtol=1e-12, atol=0)
    torch.testing.assert_close(std, sde.scale(t) * sde.sigma(t), rtol=1e-12, atol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_t_of_sigma_inverts_sigma(kind):
    sde = SDES[kind]()
    t = torch.linspace(sde.eps, sde.T, 101, dtype=F64)
    torch.testing.assert_close(sde.t_of_sigma(sde.sigma(t)), t, rtol=1e-10, atol=1e-12)
    sigma = torch.logspace(-3, 2, 50, dtype=F64)
    torch.testing.assert_close(sde.sigma(sde.t_of_sigma(sigma)), sigma, rtol=1e-10, atol=0)
    # VE's sigma_min is sigma(0), a hair below sigma(eps = 1e-5)
    assert sde.sigma_min == pytest.approx(float(sde.sigma(torch.tensor(sde.eps, dtype=F64))), rel=1e-3)
    assert sde.sigma_max == pytest.approx(float(sde.sigma(torch.tensor(sde.T, dtype=F64))))


@pytest.mark.parametrize("kind", KINDS)
def test_prior_logp_matches_scipy(kind):
    sde = SDES[kind]()
    z = 1.3 * PRIOR_STD[kind] * torch.randn(3, 2, 4, 4, generator=_gen(2), dtype=F64)
    expected = stats.norm.logpdf(z.numpy(), scale=PRIOR_STD[kind]).sum(axis=(1, 2, 3))
    logp = sde.prior_logp(z)
    assert logp.shape == (3,)
    torch.testing.assert_close(logp, torch.from_numpy(expected), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("kind", KINDS)
def test_prior_sampling(kind):
    sde = SDES[kind]()
    n = 20_000
    z = sde.prior_sampling((n, 2), generator=_gen(3), dtype=F64)
    assert z.shape == (n, 2) and z.dtype == F64
    assert abs(float(z.std()) / PRIOR_STD[kind] - 1) < 5 / math.sqrt(2 * 2 * n)
    assert torch.equal(z, sde.prior_sampling((n, 2), generator=_gen(3), dtype=F64))


def test_per_sample_generators_give_batch_independent_draws():
    gens = [_gen(10), _gen(11), _gen(12)]
    batch = randn((3, 2, 5), gens, dtype=F64)
    alone = randn((1, 2, 5), [_gen(11)], dtype=F64)
    assert torch.equal(batch[1:2], alone)
    with pytest.raises(ValueError, match="per-sample generators"):
        randn((2, 5), [_gen(0)])


@pytest.mark.parametrize("kind", KINDS)
def test_sde_accepts_float_and_batched_times(kind):
    sde = SDES[kind]()
    x = torch.ones(4, 1, 3, 3, dtype=F64)
    t = torch.full((4,), 0.5 * sde.T, dtype=F64)
    drift, diffusion = sde.sde(x, t)
    drift_f, diffusion_f = sde.sde(x, 0.5 * sde.T)
    assert drift.shape == x.shape and diffusion.shape == (4,)
    torch.testing.assert_close(drift, drift_f)
    torch.testing.assert_close(diffusion, diffusion_f.expand(4))


@pytest.mark.parametrize("kind", KINDS)
def test_probability_flow_ode_gives_exact_gaussian_map(kind):
    """For x0 ~ N(0, s0^2) the score is -x / var_t with var_t = c(t)^2 s0^2 + std(t)^2, and the
    PF-ODE (Song et al. eq. 13) maps x_T to x_eps = x_T sqrt(var_eps / var_T). RK4 in t."""
    sde = SDES[kind]()
    s0 = torch.tensor([0.3, 1.0, 2.0], dtype=F64)

    def var(t):
        coeff, std = sde.marginal_prob(torch.ones(1, dtype=F64), t)
        return append_dims(coeff, 2) ** 2 * s0**2 + append_dims(std, 2) ** 2

    def score(x, t):
        return -x / var(t)

    rsde = sde.reverse(score, probability_flow=True)
    x_T = torch.randn(4, 3, generator=_gen(4), dtype=F64) * var(torch.tensor([sde.T], dtype=F64)).sqrt()
    n_steps = 2_000
    times = torch.linspace(sde.T, sde.eps, n_steps + 1, dtype=F64)
    x = x_T
    for k in range(n_steps):
        t, h = times[k].expand(4), times[k + 1] - times[k]

        def f(x_, t_):
            return rsde.sde(x_, t_)[0]

        k1 = f(x, t)
        k2 = f(x + 0.5 * h * k1, t + 0.5 * h)
        k3 = f(x + 0.5 * h * k2, t + 0.5 * h)
        k4 = f(x + h * k3, t + h)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    expected = x_T * (var(torch.tensor([sde.eps], dtype=F64)) / var(torch.tensor([sde.T], dtype=F64))).sqrt()
    torch.testing.assert_close(x, expected, rtol=1e-6, atol=1e-9)
    assert torch.equal(rsde.sde(x, t)[1], torch.zeros(4, dtype=F64))


@pytest.mark.parametrize("kind", KINDS)
def test_reverse_sde_drift_and_diffusion(kind):
    """Song et al. eq. 6: reverse drift f - g^2 score, diffusion g."""
    sde = SDES[kind]()
    x = torch.randn(2, 3, generator=_gen(5), dtype=F64)
    t = torch.tensor([0.2, 0.7], dtype=F64) * sde.T
    score = torch.randn(2, 3, generator=_gen(6), dtype=F64)
    drift, diffusion = sde.reverse(lambda x_, t_: score).sde(x, t)
    f, g = sde.sde(x, t)
    torch.testing.assert_close(drift, f - g[:, None] ** 2 * score)
    torch.testing.assert_close(diffusion, g)
