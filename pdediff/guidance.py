"""Physics guidance: steer the denoised estimate towards a small PDE residual.

With a residual r(D(x)) of the denoised estimate, the guided score is
``score(x) - weight * grad_x ||r(D(x))||^2 / ||b||^2`` (DiffusionPDE-style guidance on the
denoised estimate), which in denoiser form reads ``D'(x) = D(x) - weight * sigma^2 * grad``.
"""

from __future__ import annotations

import torch

from pdediff.tensors import append_dims


def residual_guided(denoiser, residual_fn, weight: float):
    """Wrap ``denoiser`` so its output follows the guided score above.

    Args:
        denoiser: callable ``denoiser(x, sigma, cond) -> x0_hat``.
        residual_fn: callable ``residual_fn(x0_hat, cond) -> (r, b)``: the residual of a
            denoised estimate and the right-hand side it is measured against, per sample.
        weight: guidance strength (0 returns the plain denoiser's output).
    """

    def guided(x, sigma, cond):
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            d = denoiser(x, sigma, cond)
            r, b = residual_fn(d, cond)
            dims = tuple(range(1, r.ndim))
            loss = (r.pow(2).sum(dims) / b.pow(2).sum(dims).clamp_min(1e-30)).sum()
            (grad,) = torch.autograd.grad(loss, x)
        return (d - weight * append_dims(sigma, x.ndim) ** 2 * grad).detach()

    return guided
