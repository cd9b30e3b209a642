"""Exact-answer tests of pdediff.maths.samplers.

Gaussian data x0 ~ N(mu, diag(s^2)) has the exact denoiser D(x, sigma) = mu + s^2/(s^2+sigma^2)
(x - mu), under which the PF-ODE map from sigma_max is x0 = mu + s/sqrt(s^2+sigma_max^2)(x_T - mu);
an "oracle" denoiser returning a fixed y (the exact solution of a PDE) must give y back.
"""

import math

import pytest
import torch

from pdediff.maths.samplers import (
    SAMPLERS,
    get_sigmas_exponential,
    get_sigmas_karras,
    get_sigmas_sde,
    get_sigmas_vp,
    to_d,
)
from pdediff.maths.sdes import SDES

torch.set_num_threads(1)  # the test machines are shared; threads only fight over tiny tensors

F64 = torch.float64
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
MU = torch.linspace(-1.0, 1.0, 8, dtype=F64)
S = torch.linspace(0.3, 2.0, 8, dtype=F64)  # per-dimension data std


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def gaussian_denoiser(x, sigma, cond=None):
    var = S**2
    return MU + var / (var + sigma[:, None] ** 2) * (x - MU)


def gaussian_start(n, sigma_max, seed):
    """Samples of the exact marginal at sigma_max, N(mu, s^2 + sigma_max^2)."""
    return MU + torch.sqrt(S**2 + sigma_max**2) * torch.randn(n, 8, generator=_gen(seed), dtype=F64)


def exact_map(x_T, sigma_max=SIGMA_MAX, sigma_end=SIGMA_MIN):
    """The PF-ODE from sigma_max to sigma_end followed by the final denoise D(., sigma_end).

    x_sigma = mu + sqrt(s^2+sigma^2)/sqrt(s^2+sigma_max^2) (x_T - mu); the denoise multiplies by
    s^2/(s^2+sigma_end^2). (Differs from the sigma_end = 0 map by a factor 1 - O(sigma_end^2/s^2).)"""
    return MU + S**2 / torch.sqrt((S**2 + sigma_end**2) * (S**2 + sigma_max**2)) * (x_T - MU)


def max_rel_error(x, x_T):
    reference = exact_map(x_T)
    return float(((x - reference).abs() / (reference - MU).abs().clamp_min(1e-3)).max())


class Counting:
    """Wraps a denoiser, counting calls and checking that cond is handed over untouched."""

    def __init__(self, denoiser, cond=None):
        self.denoiser, self.cond, self.calls = denoiser, cond, 0

    def __call__(self, x, sigma, cond):
        assert cond is self.cond
        assert sigma.shape == (x.shape[0],) and sigma.dtype == x.dtype
        self.calls += 1
        return self.denoiser(x, sigma, cond)


# ---------------------------------------------------------------------------------- schedules


@pytest.mark.parametrize(
    "make",
    [
        lambda n: get_sigmas_karras(n, SIGMA_MIN, SIGMA_MAX, dtype=F64),
        lambda n: get_sigmas_exponential(n, 0.01, 50.0, dtype=F64),
        lambda n: get_sigmas_vp(n, dtype=F64),
        lambda n: get_sigmas_sde(SDES["subvp"](), n, dtype=F64),
    ],
    ids=["karras", "exponential", "vp", "sde"],
)
@pytest.mark.parametrize("n", [1, 2, 18])
def test_schedule_shape(make, n):
    sigmas = make(n)
    assert sigmas.shape == (n + 1,) and sigmas.dtype == F64
    assert sigmas[-1] == 0 and (sigmas[:-1] > 0).all()
    assert (sigmas[1:] < sigmas[:-1]).all()


def test_schedule_values():
    sigmas = get_sigmas_karras(5, SIGMA_MIN, SIGMA_MAX, rho=7.0, dtype=F64)
    assert sigmas[0] == SIGMA_MAX and sigmas[-2] == SIGMA_MIN
    middle = (0.5 * (SIGMA_MAX ** (1 / 7) + SIGMA_MIN ** (1 / 7))) ** 7  # EDM eq. 5 at i = 2 of 5
    assert float(sigmas[2]) == pytest.approx(middle, rel=1e-12)
    geometric = get_sigmas_exponential(3, 0.01, 100.0, dtype=F64)
    torch.testing.assert_close(geometric, torch.tensor([100.0, 1.0, 0.01, 0.0], dtype=F64))
    # get_sigmas_vp is the VP SDE seen through get_sigmas_sde (beta_d = beta_max - beta_min).
    vp = SDES["vp"](beta_min=0.1, beta_max=20.0, eps=1e-3)
    torch.testing.assert_close(get_sigmas_vp(7, dtype=F64), get_sigmas_sde(vp, 7, dtype=F64), rtol=1e-12, atol=0)
    assert get_sigmas_karras(4, 0.1, 1.0).dtype == torch.get_default_dtype()


