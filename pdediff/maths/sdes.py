"""Forward noising SDEs of score-based diffusion (Song et al. 2021; Karras et al. 2022).

Every SDE here is a linear (affine-in-x) Ito SDE ``dx = f(x, t) dt + g(t) dw`` on ``t in [eps, T]``
whose transition kernel from the data ``x0`` is Gaussian,

    x_t = scale(t) * (x0 + sigma(t) * n),   n ~ N(0, I),

which is the parameterisation of Karras et al. (2022), eq. 11 and Table 1. ``marginal_prob``
returns the same kernel as ``(mean, std) = (scale * x0, scale * sigma)`` (Song et al. 2021,
eqs. 29 and Appendix B). The samplers in :mod:`pdediff.maths.samplers` work in the "sigma" variable
``x_sigma = x_t / scale(t)``, where every SDE becomes the variance-exploding form ``x0 + sigma n``;
``sigma``, ``scale`` and ``t_of_sigma`` move between the two pictures.

Shapes: a state ``x`` is (B, ...) (any number of trailing axes); a time ``t`` is either a Python
float or a tensor of shape (B,). Per-sample quantities returned by the SDE (``diffusion``,
``std``) have the shape of ``t``.

Random draws come from :mod:`pdediff.maths.noise`, with the generators passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch
from pdediff.maths.noise import Generator, randn
from pdediff.maths.tensors import append_dims

TimeLike = Union[float, torch.Tensor]


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _as_time(t: TimeLike, like: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``t`` as a floating tensor (on ``like``'s dtype and device when given)."""
    if like is not None:
        return torch.as_tensor(t, dtype=like.dtype, device=like.device)
    t = torch.as_tensor(t)
    return t if t.is_floating_point() else t.to(torch.get_default_dtype())


def _per_sample_sum(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).sum(dim=1)


# --------------------------------------------------------------------------------------------
# Base class
# --------------------------------------------------------------------------------------------


