"""``reconstruct(method="gaussian")``: the classical Bayesian baseline.

A Gaussian prior fitted to the model's
training law (its mean and a stationary covariance from its power spectrum,
:mod:`pdediff.maths.gaussian`; for a coefficient, of log a), conditioned exactly on the observations
through the problem's operator: kriging through the PDE for a linear problem
(:mod:`pdediff.maths.kriging`), a Gauss-Newton MAP with the adjoint and a Laplace spread for a
coefficient seen through its solution (:mod:`pdediff.maths.gauss_newton`).
"""

from __future__ import annotations

import json
import time

import numpy as np

from pdediff.physics.problems.base import boundary_mask
from pdediff.solver.observations import (check_method, dataset, gather, law_priors, lift, rms, spectral, warn_heldout,
                                         warn_prior)

# ---------------------------------------------------------------------------- gaussian: linear
def gaussian_linear(problem, priors: dict, fields: dict, masks: dict, dirichlet_given: bool, samples: int,
                    seed: int, sigma_y: float):
    """Kriging through a spectral linear problem, sample by sample (see the module docstring)."""
    from pdediff.maths.kriging import LinearModel, krige

    src, sol, g_name = problem.source_fields[0], problem.solution_field, problem.dirichlet_field
    if "source" not in priors:
        raise ValueError(f"method='gaussian' needs a prior of {src}, and the model's training law has a constant "
                         f"{src}; expected a model trained on a source family")
    first = next(iter(fields.values()))
    count, n = first.shape[0], first.shape[-1]
    ring_prior = None if dirichlet_given else priors.get("ring")
    base = LinearModel(problem.eigenvalues(n), lift(problem, n), priors["source"], ring_prior)
    out = {k: np.empty((count, n, n)) for k in (src, sol)}
    std = {k: np.empty((count, n, n)) for k in (src, sol)}
    draws = {k: np.empty((count, samples, n, n)) for k in (src, sol)}
    g_out, g_std = np.zeros((count, n, n)), np.zeros((count, n, n))
    g_draws = np.zeros((count, samples, n, n))
    heldout, counts, amplitude = np.zeros(count), np.zeros(count, dtype=np.int64), np.ones(count)
    for b in range(count):
        g_known = fields[g_name][b] if dirichlet_given else np.zeros((n, n))
        model = LinearModel(base.eigenvalues, base.lift, base.source, ring_prior, g_known)
        phi_nodes = np.flatnonzero(masks[sol][b].ravel()) if sol in masks else np.zeros(0, dtype=np.int64)
        rho_nodes = np.flatnonzero(masks[src][b].ravel()) if src in masks else np.zeros(0, dtype=np.int64)
        post = krige(model, phi_nodes, fields[sol][b].ravel()[phi_nodes] if len(phi_nodes) else np.zeros(0),
                     rho_nodes, fields[src][b].ravel()[rho_nodes] if len(rho_nodes) else np.zeros(0), sigma_y,
                     np.random.default_rng([int(seed), b, 2]), samples)
        out[src][b], out[sol][b], std[src][b], std[sol][b] = post.rho, post.phi, post.rho_std, post.phi_std
        draws[src][b], draws[sol][b] = post.rho_draws, post.phi_draws
        if dirichlet_given:
            g_out[b] = g_draws[b] = fields[g_name][b]
        else:
            g_draws[b] = post.g_draws
            g_out[b] = post.g
            g_std[b] = np.where(boundary_mask(n), post.phi_std, 0.0)
        heldout[b], counts[b] = rms(post.loo), len(post.loo)
        amplitude[b] = post.amplitude
    return out, std, draws, g_out, g_std, heldout, counts, amplitude, g_draws


