"""Denoising score-matching losses for a denoiser ``D(x, sigma, cond) -> x0_hat``.

Both losses return one value per sample, shape (B,), and average the squared error over the
non-batch axes (the papers sum; the mean divides by the number N of elements per sample, which
keeps the loss scale independent of the grid size). Randomness comes only from ``generator``
(``None``, one ``torch.Generator`` or one per sample, see :func:`pdediff.maths.sdes.randn`). Noise
levels are drawn first (one per sample), then the noise fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from pdediff.maths.noise import Generator, rand, randn, randn_like
from pdediff.maths.sdes import SDE
from pdediff.maths.tensors import append_dims

Denoiser = Callable[[torch.Tensor, torch.Tensor, object], torch.Tensor]


def _per_sample_mean(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).mean(dim=1)


@dataclass
class EDMLoss:
    """The training loss of Karras et al. (2022), eqs. 2 and 8 and Table 1 ("Ours").

    ``sigma ~ exp(P_mean + P_std N(0, 1))``, ``n ~ N(0, sigma^2 I)``, and

        loss = lambda(sigma) * mean_pixels (D(x0 + n, sigma, cond) - x0)^2,
        lambda(sigma) = 1 / c_out(sigma)^2,

    i.e. the paper's per-sample loss divided by the number of elements per sample. With EDM's
    preconditioning (``precond="edm"``) lambda = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2,
    the paper's; with ``"x0"`` it is 1 / sigma_data^2. Either way the network's own target has
    unit weight at every sigma.
    """

    P_mean: float = -1.2
    P_std: float = 1.2
    sigma_data: float = 0.5
    precond: str = "edm"
    #: > 0: divide each sample's loss by max(mean x0^2, relative_floor^2), a squared relative
    #: error: samples whose target is small in the network's units (short waves, point charges:
    #: |phi| << |rho|) then weigh as much as the others instead of vanishing from the loss.
    relative_floor: float = 0.0

    def __post_init__(self):
        from pdediff.maths.denoiser import PRECONDITIONINGS

        if self.precond not in PRECONDITIONINGS:
            raise ValueError(f"precond={self.precond!r} is unknown; expected one of {sorted(PRECONDITIONINGS)}")
        if not (isinstance(self.relative_floor, (int, float)) and 0 <= self.relative_floor < float("inf")):
            raise ValueError(f"relative_floor={self.relative_floor!r} is invalid; expected a finite number >= 0")

    def weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """lambda(sigma) = 1 / c_out(sigma)^2, which makes the effective training target unit-variance."""
        from pdediff.maths.denoiser import PRECONDITIONINGS

        sigma_data = torch.as_tensor(self.sigma_data, dtype=sigma.dtype, device=sigma.device)
        _, c_out, _, _ = PRECONDITIONINGS[self.precond](sigma, sigma_data)
        return c_out.pow(-2)

    def __call__(
        self, denoiser: Denoiser, x0: torch.Tensor, cond=None, *, generator: Generator = None
    ) -> torch.Tensor:
        """Per-sample loss, shape (B,)."""
        batch = x0.shape[0]
        log_sigma = self.P_mean + self.P_std * randn((batch,), generator, device=x0.device, dtype=x0.dtype)
        sigma = log_sigma.exp()
        noisy = x0 + append_dims(sigma, x0.ndim) * randn_like(x0, generator)
        error = denoiser(noisy, sigma, cond) - x0
        loss = self.weight(sigma) * _per_sample_mean(error**2)
        if self.relative_floor > 0:
            loss = loss / _per_sample_mean(x0**2).clamp_min(self.relative_floor**2)
        return loss


@dataclass
class SDELoss:
    """Denoising score matching of Song et al. (2021), eq. 7, through the denoiser interface.

    ``t ~ U[eps, T]``, ``x_t = mean + std z`` from ``sde.marginal_prob``. The denoiser sees the
    sigma-variable ``x_sigma = x_t / scale(t) = x0 + sigma(t) z`` and ``sigma(t)``. Its score in
    the x_t variable, ``s = (D - x_sigma) / (scale sigma^2)``, differs from the kernel's score
    ``-z / std`` by exactly ``(D - x0) / (scale sigma^2)``, so

        lambda(t) ||s - grad log p_0t||^2 = lambda(t) / (std^2 sigma^2) ||D - x0||^2.

    The returned loss is this quantity divided by the number N of elements per sample (score_sde's
    ``reduce_mean=True``), with

    - ``weighting="sigma2"``: lambda = std^2 (Song et al.'s default), i.e.
      ``mean (D - x0)^2 / sigma^2``;
    - ``weighting="likelihood"``: lambda = g(t)^2 (Song et al. 2021b, "likelihood weighting"),
      whose sum-reduced expectation times (T - eps) / 2 is the score-matching term of the
      likelihood bound (Song et al. 2021b, Thm. 1), up to data-independent constants.
    """

    sde: SDE
    eps: float = 1e-5
    weighting: str = "likelihood"

    def __post_init__(self):
        if self.weighting not in ("likelihood", "sigma2"):
            raise ValueError(f"unknown weighting {self.weighting!r}; choose 'likelihood' or 'sigma2'")
        if not 0 < self.eps < self.sde.T:
            raise ValueError(f"need 0 < eps < T = {self.sde.T}, got eps = {self.eps}")

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        """The factor lambda(t) / (std^2 sigma^2) multiplying mean (D - x0)^2."""
        sigma = self.sde.sigma(t)
        if self.weighting == "sigma2":
            return 1 / sigma**2
        std = self.sde.scale(t) * sigma
        g = self.sde.sde(torch.zeros_like(t), t)[1]
        return g**2 / (std * sigma) ** 2

    def __call__(
        self, denoiser: Denoiser, x0: torch.Tensor, cond=None, *, generator: Generator = None
    ) -> torch.Tensor:
        """Per-sample loss, shape (B,)."""
        batch = x0.shape[0]
        T = float(self.sde.T)
        t = self.eps + (T - self.eps) * rand((batch,), generator, device=x0.device, dtype=x0.dtype)
        mean, std = self.sde.marginal_prob(x0, t)
        x_t = mean + append_dims(std, x0.ndim) * randn_like(x0, generator)
        scale, sigma = self.sde.scale(t), self.sde.sigma(t)
        x_sigma = x_t / append_dims(scale, x0.ndim)
        error = denoiser(x_sigma, sigma, cond) - x0
        return self.weight(t) * _per_sample_mean(error**2)


LOSSES = {"edm": EDMLoss, "sde": SDELoss}
"""Losses by name; ``SDELoss`` needs an SDE object, e.g. ``LOSSES["sde"](SDES["vp"]())``."""


@dataclass
class RefinerLoss:
    """PDE-Refiner's training loss (Lippe et al. 2023) for a network ``net(x, c_noise, cond)`` in
    EDM's preconditioning.

    Each sample draws k = 0 with probability ``p_predict`` and otherwise k uniformly from 1 .. K
    (K = ``len(sigmas)``; PDE-Refiner draws k uniformly from 0 .. K, ``p_predict = 1 / (K + 1)``;
    a half keeps the prediction, which every step starts from, as well trained as a regressor
    of half the budget). k = 0: the network, fed
    zeros and ``c_noise = 0``, predicts the target itself (a one-step regressor's objective).
    k > 0: it denoises ``x0 + sigma_k n`` at PDE-Refiner's small level ``sigma_k``, with EDM's
    weight ``1 / c_out^2``, which at small sigma is the mean squared error of the predicted noise.
    """

    sigmas: tuple[float, ...]
    sigma_data: float = 1.0
    p_predict: float = 0.5

    def __call__(self, denoiser: Denoiser, x0: torch.Tensor, cond=None, *, generator: Generator = None) -> torch.Tensor:
        """Per-sample loss, shape (B,)."""
        from pdediff.maths.denoiser import PRECONDITIONINGS

        batch = x0.shape[0]
        levels = torch.tensor((0.0, *self.sigmas), dtype=x0.dtype, device=x0.device)
        u = rand((batch,), generator, device=x0.device, dtype=x0.dtype)
        refine_u = ((u - self.p_predict) / (1 - self.p_predict)).clamp(0, 1 - 1e-7)
        k = torch.where(u < self.p_predict, torch.zeros_like(u, dtype=torch.long),
                        1 + (refine_u * len(self.sigmas)).long().clamp_max(len(self.sigmas) - 1))
        sigma = levels[k]
        refine = k > 0
        safe = torch.where(refine, sigma, torch.ones_like(sigma))
        c_skip, c_out, c_in, c_noise = PRECONDITIONINGS["edm"](safe, torch.as_tensor(self.sigma_data, dtype=x0.dtype))
        noisy = x0 + append_dims(sigma, x0.ndim) * randn_like(x0, generator)
        mask = append_dims(refine.to(x0.dtype), x0.ndim)
        net_in = mask * append_dims(c_in, x0.ndim) * noisy  # zeros for k = 0
        target = torch.where(append_dims(refine, x0.ndim),
                             (x0 - append_dims(c_skip, x0.ndim) * noisy) / append_dims(c_out, x0.ndim), x0)
        out = denoiser.net(net_in, torch.where(refine, c_noise, torch.zeros_like(c_noise)), cond)
        return _per_sample_mean((out - target) ** 2)