def test_bad_schedules_are_refused():
    x = torch.zeros(2, 8, dtype=F64)
    with pytest.raises(ValueError, match="1-D schedule"):
        SAMPLERS["heun"](gaussian_denoiser, x, torch.ones(2, 2, dtype=F64))
    with pytest.raises(ValueError, match="strictly decreasing"):
        SAMPLERS["euler"](gaussian_denoiser, x, torch.tensor([1.0, 2.0, 0.0], dtype=F64))
    with pytest.raises(ValueError, match="sigma_min"):
        get_sigmas_karras(5, 1.0, 0.5)


def test_to_d_is_the_probability_flow_rhs():
    x = torch.tensor([[3.0, -1.0]], dtype=F64)
    denoised = torch.tensor([[1.0, 1.0]], dtype=F64)
    torch.testing.assert_close(to_d(x, torch.tensor([2.0], dtype=F64), denoised), torch.tensor([[1.0, -1.0]], dtype=F64))
    torch.testing.assert_close(to_d(x, 2.0, denoised), torch.tensor([[1.0, -1.0]], dtype=F64))


# ----------------------------------------------------------------- Gaussian data: ODE samplers


def test_heun_reproduces_the_exact_map_at_second_order():
    """Heun's global error on the Gaussian flow is ~1% at 40 Karras steps (the flow bends where
    sigma ~ s) and falls as n^-2: ~1e-4 at 400 steps."""
    x_T = gaussian_start(256, SIGMA_MAX, seed=0)
    errors = {}
    for n in (40, 80, 400):
        x, nfe = SAMPLERS["heun"](gaussian_denoiser, x_T.clone(), get_sigmas_karras(n, SIGMA_MIN, SIGMA_MAX, dtype=F64))
        assert nfe == 2 * n - 1
        errors[n] = max_rel_error(x, x_T)
    assert errors[40] < 2e-2
    assert 3.5 < errors[40] / errors[80] < 4.5  # second order
    assert errors[400] < 2e-4


def test_euler_converges_at_first_order():
    x_T = gaussian_start(256, SIGMA_MAX, seed=1)
    errors = {}
    for n in (200, 400):
        x, nfe = SAMPLERS["euler"](gaussian_denoiser, x_T.clone(), get_sigmas_karras(n, SIGMA_MIN, SIGMA_MAX, dtype=F64))
        assert nfe == n
        errors[n] = max_rel_error(x, x_T)
    assert errors[200] < 3e-2
    assert 1.7 < errors[200] / errors[400] < 2.3


@pytest.mark.parametrize("method, tol, bound", [("dopri5", 1e-7, 1e-5), ("bosh3", 1e-6, 1e-4)])
def test_adaptive_reproduces_the_exact_map(method, tol, bound):
    x_T = gaussian_start(256, SIGMA_MAX, seed=2)
    sigmas = get_sigmas_karras(10, SIGMA_MIN, SIGMA_MAX, dtype=F64)  # only the ends are used
    denoiser = Counting(gaussian_denoiser)
    x, nfe = SAMPLERS["adaptive"](denoiser, x_T.clone(), sigmas, rtol=tol, atol=tol, method=method)
    assert nfe == denoiser.calls
    assert max_rel_error(x, x_T) < bound


@pytest.mark.parametrize(
    "name, n, options, discretisation",
    [
        ("euler", 200, {}, 0.06),
        ("heun", 40, {}, 0.04),
        ("adaptive", 10, {"rtol": 1e-6, "atol": 1e-6}, 1e-4),
    ],
)
def test_ode_samplers_land_on_the_data_distribution(name, n, options, discretisation):
    """Mean and covariance of the samples within 5 Monte Carlo standard errors (plus the
    discretisation allowance on the variance, twice the map's relative error above)."""
    n_samples = 4000
    x, _ = SAMPLERS[name](
        gaussian_denoiser, gaussian_start(n_samples, SIGMA_MAX, seed=3), get_sigmas_karras(n, SIGMA_MIN, SIGMA_MAX, dtype=F64), **options
    )
    _check_gaussian_moments(x, var_allowance=discretisation)