# ---------------------------------------------------------------------------- gaussian: coefficient
def gaussian_elliptic(problem, priors: dict, fields: dict, masks: dict, samples: int, seed: int, sigma_y: float):
    """Kriging of log a given observations of a, Gauss-Newton with the adjoint given observations
    of the solution; Laplace draws, each solved exactly (see the module docstring)."""
    from pdediff.maths.gauss_newton import EllipticModel, map_estimate

    coef, sol = problem.coefficient_fields[0], problem.solution_field
    src, g_name = problem.source_fields[0], problem.dirichlet_field
    prior = priors["log_coefficient"]
    first = next(iter(fields.values()))
    count, n = first.shape[0], first.shape[-1]
    out = {k: np.empty((count, n, n)) for k in (coef, sol)}
    std = {k: np.empty((count, n, n)) for k in (coef, sol)}
    draws = {k: np.empty((count, samples, n, n)) for k in (coef, sol)}
    heldout, counts, misfit = np.zeros(count), np.zeros(count, dtype=np.int64), np.zeros(count)
    iterations = []
    if not masks:
        raise ValueError("nothing is observed")
    for b in range(count):
        model = EllipticModel(problem, fields[src][b], fields[g_name][b])
        u_nodes = np.flatnonzero(masks[sol][b].ravel()) if sol in masks else np.zeros(0, dtype=np.int64)
        a_nodes = np.flatnonzero(masks[coef][b].ravel()) if coef in masks else np.zeros(0, dtype=np.int64)
        a_values = fields[coef][b].ravel()[a_nodes] if len(a_nodes) else np.zeros(0)
        # noise of a on log a, to first order
        sigma_z = float(sigma_y) / a_values if len(a_nodes) else np.zeros(0)
        post = map_estimate(model, prior, u_nodes, fields[sol][b].ravel()[u_nodes] if len(u_nodes) else np.zeros(0),
                            a_nodes, np.log(a_values), sigma_y, sigma_z, np.random.default_rng([int(seed), b, 2]),
                            samples)
        a_draws = np.exp(post.z_draws)
        draws[coef][b], draws[sol][b] = a_draws, post.u_draws
        out[coef][b], out[sol][b] = a_draws.mean(0), post.u_draws.mean(0)
        ddof = 1 if samples > 1 else 0
        std[coef][b], std[sol][b] = a_draws.std(0, ddof=ddof), post.u_draws.std(0, ddof=ddof)
        heldout[b], counts[b] = rms(post.loo), len(post.loo)
        misfit[b] = post.prior_misfit
        iterations.append(post.iterations)
    return out, std, draws, heldout, counts, iterations, misfit


def run_gaussian(solver, samples: int, seed: int, sigma_y: float, return_samples: bool, observed: dict):
    """``Solver.reconstruct(method="gaussian")``."""
    problem = solver.problem
    check_method(problem, "gaussian")
    fields, masks, single, dirichlet_given = gather(problem, solver.grid_size, observed)
    n = next(iter(fields.values())).shape[-1]
    t0 = time.perf_counter()
    priors = law_priors(problem, solver.dataset_card, n)
    g_name = problem.dirichlet_field
    if spectral(problem):
        out, std, draws, g_out, g_std, heldout, counts, amplitude, _ = gaussian_linear(
            problem, priors, fields, masks, dirichlet_given, samples, seed, sigma_y)
        if not dirichlet_given:
            fields = {**fields, g_name: g_out}
            if priors.get("ring") is not None:
                out, std = {**out, g_name: g_out}, {**std, g_name: g_std}
        extra = {"dirichlet": "given" if dirichlet_given else
                 ("inferred" if priors.get("ring") is not None else "zero (the training law's)"),
                 "amplitude": [round(float(v), 6) for v in amplitude]}
    else:
        if not dirichlet_given:
            fields = {**fields, g_name: np.zeros_like(next(iter(fields.values())))}
        out, std, draws, heldout, counts, iterations, misfit = gaussian_elliptic(problem, priors, fields, masks,
                                                                                 samples, seed, sigma_y)
        warn_prior(misfit, counts, "gaussian")
        extra = {"gauss_newton_iterations": iterations, "dirichlet": "given" if dirichlet_given else "zero",
                 "prior_misfit": [round(float(v), 4) for v in misfit]}
    seconds = time.perf_counter() - t0
    solution = out[problem.solution_field]
    args = [out[k] if k in out else fields[k] for k in problem.condition_fields]
    pde = np.atleast_1d(problem.relative_residual(solution, *args))
    warn_heldout(heldout, counts, pde if spectral(problem) else None, "gaussian")
    attrs = dict(method="gaussian", sigma_y=float(sigma_y), nfe=0, samples=int(samples), seconds=seconds,
                 check="leave-one-out", **{k: (json.dumps(v) if isinstance(v, list) else v) for k, v in extra.items()})
    return dataset(problem, out, std, masks, fields, single, heldout, counts, draws if return_samples else None,
                   attrs)
