"""Posterior denoisers with the exact physics in every estimate.

A joint diffusion model of (source, solution) or (coefficient, solution) is used as the prior
of the unknown input field only. At every sampler call the network's Tweedie estimate D of
that field is conditioned on the observations in closed form, and the solution channel is
replaced by the exact solve of the conditioned field, so the estimate the probability-flow ODE
moves towards always satisfies the discrete PDE:

* a linear problem (:func:`linear_posterior`): y = A rho_hat + c (:mod:`pdediff.maths.kriging`),
  x0 | x taken as N(D, C_t) with C_t the Tweedie covariance of the fitted Gaussian law
  (per mode ``c sigma^2 / (c + sigma^2)``, exact for Gaussian data; ``covariance="isotropic"``
  takes EDM's ``r^2 = sigma^2 sigma_data^2 / (sigma^2 + sigma_data^2)`` instead). Then
  ``rho0 = D + C_t A^T (A C_t A^T + sigma_y^2 I)^-1 (y - c - A D)``;
* a coefficient problem (:func:`elliptic_posterior`): one Gauss-Newton step with the adjoint
  (:mod:`pdediff.maths.gauss_newton`) on log a under N(D, C_t), started from D.

The wrappers are plain functions of a denoiser, like :mod:`pdediff.maths.observe`'s; the caller owns
the sampler, devices and batching. ``fields_of`` and ``model_of`` convert between the network's
channels and physical fields (NumPy float64).
"""

from __future__ import annotations

import numpy as np
import torch

from pdediff.maths.gaussian import SpectralGaussian, inverse, transform
from pdediff.maths.kriging import condition

#: Tweedie covariance models of x0 given the noisy state (see the module docstring).
COVARIANCES = ("spectral", "isotropic")


def tweedie_spectrum(prior_variance: np.ndarray, sigma: float, covariance: str, sigma_data: float | None = None):
    """The per-mode variance of x0 | x at noise level ``sigma`` (physical units)."""
    if covariance == "spectral":
        return prior_variance * sigma**2 / (prior_variance + sigma**2)
    r2 = sigma**2 * sigma_data**2 / (sigma**2 + sigma_data**2)
    return np.full_like(prior_variance, r2)


def linear_posterior(denoiser, fields_of, model_of, groups, unit: float, solve, covariance: str = "spectral", sigma_data: float | None = None):
    """The posterior denoiser of a linear problem (see the module docstring).

    Args:
        denoiser: ``D(x, sigma, cond)`` of the joint prior.
        fields_of: ``d -> source (B, n, n)``, physical units.
        model_of: ``(source, solution) -> tensor like d``, the network's channels.
        groups: per observed sample, ``(rows, a, y, sigma_y2, variance)``: the batch rows
            drawing it, its observation rows A on the source's modes, its observations with the
            lift of the known Dirichlet data taken off, their noise variances, and the source's
            fitted spectrum (physical units, the sample's amplitude included).
        unit: the source's scale in the network's units (sigma is in those units).
        solve: ``source (K, n, n) -> solution (K, n, n)``, the exact solve with the known data.
        covariance: a key of :data:`COVARIANCES`.
        sigma_data: the network's sigma_data (for ``"isotropic"``), its units.
    """
    def posterior(x, sigma, cond):
        d = denoiser(x, sigma, cond).detach()
        s = float(torch.as_tensor(sigma).reshape(-1)[0])
        rho = fields_of(d)
        n = rho.shape[-1]
        out = np.empty_like(rho)
        for rows, a, y, sy2, variance in groups:
            var_t = tweedie_spectrum(variance, s * unit, covariance,
                                     None if sigma_data is None else sigma_data * unit)
            modes = transform(rho[rows], "dst").reshape(len(rows), -1)
            modes, _, _, _ = condition(a, np.zeros((a.shape[0], 0)), y, sy2, modes, var_t, np.zeros(0), np.zeros((0, 0)))
            out[rows] = inverse(modes.reshape(len(rows), n - 2, n - 2), "dst")
        return model_of(out, solve(out), d)

    return posterior


def elliptic_posterior(denoiser, fields_of, model_of, groups, unit: float, prior: SpectralGaussian,
                       covariance: str = "spectral", sigma_data: float | None = None):
    """The posterior denoiser of a coefficient problem: log a's Tweedie estimate conditioned by
    one Gauss-Newton step through the exact solve (see the module docstring).

    ``groups``: per observed sample ``(rows, model, u_nodes, u_values, z_nodes, z_values,
    sigma_u, sigma_z, amplitude)`` with ``model`` a :class:`pdediff.maths.gauss_newton.EllipticModel`.
    ``fields_of``: ``d -> log a (B, n, n)``; ``model_of``: ``(log a, u) -> tensor like d``.
    """
    from pdediff.maths.gauss_newton import map_estimate

    def posterior(x, sigma, cond):
        d = denoiser(x, sigma, cond).detach()
        s = float(torch.as_tensor(sigma).reshape(-1)[0])
        z = fields_of(d)
        out, sol = np.empty_like(z), np.empty_like(z)
        for rows, model, u_nodes, u_values, z_nodes, z_values, sigma_u, sigma_z, amplitude in groups:
            var_t = tweedie_spectrum(prior.variance * amplitude**2, s * unit, covariance,
                                     None if sigma_data is None else sigma_data * unit)
            for r in rows:
                local = SpectralGaussian(z[r], var_t, "dct")
                try:
                    step = map_estimate(model, local, u_nodes, u_values, z_nodes, z_values, sigma_u, sigma_z,
                                        np.random.default_rng(0), 0, iterations=1)
                    out[r], sol[r] = step.z, step.u
                except (RuntimeError, ValueError, FloatingPointError, np.linalg.LinAlgError):
                    out[r], sol[r] = z[r], model.solve(np.clip(z[r], -50, 50))[0]
        return model_of(out, sol, d)

    return posterior
