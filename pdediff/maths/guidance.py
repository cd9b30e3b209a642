"""Physics guidance: steer the denoised estimate towards a small PDE residual.

For a linear problem with residual r(phi) = b - A phi, each denoiser call is followed by one
steepest-descent step on f(phi) = ||r(phi)||^2 taken on the denoised estimate phi_hat = D(x):

    phi_hat' = phi_hat - weight * alpha * grad f(phi_hat),   alpha = ||G||^2 / (2 ||A G||^2),

where G = grad f and alpha is the exact minimiser of f along -G (``weight`` in [0, 1]; 1 is the
full step). The probability-flow ODE then moves x towards the corrected estimate.

Why on the estimate and not through the network (DiffusionPDE's grad_x of the residual of
D(x)): here the posterior is a spike, so a good denoiser hardly depends on x and the gradient
through it vanishes; guidance on the estimate acts whatever the denoiser's Jacobian.
"""

from __future__ import annotations

import torch


def residual_guided(denoiser, residual_fn, weight: float, fixed_channel: int | None = None):
    """Wrap ``denoiser`` so each denoised estimate takes one guidance step (see module docstring).

    Args:
        denoiser: callable ``denoiser(x, sigma, cond) -> x0_hat``.
        residual_fn: callable ``residual_fn(x0_hat, cond) -> (r, b)``, affine in ``x0_hat``: the
            residual of an estimate and the right-hand side (per sample; torch, differentiable).
        weight: fraction of the optimal step, in [0, 1] (0 returns the plain denoiser).
        fixed_channel: index of a 0/1 mask channel of ``cond`` marking values the step must not
            change (the Dirichlet ring), or None.
    """

    def guided(x, sigma, cond):
        d = denoiser(x, sigma, cond).detach()
        with torch.enable_grad():
            e = d.clone().requires_grad_(True)
            r, _ = residual_fn(e, cond)
            (grad,) = torch.autograd.grad(r.pow(2).sum(), e)
        if fixed_channel is not None:
            grad = grad * (1 - cond[:, fixed_channel : fixed_channel + 1])
        r_shift, _ = residual_fn(d + grad, cond)
        a_grad = r - r_shift.detach()  # = A G, as r is affine in the estimate
        dims = tuple(range(1, grad.ndim))
        num = grad.pow(2).sum(dims)
        den = 2 * a_grad.detach().pow(2).flatten(1).sum(1)
        alpha = torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(num))
        return d - weight * alpha.view(-1, *([1] * (grad.ndim - 1))) * grad

    return guided


def classifier_free(denoiser, weight: float):
    """Classifier-free guidance (Ho & Salimans 2022, arXiv:2207.12598) of a denoiser trained
    with a null condition (``model.cond_dropout``):

        D_w(x) = (1 + w) D(x | c) - w D(x | null),

    written as ``D + w (D - D_null)``; ``weight`` w = 0 returns ``denoiser`` itself, so the
    unguided answer is reproduced exactly. Each call costs two network evaluations.
    """
    if weight == 0:
        return denoiser

    def guided(x, sigma, cond):
        d = denoiser(x, sigma, cond)
        return d + weight * (d - denoiser(x, sigma, cond, null=True))

    return guided
