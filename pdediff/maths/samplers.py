"""Samplers for score-based diffusion in the EDM "sigma" parameterisation.

All samplers integrate, from ``sigmas[0]`` down to ``sigmas[-1]`` (normally 0), the dynamics of
``x_sigma = x0 + sigma * n`` (Karras et al. 2022 with ``s(t) = 1``, ``sigma(t) = t``) given a
*denoiser* ``denoiser(x, sigma, cond) -> x0_hat`` with ``sigma`` of shape (B,). The score is
``(D(x, sigma) - x) / sigma^2`` (Tweedie / Karras et al. eq. 3) and the probability-flow ODE is
``dx/dsigma = (x - D(x, sigma)) / sigma`` (:func:`to_d`).

Every sampler has the signature::

    sample_X(denoiser, x, sigmas, cond=None, *, generator=None, callback=None, **options)
        -> (x, nfe)

where ``x`` is the initial state (already scaled noise, ``x = randn * sigmas[0]``), ``sigmas`` a
schedule from a ``get_sigmas_*`` function (decreasing, normally ending in 0), ``cond`` is handed to
the denoiser untouched, ``nfe`` is the number of denoiser calls and ``callback`` (optional) gets a
dict with ``i``, ``x``, ``sigma``, ``sigma_hat``, ``denoised`` once per step. Noise is drawn only
from ``generator``: ``None``, one ``torch.Generator``, or one generator per sample (then a
sample's result does not depend on the batch it is in). Schedules are read once on the host, so
the control flow never waits on the device.

:data:`SAMPLERS` maps names to these functions; :data:`SCHEDULES` maps names to schedules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from pdediff.maths.noise import Generator, randn_like
from pdediff.maths.sdes import SDE
from pdediff.maths.tensors import append_dims

Denoiser = Callable[[torch.Tensor, torch.Tensor, object], torch.Tensor]
Callback = Optional[Callable[[dict], None]]


# --------------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------------


def _check_range(n: int, sigma_min: float, sigma_max: float) -> None:
    if n < 1:
        raise ValueError(f"n = {n}: a schedule needs at least one noise level")
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"need 0 < sigma_min <= sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")


def _finish(sigmas: torch.Tensor, device, dtype) -> torch.Tensor:
    """Append the final sigma = 0 and move to the requested device and dtype."""
    sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    return sigmas.to(device=device, dtype=dtype if dtype is not None else torch.get_default_dtype())


def get_sigmas_karras(
    n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, device="cpu", dtype=None
) -> torch.Tensor:
    """The noise levels of Karras et al. (2022), eq. 5, followed by 0.

    ``sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``,
    i = 0..n-1; computed in float64, endpoints exact.

    Returns:
        A 1-D tensor of length n + 1.
    """
    _check_range(n, sigma_min, sigma_max)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    max_inv, min_inv = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    sigmas = (max_inv + ramp * (min_inv - max_inv)) ** rho
    sigmas[0] = sigma_max
    if n > 1:
        sigmas[-1] = sigma_min
    return _finish(sigmas, device, dtype)


def get_sigmas_exponential(n: int, sigma_min: float, sigma_max: float, device="cpu", dtype=None) -> torch.Tensor:
    """Geometric noise levels from sigma_max to sigma_min (SMLD / VE SDE, Song et al. eq. 9), then 0."""
    _check_range(n, sigma_min, sigma_max)
    sigmas = torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64))
    sigmas[0] = sigma_max
    if n > 1:
        sigmas[-1] = sigma_min
    return _finish(sigmas, device, dtype)


def get_sigmas_vp(
    n: int, beta_d: float = 19.9, beta_min: float = 0.1, eps_s: float = 1e-3, device="cpu", dtype=None
) -> torch.Tensor:
    """Noise levels of the VP SDE at uniform t in [eps_s, 1] (Karras et al. Table 1), then 0.

    ``sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1)``.
    """
    if n < 1:
        raise ValueError(f"n = {n}: a schedule needs at least one noise level")
    t = torch.linspace(1, eps_s, n, dtype=torch.float64)
    sigmas = torch.sqrt(torch.expm1(0.5 * beta_d * t**2 + beta_min * t))
    return _finish(sigmas, device, dtype)


def get_sigmas_sde(sde: SDE, n: int, eps: Optional[float] = None, device="cpu", dtype=None) -> torch.Tensor:
    """Noise levels ``sde.sigma(t)`` at n uniform times from ``sde.T`` down to ``eps``, then 0.

    This is the discretisation of Song et al. (uniform in t) seen in the sigma variable; samples
    drawn with it must be multiplied by ``sde.scale(t)`` to return to the SDE's own x_t.

    Args:
        eps: smallest time; defaults to ``sde.eps``.
    """
    if n < 1:
        raise ValueError(f"n = {n}: a schedule needs at least one noise level")
    eps = sde.eps if eps is None else eps
    t = torch.linspace(float(sde.T), float(eps), n, dtype=torch.float64)
    return _finish(sde.sigma(t), device, dtype)


SCHEDULES = {"karras": get_sigmas_karras, "exponential": get_sigmas_exponential, "vp": get_sigmas_vp}
"""Schedules by name (``get_sigmas_sde`` takes an SDE object and is not listed)."""


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def to_d(x: torch.Tensor, sigma, denoised: torch.Tensor) -> torch.Tensor:
    """Right-hand side of the probability-flow ODE, ``dx/dsigma = (x - D(x, sigma)) / sigma``.

    Karras et al. (2022) eq. 3 with s = 1 (equivalently ``-sigma * score``). ``sigma`` is a float,
    a 0-d tensor or a (B,) tensor.
    """
    if isinstance(sigma, torch.Tensor):
        sigma = append_dims(sigma, x.ndim)
    return (x - denoised) / sigma


def _randn_like(x: torch.Tensor, generator: Generator) -> torch.Tensor:
    """The only place samplers draw noise: N(0, I) shaped like x, from ``generator``."""
    return randn_like(x, generator)


class _CountedDenoiser:
    """Wraps ``denoiser(x, sigma, cond)``: broadcasts a scalar sigma to (B,) and counts calls."""

    def __init__(self, denoiser: Denoiser, cond):
        self.denoiser, self.cond, self.nfe = denoiser, cond, 0

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        self.nfe += 1
        return self.denoiser(x, x.new_full((x.shape[0],), sigma), self.cond)


def _sigma_list(sigmas: torch.Tensor) -> list[float]:
    """The schedule as Python floats (read once: no device sync inside the loops), validated."""
    if not isinstance(sigmas, torch.Tensor):
        sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
    if sigmas.ndim != 1 or sigmas.numel() < 2:
        raise ValueError(
            f"sigmas has shape {tuple(sigmas.shape)}; expected a 1-D schedule of at least 2 noise "
            "levels (e.g. from get_sigmas_karras, which ends in 0)"
        )
    values = sigmas.tolist()
    if values[-1] < 0 or any(b >= a for a, b in zip(values, values[1:])):
        raise ValueError("sigmas must be strictly decreasing and non-negative")
    return values


def _report(callback: Callback, i: int, x, sigma: float, sigma_hat: float, denoised) -> None:
    if callback is not None:
        callback({"i": i, "x": x, "sigma": sigma, "sigma_hat": sigma_hat, "denoised": denoised})


def _churn(x, sigma: float, n_steps: int, generator, s_churn, s_tmin, s_tmax, s_noise):
    """EDM stochastic churn (Karras et al. Algorithm 2, lines 4-6): raise sigma to sigma_hat.

    Returns ``(x_hat, sigma_hat)``; with ``s_churn = 0`` (the default) nothing happens and no
    noise is drawn, so the sampler stays deterministic.
    """
    gamma = min(s_churn / n_steps, math.sqrt(2) - 1) if s_tmin <= sigma <= s_tmax else 0.0
    if gamma <= 0:
        return x, sigma
    sigma_hat = sigma * (1 + gamma)
    x = x + _randn_like(x, generator) * (s_noise * math.sqrt(sigma_hat**2 - sigma**2))
    return x, sigma_hat


def _per_sample_norm(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).norm(dim=1)


# --------------------------------------------------------------------------------------------
# ODE samplers
# --------------------------------------------------------------------------------------------


def sample_euler(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    cond=None,
    *,
    generator: Generator = None,
    callback: Callback = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> tuple[torch.Tensor, int]:
    """Euler steps of the probability-flow ODE (Karras et al. Alg. 2 without the Heun correction).

    The step to sigma = 0 is exactly a denoise: ``x + (x - D)/sigma * (0 - sigma) = D``.
    ``s_churn > 0`` turns on EDM's stochastic churn; by default the sampler is deterministic.
    nfe = number of steps = ``len(sigmas) - 1``.
    """
    s = _sigma_list(sigmas)
    D = _CountedDenoiser(denoiser, cond)
    n_steps = len(s) - 1
    for i in range(n_steps):
        x, sigma_hat = _churn(x, s[i], n_steps, generator, s_churn, s_tmin, s_tmax, s_noise)
        denoised = D(x, sigma_hat)
        _report(callback, i, x, s[i], sigma_hat, denoised)
        x = x + to_d(x, sigma_hat, denoised) * (s[i + 1] - sigma_hat)
    return x, D.nfe


def sample_heun(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    cond=None,
    *,
    generator: Generator = None,
    callback: Callback = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> tuple[torch.Tensor, int]:
    """Heun's 2nd-order method on the probability-flow ODE (Karras et al. Alg. 1; Alg. 2 with churn).

    The last step, to sigma = 0, is an Euler step (the ODE's right-hand side is undefined at 0),
    i.e. a denoise. For n non-zero noise levels, nfe = 2n - 1.
    """
    s = _sigma_list(sigmas)
    D = _CountedDenoiser(denoiser, cond)
    n_steps = len(s) - 1
    for i in range(n_steps):
        x, sigma_hat = _churn(x, s[i], n_steps, generator, s_churn, s_tmin, s_tmax, s_noise)
        denoised = D(x, sigma_hat)
        _report(callback, i, x, s[i], sigma_hat, denoised)
        d = to_d(x, sigma_hat, denoised)
        dt = s[i + 1] - sigma_hat
        x_euler = x + d * dt
        if s[i + 1] == 0:
            x = x_euler
        else:
            d_next = to_d(x_euler, s[i + 1], D(x_euler, s[i + 1]))
            x = x + 0.5 * (d + d_next) * dt
    return x, D.nfe


@dataclass(frozen=True)
class _Tableau:
    """An explicit embedded Runge-Kutta pair with the FSAL property (last stage = new point)."""

    c: tuple
    a: tuple
    b_low: tuple  # weights of the lower-order solution, used only for the error estimate
    order: int  # order of the propagated (higher-order) solution


# Coefficients from Bogacki & Shampine (1989) and Dormand & Prince (1980). Both pairs are FSAL:
# the last row of `a` equals the high-order weights, so the last stage is f at the new point.
TABLEAUS = {
    "bosh3": _Tableau(
        c=(0.0, 1 / 2, 3 / 4, 1.0),
        a=((), (1 / 2,), (0.0, 3 / 4), (2 / 9, 1 / 3, 4 / 9)),
        b_low=(7 / 24, 1 / 4, 1 / 3, 1 / 8),
        order=3,
    ),
    "dopri5": _Tableau(
        c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
        a=(
            (),
            (1 / 5,),
            (3 / 40, 9 / 40),
            (44 / 45, -56 / 15, 32 / 9),
            (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
            (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
            (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
        ),
        b_low=(5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40),
        order=5,
    ),
}


def _combine(x: torch.Tensor, h: float, weights: Sequence[float], ks: Sequence[torch.Tensor]) -> torch.Tensor:
    """x + h * sum_j w_j k_j, skipping zero weights."""
    out = x
    for w, k in zip(weights, ks):
        if w != 0:
            out = out + (h * w) * k
    return out


def sample_adaptive(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    cond=None,
    *,
    generator: Generator = None,
    callback: Callback = None,
    rtol: float = 1e-4,
    atol: float = 1e-4,
    method: str = "dopri5",
    h_init: Optional[float] = None,
    safety: float = 0.9,
    max_steps: int = 10_000,
) -> tuple[torch.Tensor, int]:
    """Adaptive embedded Runge-Kutta solve of the probability-flow ODE (Song et al. eq. 13).

    Integrates ``dx/du = x - D(x, e^u)`` in ``u = log sigma`` (Karras eq. 3 times sigma, smoother
    than in sigma) from ``sigmas[0]`` to the smallest non-zero level; if the schedule ends in 0
    the result is then denoised, ``x = D(x, sigma_min)``, which costs nothing extra since the
    FSAL stage already evaluated D there. Only the first and the smallest non-zero entries of
    ``sigmas`` are used.

    The step is shared by the batch and accepted when every sample's RMS of
    ``err / (atol + rtol * max(|x|, |x_new|))`` is at most 1 (Hairer et al., II.4). In float32
    ask for rtol, atol >= ~1e-6.

    Args:
        method: ``"dopri5"`` (Dormand-Prince 5(4), 6 calls a step) or ``"bosh3"``
            (Bogacki-Shampine 3(2), 3 calls a step).
        h_init: first step in u (negative); defaults to 1/32 of the interval.
        max_steps: attempted steps (accepted and rejected) before giving up.

    Raises:
        ValueError: unknown ``method``.
        ValueError: more than ``max_steps`` attempted steps (the options ask for more than they allow).
    """
    if method not in TABLEAUS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(TABLEAUS)}")
    tab = TABLEAUS[method]
    s = _sigma_list(sigmas)
    final_denoise = s[-1] == 0
    sigma_end = s[-2] if final_denoise else s[-1]
    D = _CountedDenoiser(denoiser, cond)

    def f(x_, u_):
        return x_ - D(x_, math.exp(u_))

    u, u_end = math.log(s[0]), math.log(sigma_end)
    h = -abs(h_init) if h_init is not None else (u_end - u) / 32
    k_first = f(x, u)
    attempts, accepted = 0, 0
    while u > u_end:
        attempts += 1
        if attempts > max_steps:
            raise ValueError(
                f"adaptive sampler took more than max_steps={max_steps} steps at sigma={math.exp(u):.3g}; "
                "loosen rtol/atol or raise max_steps"
            )
        last = u + h <= u_end
        if last:
            h = u_end - u
        ks = [k_first]
        x_stage = x
        for j in range(1, len(tab.c)):
            x_stage = _combine(x, h, tab.a[j], ks)
            ks.append(f(x_stage, u + tab.c[j] * h))
        x_new = x_stage  # FSAL: the last stage is the high-order solution, ks[-1] = f(x_new)
        error = x_new - _combine(x, h, tab.b_low, ks)
        tol = atol + rtol * torch.maximum(x.abs(), x_new.abs())
        ratio = (error / tol).reshape(x.shape[0], -1)
        err_norm = float(ratio.pow(2).mean(dim=1).sqrt().max())
        if err_norm <= 1:
            x, k_first, accepted = x_new, ks[-1], accepted + 1
            u = u_end if last else u + h
            sigma = math.exp(u)
            _report(callback, accepted - 1, x, sigma, sigma, x - k_first)
        factor = 10.0 if err_norm == 0 else min(10.0, max(0.2, safety * err_norm ** (-1 / tab.order)))
        h = h * (factor if err_norm <= 1 else min(1.0, factor))
    if final_denoise:
        x = x - k_first  # = D(x, sigma_end), already computed as the FSAL stage
    return x, D.nfe


# --------------------------------------------------------------------------------------------
# SDE samplers
# --------------------------------------------------------------------------------------------


def sample_euler_maruyama(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    cond=None,
    *,
    generator: Generator = None,
    callback: Callback = None,
) -> tuple[torch.Tensor, int]:
    """Euler-Maruyama on the reverse-time SDE in sigma-time (Song et al. eq. 6).

    With ``x_sigma = x0 + sigma n`` the forward SDE is ``dx = sqrt(2 sigma) dw`` (g^2 = d sigma^2 /
    d sigma), so the reverse SDE is ``dx = -2 sigma score dsigma + sqrt(2 sigma) dw_bar``; with
    ``score = -to_d / sigma``, a step from sigma_i to sigma_{i+1} < sigma_i is

        x <- x + 2 (sigma_{i+1} - sigma_i) to_d(x) + sqrt(2 sigma_i (sigma_i - sigma_{i+1})) z,

    i.e. twice the ODE drift plus the noise it compensates. The step to sigma = 0 is a plain
    denoise (no noise). nfe = ``len(sigmas) - 1``.
    """
    s = _sigma_list(sigmas)
    D = _CountedDenoiser(denoiser, cond)
    for i in range(len(s) - 1):
        denoised = D(x, s[i])
        _report(callback, i, x, s[i], s[i], denoised)
        if s[i + 1] == 0:
            x = denoised
            continue
        ds = s[i + 1] - s[i]
        x = x + 2 * ds * to_d(x, s[i], denoised) + math.sqrt(2 * s[i] * -ds) * _randn_like(x, generator)
    return x, D.nfe


def _langevin_step(D: _CountedDenoiser, x, sigma: float, snr: float, norm: str, generator):
    """One Langevin corrector step at fixed sigma (Song et al. Alg. 4, VE form with alpha = 1).

    The step size is ``eps = 2 (snr ||z|| / ||score||)^2``. With ``norm="sample"`` the norms are
    per sample, so a sample's result does not depend on its batch; with ``norm="batch"`` they are
    averaged over the batch as in score_sde_pytorch. Per-sample norms make eps depend on x and z,
    which biases the chain when a sample has few elements (variances off by tens of percent for
    8-dimensional Gaussian data with per-dimension scales 0.3-2; by a few percent, 15% at worst, at
    512 dimensions); for large fields the norms concentrate and the two rules agree.
    """
    score = (D(x, sigma) - x) / sigma**2
    z = _randn_like(x, generator)
    z_norm, score_norm = _per_sample_norm(z), _per_sample_norm(score)
    if norm == "batch":
        z_norm, score_norm = z_norm.mean().expand_as(z_norm), score_norm.mean().expand_as(score_norm)
    tiny = torch.finfo(x.dtype).tiny
    step = append_dims(2 * (snr * z_norm / score_norm.clamp_min(tiny)) ** 2, x.ndim)
    return x + step * score + torch.sqrt(2 * step) * z


def sample_pc(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    cond=None,
    *,
    generator: Generator = None,
    callback: Callback = None,
    snr: float = 0.16,
    n_corrector: int = 1,
    predictor: str = "reverse_diffusion",
    norm: str = "sample",
) -> tuple[torch.Tensor, int]:
    """Predictor-corrector sampling (Song et al. Alg. 1 and 2, VE form, in sigma).

    At each noise level sigma_i: ``n_corrector`` Langevin corrector steps at sigma_i, then a
    predictor step to sigma_{i+1} (the order of score_sde_pytorch's ``pc_sampler``, so no corrector
    runs at sigma = 0). Predictors:

    - ``"reverse_diffusion"`` (Song et al. eq. 47): ``x_mean = x + (sigma_i^2 - sigma_{i+1}^2)
      score``, ``x = x_mean + sqrt(sigma_i^2 - sigma_{i+1}^2) z``;
    - ``"euler_maruyama"``: the step of :func:`sample_euler_maruyama`.

    The last step returns the noise-free ``x_mean``; to sigma = 0 both predictors give exactly
    ``D(x, sigma_{n-1})``. Use ``snr`` = 0.16 for images, ~0.01 for low-dimensional data.
    ``norm`` ("sample" or "batch") chooses how the corrector's step size is computed; see
    :func:`_langevin_step` (use "batch" for samples with few elements).
    nfe = ``(len(sigmas) - 1) * (n_corrector + 1)``.
    """
    if predictor not in ("reverse_diffusion", "euler_maruyama"):
        raise ValueError(f"unknown predictor {predictor!r}; choose 'reverse_diffusion' or 'euler_maruyama'")
    if norm not in ("sample", "batch"):
        raise ValueError(f"unknown norm {norm!r}; choose 'sample' (per-sample step sizes) or 'batch'")
    s = _sigma_list(sigmas)
    D = _CountedDenoiser(denoiser, cond)
    n_steps = len(s) - 1
    for i in range(n_steps):
        sigma, sigma_next = s[i], s[i + 1]
        for _ in range(n_corrector):
            x = _langevin_step(D, x, sigma, snr, norm, generator)
        denoised = D(x, sigma)
        _report(callback, i, x, sigma, sigma, denoised)
        if predictor == "reverse_diffusion":
            var = sigma**2 - sigma_next**2
            x_mean = x + var * (denoised - x) / sigma**2
            noise_std = math.sqrt(var)
        else:
            ds = sigma_next - sigma
            x_mean = x + 2 * ds * to_d(x, sigma, denoised)
            noise_std = math.sqrt(2 * sigma * -ds)
        is_last = i == n_steps - 1
        x = x_mean if is_last or sigma_next == 0 else x_mean + noise_std * _randn_like(x, generator)
    return x, D.nfe


def sample_ald(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    cond=None,
    *,
    generator: Generator = None,
    callback: Callback = None,
    n_steps_each: int = 100,
    step_lr: Optional[float] = None,
) -> tuple[torch.Tensor, int]:
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1).

    For each non-zero sigma_i in the schedule, ``n_steps_each`` steps
    ``x <- x + alpha_i / 2 * score(x, sigma_i) + sqrt(alpha_i) z`` with
    ``alpha_i = step_lr * sigma_i^2 / sigma_L^2`` (sigma_L the smallest non-zero level). If the
    schedule ends in 0 a final denoise ``x = D(x, sigma_L)`` follows (Jolicoeur-Martineau et al.
    2021). The defaults are the paper's, T = 100 and eps = 2e-5 for sigma_L = 0.01; for another
    sigma_L, ``step_lr=None`` keeps the paper's ratio alpha_L / sigma_L^2 = 0.2 (eps = 2e-5 *
    (sigma_L / 0.01)^2): the step is stable only while alpha_L / sigma_L^2 < 2, so the paper's eps at
    sigma_L = 0.002 diverges.
    nfe = (number of non-zero levels) * n_steps_each (+ 1 for the final denoise).
    """
    s = _sigma_list(sigmas)
    levels = [v for v in s if v > 0]
    D = _CountedDenoiser(denoiser, cond)
    sigma_last = levels[-1]
    if step_lr is None:
        step_lr = 2e-5 * (sigma_last / 0.01) ** 2
    for i, sigma in enumerate(levels):
        alpha = step_lr * (sigma / sigma_last) ** 2
        for _ in range(n_steps_each):
            denoised = D(x, sigma)
            score = (denoised - x) / sigma**2
            x = x + (0.5 * alpha) * score + math.sqrt(alpha) * _randn_like(x, generator)
        if n_steps_each > 0:
            _report(callback, i, x, sigma, sigma, denoised)
    if s[-1] == 0:
        x = D(x, sigma_last)
    return x, D.nfe


def get_sigmas_refiner(n: int, sigma_min: float, device="cpu", dtype=None) -> torch.Tensor:
    """PDE-Refiner's noise levels (Lippe et al. 2023): ``sigma_k = sigma_min ** (k / n)``,
    k = 1 .. n, decreasing geometrically from ``sigma_min ** (1 / n)`` to ``sigma_min`` (no 0)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} is invalid; expected an integer >= 1 refinement steps")
    if not 0 < sigma_min < 1:
        raise ValueError(f"sigma_min={sigma_min!r} is invalid; expected a noise level in (0, 1)")
    k = torch.arange(1, n + 1, dtype=torch.float64)
    return (sigma_min ** (k / n)).to(device=device, dtype=dtype if dtype is not None else torch.get_default_dtype())


def sample_refine(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    cond=None,
    *,
    generator: Generator = None,
    callback: Callback = None,
) -> tuple[torch.Tensor, int]:
    """PDE-Refiner's refinement (Lippe et al. 2023): from an estimate ``x`` of the clean field
    (a one-step prediction, not noise), at each level add noise of that std and denoise once,
    ``x <- D(x + sigma eps, sigma)``. Small levels (:func:`get_sigmas_refiner`) make the
    denoiser correct the low-amplitude, high-frequency part that a mean-squared-error
    prediction neglects. nfe = ``len(sigmas)``. Not in :data:`SAMPLERS`: it does not start
    from noise."""
    levels = sigmas.tolist() if isinstance(sigmas, torch.Tensor) else list(sigmas)
    if not levels or any(v <= 0 for v in levels) or any(b >= a for a, b in zip(levels, levels[1:])):
        raise ValueError(f"sigmas={levels!r} is invalid; expected strictly decreasing levels > 0")
    D = _CountedDenoiser(denoiser, cond)
    for i, sigma in enumerate(levels):
        noisy = x + sigma * _randn_like(x, generator)
        denoised = D(noisy, sigma)
        _report(callback, i, noisy, sigma, sigma, denoised)
        x = denoised
    return x, D.nfe


SAMPLERS = {
    "euler": sample_euler,
    "heun": sample_heun,
    "adaptive": sample_adaptive,
    "euler_maruyama": sample_euler_maruyama,
    "pc": sample_pc,
    "ald": sample_ald,
}
"""Samplers by name; all share the signature ``(denoiser, x, sigmas, cond=None, *, generator=None,
callback=None, **options) -> (x, nfe)``."""

ODE_SAMPLERS = ("euler", "heun", "adaptive")
"""The deterministic samplers (no noise drawn with default options)."""