def _check_gaussian_moments(x, var_allowance, mean_allowance=0.0):
    n = x.shape[0]
    mean_err = (x.mean(0) - MU) / S
    assert float(mean_err.abs().max()) < 5 / math.sqrt(n) + mean_allowance, mean_err
    cov = torch.cov(x.T)
    var_ratio = torch.diagonal(cov) / S**2
    assert float((var_ratio - 1).abs().max()) < 5 * math.sqrt(2 / n) + var_allowance, var_ratio
    corr = cov / torch.outer(S, S)
    off_diagonal = corr - torch.diag(torch.diagonal(corr))
    assert float(off_diagonal.abs().max()) < 5 / math.sqrt(n) * (1 + var_allowance)


# ----------------------------------------------------------------- Gaussian data: SDE samplers


def test_euler_maruyama_lands_on_the_data_distribution():
    """800 Karras steps (the weak bias is ~2% in variance at 200 steps, O(1/n))."""
    n_samples = 20_000
    gen = _gen(4)
    x0 = gaussian_start(n_samples, SIGMA_MAX, seed=5)
    x, nfe = SAMPLERS["euler_maruyama"](
        gaussian_denoiser, x0, get_sigmas_karras(800, SIGMA_MIN, SIGMA_MAX, dtype=F64), generator=gen
    )
    assert nfe == 800
    _check_gaussian_moments(x, var_allowance=0.01)


def test_pc_lands_on_the_data_distribution():
    """Reverse-diffusion predictor + Langevin corrector, 200 geometric levels (Song et al. VE).

    Batch norms in the step-size rule: with 8 dimensions per sample, per-sample norms bias the
    Langevin chain (see samplers._langevin_step). snr = 0.05: the unadjusted Langevin step eps
    inflates a dimension's variance by ~eps / (4 v), and the rule sizes eps by the whole
    score, so the narrowest dimension (s = 0.3) sees ~5% at snr = 0.16 and ~0.5% at 0.05; the
    reverse-diffusion predictor alone adds ~3-4% at 200 levels."""
    n_samples = 20_000
    sigmas = get_sigmas_exponential(200, 0.01, SIGMA_MAX, dtype=F64)
    x, nfe = SAMPLERS["pc"](
        gaussian_denoiser, gaussian_start(n_samples, SIGMA_MAX, seed=6), sigmas, generator=_gen(7), snr=0.05, norm="batch"
    )
    assert nfe == 200 * 2
    _check_gaussian_moments(x, var_allowance=0.06)


def test_ald_chain_reaches_the_langevin_stationary_law():
    """At a fixed sigma the unadjusted Langevin chain x <- x + a/2 score + sqrt(a) z on
    N(mu, v) has the exact stationary variance v / (1 - a / (4 v)). A schedule without a final 0
    leaves out the final denoise, so ALD's last level can be checked against this."""
    n_samples, sigma = 20_000, 0.5
    sigmas = torch.tensor([0.6, sigma], dtype=F64)  # sigma_L = 0.5, step_lr = a at sigma_L
    a = 0.05
    x, nfe = SAMPLERS["ald"](
        gaussian_denoiser, gaussian_start(n_samples, 0.6, seed=8), sigmas, generator=_gen(9), n_steps_each=300, step_lr=a
    )
    assert nfe == 600
    v = S**2 + sigma**2
    stationary = v / (1 - a / (4 * v))
    assert float(((x.mean(0) - MU) / stationary.sqrt()).abs().max()) < 5 / math.sqrt(n_samples)
    assert float((x.var(0) / stationary - 1).abs().max()) < 5 * math.sqrt(2 / n_samples) + 0.01


# ---------------------------------------------------------------------------- oracle denoiser