class SDE:
    """Interface shared by the forward SDEs (after score_sde_pytorch's ``sde_lib.SDE``).

    Subclasses define ``T``, ``eps``, ``prior_std``, ``sde``, ``sigma``, ``scale`` and
    ``t_of_sigma``; ``marginal_prob``, ``prior_sampling``, ``prior_logp`` and ``reverse`` follow.
    """

    T: float
    eps: float

    # -- to be provided by subclasses ------------------------------------------------------
    @property
    def prior_std(self) -> float:
        """Standard deviation of the Gaussian prior p_T = N(0, prior_std^2 I)."""
        raise NotImplementedError

    def sde(self, x: torch.Tensor, t: TimeLike) -> tuple[torch.Tensor, torch.Tensor]:
        """Drift f(x, t) (shaped like x) and diffusion g(t) (shaped like t) of the forward SDE."""
        raise NotImplementedError

    def sigma(self, t: TimeLike) -> torch.Tensor:
        """Noise level sigma(t) of the sigma-parameterisation x_t = scale * (x0 + sigma * n)."""
        raise NotImplementedError

    def scale(self, t: TimeLike) -> torch.Tensor:
        """Scale s(t) of the sigma-parameterisation x_t = scale * (x0 + sigma * n)."""
        raise NotImplementedError

    def t_of_sigma(self, sigma: TimeLike) -> torch.Tensor:
        """Inverse of :meth:`sigma` (the time at which the noise level is ``sigma``)."""
        raise NotImplementedError

    # -- generic ----------------------------------------------------------------------------
    @property
    def sigma_min(self) -> float:
        """sigma(eps), the smallest noise level the SDE is used at."""
        return float(self.sigma(torch.tensor(self.eps, dtype=torch.float64)))

    @property
    def sigma_max(self) -> float:
        """sigma(T), the largest noise level."""
        return float(self.sigma(torch.tensor(self.T, dtype=torch.float64)))

    def marginal_prob(self, x0: torch.Tensor, t: TimeLike) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of the transition kernel p_0t(x_t | x0) (Song et al. eq. 29 / App. B).

        Both follow from the sigma-parameterisation: ``mean = scale * x0``, ``std = scale * sigma``.

        Returns:
            ``(mean, std)``: mean shaped like ``x0``, std shaped like ``t``.
        """
        t = _as_time(t, x0)
        scale = self.scale(t)
        return append_dims(scale, x0.ndim) * x0, scale * self.sigma(t)

    def prior_sampling(
        self, shape, generator: Generator = None, device=None, dtype=None
    ) -> torch.Tensor:
        """Draw from the prior p_T = N(0, prior_std^2 I)."""
        return randn(shape, generator, device=device, dtype=dtype) * self.prior_std

    def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
        """Log-density of the Gaussian prior at ``z``, summed over all non-batch axes: (B,)."""
        n = z[0].numel()
        var = self.prior_std**2
        return -0.5 * n * math.log(2 * math.pi * var) - _per_sample_sum(z**2) / (2 * var)

    def reverse(
        self, score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], probability_flow: bool = False
    ) -> "ReverseSDE":
        """The reverse-time SDE (Song et al. eq. 6) or probability-flow ODE (eq. 13).

        Args:
            score_fn: ``score_fn(x, t)`` approximating grad_x log p_t(x) in the x_t variable (close
                over any condition).
            probability_flow: if True, return the ODE ``dx = [f - g^2 score / 2] dt`` with zero
                diffusion; else the SDE ``dx = [f - g^2 score] dt + g dw_bar``.
        """
        return ReverseSDE(self, score_fn, probability_flow)


@dataclass
class ReverseSDE:
    """Reverse-time dynamics of a forward :class:`SDE` given a score (Song et al. eqs. 6, 13).

    Time runs from ``T`` down to ``eps``; integrate ``dx = drift dt + diffusion dw_bar`` with
    negative ``dt``.
    """

    forward: SDE
    score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    probability_flow: bool = False

    @property
    def T(self) -> float:
        return self.forward.T

    @property
    def eps(self) -> float:
        return self.forward.eps

    def sde(self, x: torch.Tensor, t: TimeLike) -> tuple[torch.Tensor, torch.Tensor]:
        """Reverse drift ``f - c g^2 score`` (c = 1 for the SDE, 1/2 for the ODE) and diffusion."""
        t = _as_time(t, x)
        drift, diffusion = self.forward.sde(x, t)
        weight = 0.5 if self.probability_flow else 1.0
        drift = drift - weight * append_dims(diffusion**2, x.ndim) * self.score_fn(x, t)
        if self.probability_flow:
            diffusion = torch.zeros_like(diffusion)
        return drift, diffusion


# --------------------------------------------------------------------------------------------
# The SDEs
# --------------------------------------------------------------------------------------------


@dataclass
class VESDE(SDE):
    """Variance-exploding SDE (Song et al. eq. 9; SMLD in the continuum limit).

    ``dx = sigma(t) sqrt(2 log(sigma_max / sigma_min)) dw`` with geometric
    ``sigma(t) = sigma_min (sigma_max / sigma_min)^t``, t in [eps, 1].

    As in Song et al., the kernel's std is taken to be ``sigma(t)`` itself: this is exact when the
    process starts from ``x(0) = x0 + sigma_min n`` (the SDE adds variance
    ``sigma(t)^2 - sigma_min^2``), a difference of order sigma_min^2 that is ignored.
    """

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    eps: float = 1e-5

    T = 1.0

    @property
    def prior_std(self) -> float:
        return self.sigma_max

    def sigma(self, t: TimeLike) -> torch.Tensor:
        t = _as_time(t)
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def scale(self, t: TimeLike) -> torch.Tensor:
        return torch.ones_like(_as_time(t))

    def t_of_sigma(self, sigma: TimeLike) -> torch.Tensor:
        sigma = _as_time(sigma)
        return torch.log(sigma / self.sigma_min) / math.log(self.sigma_max / self.sigma_min)

    def sde(self, x: torch.Tensor, t: TimeLike) -> tuple[torch.Tensor, torch.Tensor]:
        t = _as_time(t, x)
        # d sigma^2 / dt = 2 sigma^2 log(sigma_max / sigma_min)
        diffusion = self.sigma(t) * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min))
        return torch.zeros_like(x), diffusion


class _BetaSchedule:
    """Linear beta(t) = beta_min + t (beta_max - beta_min) and its integral (DDPM continuum),
    shared by the VP and sub-VP SDEs: both have T = 1, a unit prior and scale exp(-B/2)."""

    beta_min: float
    beta_max: float

    T = 1.0

    @property
    def prior_std(self) -> float:
        return 1.0

    def scale(self, t: TimeLike) -> torch.Tensor:
        return torch.exp(-0.5 * self.int_beta(_as_time(t)))

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def int_beta(self, t: torch.Tensor) -> torch.Tensor:
        """B(t) = int_0^t beta(s) ds."""
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def t_of_int_beta(self, b: torch.Tensor) -> torch.Tensor:
        """Positive root of B(t) = b, in the cancellation-free form 2b / (beta_min + sqrt(...))."""
        d = self.beta_max - self.beta_min
        return 2 * b / (self.beta_min + torch.sqrt(self.beta_min**2 + 2 * d * b))


@dataclass
class VPSDE(_BetaSchedule, SDE):
    """Variance-preserving SDE (Song et al. eq. 11; DDPM in the continuum limit).

    ``dx = -beta(t) x / 2 dt + sqrt(beta(t)) dw``; kernel mean ``exp(-B/2) x0``, variance
    ``1 - exp(-B)`` with ``B(t) = int_0^t beta``. In the sigma-parameterisation
    ``scale = exp(-B/2)`` and ``sigma = sqrt(exp(B) - 1)`` (Karras et al., Table 1).
    Song et al. train with eps = 1e-5 and sample with eps = 1e-3.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    eps: float = 1e-5

    def sigma(self, t: TimeLike) -> torch.Tensor:
        return torch.sqrt(torch.expm1(self.int_beta(_as_time(t))))

    def t_of_sigma(self, sigma: TimeLike) -> torch.Tensor:
        return self.t_of_int_beta(torch.log1p(_as_time(sigma) ** 2))

    def sde(self, x: torch.Tensor, t: TimeLike) -> tuple[torch.Tensor, torch.Tensor]:
        t = _as_time(t, x)
        beta = self.beta(t)
        return -0.5 * append_dims(beta, x.ndim) * x, torch.sqrt(beta)


