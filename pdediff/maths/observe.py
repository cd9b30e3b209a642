"""Sampling a joint model from observations: denoisers of the posterior p(x0 | y).

Observations are ``y = M x0 + noise`` with a 0/1 mask ``M`` (the observed nodes of each field,
in the joint model's units) and noise of standard deviation ``sigma_y``. Each function here wraps
a denoiser ``D(x, sigma, cond)`` of the prior into one of the posterior; any sampler then
integrates the posterior's probability-flow ODE, since its score is
``(E[x0 | x, y] - x) / sigma^2`` (Tweedie's formula applied to the posterior).

Weights are derived, not tuned. Given x at noise level sigma, EDM's assumption of data of
standard deviation sigma_data makes x0 | x roughly N(D, r^2 I) with

    r^2 = sigma^2 sigma_data^2 / (sigma^2 + sigma_data^2)

(exact for isotropic Gaussian data, where D is affine and sigma^2 dD/dx = r^2 I). Then

* :func:`replacement` (inpainting): ``D + r^2 / (r^2 + sigma_y^2) M (y - D)``: the observed
  nodes move to their posterior mean given D; nothing else changes.
* :func:`observation_guided` (DPS-style, through the denoiser, as in Pseudoinverse-Guided
  Diffusion, Song et al. 2023): ``D + w J^T M (y - D)`` with ``J = dD/dx`` (one vector-Jacobian
  product) and ``w = sigma^2 / (r^2 + sigma_y^2)``, the gradient of log N(y; M D, (r^2 +
  sigma_y^2) I) times sigma^2. For isotropic Gaussian data both are the exact posterior
  denoiser. (Capping the step at the exact line search on the observation misfit, against
  overshoot where correlated observations count as independent evidence, was measured and
  dropped: from 3 % of a solution field the error went from 10.5 % uncapped to 22.6 % capped
  on one shipped model and from 11 % to 25 % on the other: the cap mostly shrank useful
  steps; README, "Observations and inverse problems".)
* ``+residual`` (``Solver.reconstruct``): after either, one iteration of the problem's
  preconditioned iterative method on the denoised solution given the other denoised fields
  (PDE-residual guidance with the exact operator).
"""

from __future__ import annotations

import torch

from pdediff.maths.tensors import append_dims


def tweedie_variance(sigma: torch.Tensor, sigma_data: torch.Tensor) -> torch.Tensor:
    """r^2 = sigma^2 sigma_data^2 / (sigma^2 + sigma_data^2): the variance of x0 given x at noise
    level sigma for data of standard deviation sigma_data (isotropic Gaussian model)."""
    return sigma**2 * sigma_data**2 / (sigma**2 + sigma_data**2)


def _sigma(sigma, x: torch.Tensor) -> torch.Tensor:
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    return sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma


def replacement(denoiser, y: torch.Tensor, mask: torch.Tensor, sigma_data: float, sigma_y: float = 0.0):
    """The posterior denoiser by replacement of the observed nodes (see the module docstring).

    Args:
        denoiser: ``D(x, sigma, cond)`` of the prior.
        y: observations (B, C, N, N) in the model's units (any value where ``mask`` is 0).
        mask: 1 at observed nodes, 0 elsewhere, same shape.
        sigma_data: the data's standard deviation in the model's units.
        sigma_y: the observations' noise standard deviation (0: exact observations); a number,
            or a tensor broadcastable to y (one value per channel).
    """

    def posterior(x, sigma, cond):
        d = denoiser(x, sigma, cond)
        r2 = append_dims(tweedie_variance(_sigma(sigma, x), torch.as_tensor(sigma_data, dtype=x.dtype)), x.ndim)
        return d + r2 / (r2 + sigma_y**2) * mask * (y - d)

    return posterior


def observation_guided(denoiser, y: torch.Tensor, mask: torch.Tensor, sigma_data: float, sigma_y=0.0,
                       cg_steps: int = 0):
    """The posterior denoiser by guidance through the denoiser (see the module docstring): one
    forward pass and ``1 + cg_steps`` backward passes of the network per call.

    ``cg_steps`` > 0 refines the isotropic model of the observations' covariance by conjugate
    gradients on the linear-Gaussian update, ``lambda = (M C M^T + sigma_y^2 I)^-1 (y - M D)``,
    ``D + C M^T lambda``, with Tweedie's covariance ``C = sigma^2 dD/dx`` applied by
    vector-Jacobian products (exact for Gaussian data, whose dD/dx is symmetric), started from
    the isotropic step: correlated observations then no longer count as independent evidence.
    """

    def _dot(a, b):
        return append_dims((a * b).flatten(1).sum(1), a.ndim)

    def posterior(x, sigma, cond):
        sigma = _sigma(sigma, x)
        s2 = append_dims(sigma**2, x.ndim)
        r2 = append_dims(tweedie_variance(sigma, torch.as_tensor(sigma_data, dtype=x.dtype, device=x.device)), x.ndim)
        sy2 = torch.as_tensor(sigma_y, dtype=x.dtype, device=x.device) ** 2
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            d = denoiser(xg, sigma, cond)

            def cov(v):  # C^T v = sigma^2 (dD/dx)^T v
                return s2 * torch.autograd.grad(d, xg, grad_outputs=v, retain_graph=True)[0]

            misfit = mask * (y - d.detach())
            lam = misfit / (r2 + sy2)  # the isotropic model: C = r^2 I
            step = cov(lam)
            res = misfit - (mask * step + sy2 * lam)
            p, rr = res, _dot(res, res)
            for _ in range(cg_steps):
                cp = cov(p)
                ap = mask * cp + sy2 * p
                pap = _dot(p, ap)
                ok = (pap > 0) & (rr > 0)  # a network's Jacobian need not be positive: stop there
                alpha = torch.where(ok, rr / torch.where(ok, pap, torch.ones_like(pap)), torch.zeros_like(pap))
                lam, step, res = lam + alpha * p, step + alpha * cp, res - alpha * ap
                rr_new = _dot(res, res)
                beta = torch.where(ok, rr_new / torch.where(ok, rr, torch.ones_like(rr)), torch.zeros_like(rr))
                p, rr = res + beta * p, rr_new
        return d.detach() + step

    return posterior


#: Posterior denoisers by name (``Solver.reconstruct(method=...)``): "none" is the network alone
#: (a model that takes the observations as inputs); "+residual" follows by a residual step.
METHODS = ("none", "replace", "dps", "dps+residual", "replace+residual", "none+residual")