ALL_OPTIONS = {
    "euler": {},
    "heun": {},
    "adaptive": {"rtol": 1e-6, "atol": 1e-6},
    "euler_maruyama": {},
    "pc": {"snr": 0.16, "n_corrector": 2},
    "ald": {"n_steps_each": 3, "step_lr": 1e-5},
}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_oracle_denoiser_gives_the_target_back(name):
    """D(x, sigma) = y for all x, sigma. Every sampler ends in a step to sigma = 0 that is a
    denoise (Euler's step to 0 is exactly D; PC's noise-free x_mean is exactly D), so even the
    stochastic ones return y exactly, not just in the mean."""
    y = torch.randn(1, 1, 4, 4, generator=_gen(10), dtype=F64)
    cond = {"rho": torch.ones(1)}
    denoiser = Counting(lambda x, sigma, c: y.expand_as(x), cond)
    sigmas = get_sigmas_karras(12, SIGMA_MIN, SIGMA_MAX, dtype=F64)
    x = SIGMA_MAX * torch.randn(3, 1, 4, 4, generator=_gen(11), dtype=F64)
    out, nfe = SAMPLERS[name](denoiser, x, sigmas, cond, generator=_gen(12), **ALL_OPTIONS[name])
    assert nfe == denoiser.calls
    torch.testing.assert_close(out, y.expand_as(out), rtol=1e-10, atol=1e-10)


def test_nfe_counts():
    n = 12
    sigmas = get_sigmas_karras(n, SIGMA_MIN, SIGMA_MAX, dtype=F64)
    expected = {
        "euler": n,
        "heun": 2 * n - 1,
        "euler_maruyama": n,
        "pc": n * (2 + 1),
        "ald": n * 3 + 1,
    }
    for name, count in expected.items():
        denoiser = Counting(gaussian_denoiser)
        _, nfe = SAMPLERS[name](denoiser, gaussian_start(4, SIGMA_MAX, 13), sigmas, generator=_gen(0), **ALL_OPTIONS[name])
        assert nfe == denoiser.calls == count, name


# ------------------------------------------------------------------------ randomness, callback


STOCHASTIC = {
    "euler": {"s_churn": 10.0},
    "heun": {"s_churn": 10.0},
    "euler_maruyama": {},
    "pc": {"snr": 0.16},
    "ald": {"n_steps_each": 2, "step_lr": 1e-5},
}


@pytest.mark.parametrize("name", sorted(STOCHASTIC))
def test_seeded_generators_are_reproducible_and_batch_independent(name):
    sigmas = get_sigmas_karras(6, SIGMA_MIN, SIGMA_MAX, dtype=F64)
    x = gaussian_start(3, SIGMA_MAX, seed=14)
    run = lambda x_, gen: SAMPLERS[name](gaussian_denoiser, x_.clone(), sigmas, generator=gen, **STOCHASTIC[name])[0]
    first, again = run(x, _gen(1)), run(x, _gen(1))
    assert torch.equal(first, again)
    assert not torch.equal(first, run(x, _gen(2)))
    # one generator per sample: a sample's result does not depend on its batch
    batch = run(x, [_gen(20), _gen(21), _gen(22)])
    alone = run(x[1:2], [_gen(21)])
    torch.testing.assert_close(batch[1:2], alone, rtol=1e-12, atol=1e-12)


def test_ode_samplers_draw_no_noise():
    sigmas = get_sigmas_karras(6, SIGMA_MIN, SIGMA_MAX, dtype=F64)
    x = gaussian_start(3, SIGMA_MAX, seed=15)
    for name in ("euler", "heun", "adaptive"):
        out_1 = SAMPLERS[name](gaussian_denoiser, x.clone(), sigmas, generator=_gen(1))[0]
        out_2 = SAMPLERS[name](gaussian_denoiser, x.clone(), sigmas, generator=_gen(2))[0]
        assert torch.equal(out_1, out_2)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_callback_sees_every_step(name):
    seen = []
    sigmas = get_sigmas_karras(5, SIGMA_MIN, SIGMA_MAX, dtype=F64)
    SAMPLERS[name](
        gaussian_denoiser, gaussian_start(2, SIGMA_MAX, 16), sigmas, generator=_gen(0), callback=seen.append, **ALL_OPTIONS[name]
    )
    assert seen and set(seen[0]) >= {"i", "x", "sigma", "denoised"}
    assert [info["i"] for info in seen] == list(range(len(seen)))
    if name != "adaptive":
        assert len(seen) == 5
        assert [info["sigma"] for info in seen] == pytest.approx(sigmas[:-1].tolist())