@dataclass
class SubVPSDE(_BetaSchedule, SDE):
    """Sub-VP SDE (Song et al. eq. 12).

    ``dx = -beta(t) x / 2 dt + sqrt(beta(t) (1 - exp(-2 B(t)))) dw``; kernel mean
    ``exp(-B/2) x0`` and std ``1 - exp(-B)``. Hence ``scale = exp(-B/2)`` and
    ``sigma = std / scale = exp(B/2) - exp(-B/2) = 2 sinh(B/2)``, inverted in closed form by
    ``B = 2 asinh(sigma / 2)``.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    eps: float = 1e-5

    def sigma(self, t: TimeLike) -> torch.Tensor:
        return 2 * torch.sinh(0.5 * self.int_beta(_as_time(t)))

    def t_of_sigma(self, sigma: TimeLike) -> torch.Tensor:
        return self.t_of_int_beta(2 * torch.asinh(0.5 * _as_time(sigma)))

    def sde(self, x: torch.Tensor, t: TimeLike) -> tuple[torch.Tensor, torch.Tensor]:
        t = _as_time(t, x)
        beta = self.beta(t)
        diffusion = torch.sqrt(beta * -torch.expm1(-2 * self.int_beta(t)))
        return -0.5 * append_dims(beta, x.ndim) * x, diffusion


@dataclass
class EDMSDE(SDE):
    """The SDE of Karras et al. (2022) with ``sigma(t) = t`` and ``s(t) = 1`` (their eq. 4 / Table 1).

    ``dx = sqrt(2 t) dw`` on t in [sigma_min, sigma_max]; the kernel is exactly N(x0, t^2 I)
    (variance added from 0 to t is int 2s ds = t^2). Time *is* the noise level, so
    ``T = sigma_max`` and ``eps = sigma_min``.
    """

    sigma_min: float = 0.002
    sigma_max: float = 80.0

    @property
    def T(self) -> float:  # type: ignore[override]
        return self.sigma_max

    @property
    def eps(self) -> float:  # type: ignore[override]
        return self.sigma_min

    @property
    def prior_std(self) -> float:
        return self.sigma_max

    def sigma(self, t: TimeLike) -> torch.Tensor:
        return _as_time(t).clone()

    def scale(self, t: TimeLike) -> torch.Tensor:
        return torch.ones_like(_as_time(t))

    def t_of_sigma(self, sigma: TimeLike) -> torch.Tensor:
        return _as_time(sigma).clone()

    def sde(self, x: torch.Tensor, t: TimeLike) -> tuple[torch.Tensor, torch.Tensor]:
        t = _as_time(t, x)
        return torch.zeros_like(x), torch.sqrt(2 * t)


SDES = {"edm": EDMSDE, "ve": VESDE, "vp": VPSDE, "subvp": SubVPSDE}
"""The forward SDEs by name; instantiate with keyword overrides, e.g. ``SDES["vp"](beta_max=10)``."""
