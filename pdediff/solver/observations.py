"""Fields from what is observed of them, with the exact physics in every draw.

``Solver.reconstruct(method=...)`` for the methods of :data:`METHODS`:

* ``"gaussian"``: the classical Bayesian baseline. A Gaussian prior fitted to the model's
  training law (its mean and a stationary covariance from its power spectrum,
  :mod:`pdediff.maths.gaussian`; for a coefficient, of log a), conditioned exactly on the observations
  through the problem's operator: kriging through the PDE for a linear problem
  (:mod:`pdediff.maths.kriging`), a Gauss-Newton MAP with the adjoint and a Laplace spread for a
  coefficient seen through its solution (:mod:`pdediff.maths.gauss_newton`).
* ``"diffusion"``: a joint diffusion model used as the prior of the source (or of log a), with
  the solution channel never left to the network: at every sampler call, the Tweedie estimate
  of the source is conditioned in closed form on the observations through the exact operator,
  under N(D, C_t) with C_t the Tweedie covariance of the fitted Gaussian law,
  ``c sigma^2 / (c + sigma^2)`` per mode (the exact one for Gaussian data: weights derived, not
  tuned), and the solution is the exact solve of the conditioned source
  (:mod:`pdediff.maths.physics_posterior`).

Both return draws that satisfy the discrete PDE to round-off, and a check of their own: the
standardised residuals of observations the posterior did not use (leave-one-out in closed form
for ``"gaussian"``, a held-out tenth for ``"diffusion"``), in ``residual_heldout`` (per sample,
their RMS: about 1 for a calibrated posterior) and ``attrs["residual"]``. A sample whose held-out
RMS lies beyond the 99.9 % quantile of a chi-square law gets an :class:`AccuracyWarning`.
"""

from __future__ import annotations

import functools
import json
import time
import warnings

import numpy as np

from pdediff import AccuracyWarning
from pdediff.maths.gaussian import DenseGaussian, SpectralGaussian
from pdediff.physics.problems.base import COEFFICIENT, DIRICHLET, SOURCE, Grid, boundary_mask

#: The methods of this module (``Solver.reconstruct`` keeps its older ones beside them).
METHODS = ("gaussian", "diffusion")

#: Draws of the training law that the Gaussian prior is fitted on (3,000 as in the issue that
#: set the baseline; about 1-4 s at N = 64 on a CPU, once per law and grid, cached).
PRIOR_DRAWS = 3000

#: The sampler's noise levels of ``"diffusion"`` by default (Heun: 31 network evaluations a
#: draw): 16 levels were as accurate as 32 on blob sources from 3 % of the solution at half the time,
#: and the draws then buy more than the levels (``python -m benchmarks.posterior --blocks nfe``).
DIFFUSION_STEPS = 16

#: The share of observations held back by ``"diffusion"`` to check the posterior (at least one,
#: none when fewer than 10 are observed).
HOLDOUT = 0.1

#: A sample's held-out RMS z is flagged above this quantile of sqrt(chi2_k / k).
FLAG_QUANTILE = 0.999


# ---------------------------------------------------------------------------- the law's prior
@functools.lru_cache(maxsize=16)
def _law_priors(problem_key: str, source: str, boundary: str, coefficient: str, n: int, count: int):
    from pdediff.physics.coefficients import get_coefficient
    from pdediff.physics.sources import get_boundary, get_source

    grid = Grid(int(n))

    def rngs(stream):
        return [np.random.default_rng([20_261_205, stream, k]) for k in range(count)]

    out = {}
    if source and source != "unit":
        out["source"] = SpectralGaussian.fit(get_source(source).sample(grid, rngs(0)), "dst")
    if boundary:
        g = get_boundary(boundary).sample(grid, rngs(1)).reshape(count, -1)[:, boundary_mask(n).ravel()]
        ring = DenseGaussian.fit(g)
        out["ring"] = None if ring.is_zero else ring
    if coefficient:
        a = get_coefficient(coefficient).sample(grid, rngs(2))
        out["log_coefficient"] = SpectralGaussian.fit(np.log(a), "dct")
    return out


def law_priors(problem, card: dict | None, n: int, count: int = PRIOR_DRAWS) -> dict:
    """The Gaussian priors of a model's training law on the n x n grid: ``"source"`` (DST-I
    spectrum of the source), ``"ring"`` (the Dirichlet data on the ring, None for zero data) and
    ``"log_coefficient"`` (DCT-I spectrum of log a), those the law has.

    Raises:
        ValueError: a card that does not name generator families (an external dataset).
    """
    if not card or not (card.get("source") or card.get("coefficient")):
        raise ValueError("method='gaussian' fits its prior to the model's training law, and this model's dataset "
                         "card names no generator families (source, boundary, coefficient); expected a model trained "
                         "on data from generate_data.py")
    key = json.dumps({"problem": problem.name, **problem.params()}, sort_keys=True)
    return _law_priors(key, card.get("source") or "", card.get("boundary") or "", card.get("coefficient") or "",
                       int(n), int(count))


# ---------------------------------------------------------------------------- observations
def read_arrays(problem, observed: dict):
    """``(arrays, shape, first)``: the given fields as float64 arrays of one shared (N, N) or
    (B, N, N) shape (NaN where not observed), and the first field's name.

    Raises:
        ValueError: naming the field: not a field of the problem, not real numbers, a wrong or
            mismatched shape, inf.
    """
    names = (*problem.condition_fields, *problem.solution_fields)
    unknown = [k for k in observed if k not in names]
    if unknown:
        raise ValueError(f"{unknown} are not fields of problem {problem.name!r}; expected some of {list(names)}")
    arrays, shape, first = {}, None, None
    for k, v in observed.items():
        if v is None:
            continue
        try:
            a = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{k} could not be read as an array of real numbers (NaN where not observed)") from None
        if a.ndim not in (2, 3) or a.shape[-1] != a.shape[-2]:
            raise ValueError(f"{k} has shape {a.shape}; expected (N, N) or (B, N, N), NaN where not observed")
        if shape is None:
            shape, first = a.shape, k
        elif a.shape != shape:
            raise ValueError(f"{k} has shape {a.shape}; expected {shape} to match {first}")
        if np.isinf(a).any():
            raise ValueError(f"{k} contains inf; expected finite values at observed nodes and NaN elsewhere")
        arrays[k] = a
    return arrays, shape, first


def gather(problem, trained_n, observed: dict):
    """Check ``reconstruct``'s fields: ``(fields, masks, single, dirichlet_given)``.

    ``fields`` holds every given field as (B, N, N) float64 (NaN where not observed); ``masks``
    the observed nodes of each field where it is unknown (a solution's interior when the ring is
    data that is given; its whole grid when it is not); conditions that are not unknowns (a
    Dirichlet field, a source of a coefficient problem) must come whole or take their defaults.

    Raises:
        ValueError: naming the field: not a field of the problem, wrong shape, inf, all NaN, a
            non-positive coefficient, an empty batch, a grid the model was not trained on.
    """
    names = (*problem.condition_fields, *problem.solution_fields)
    arrays, shape, first = read_arrays(problem, observed)
    if not arrays:
        raise ValueError(f"nothing is observed; expected at least one of {list(names)}, NaN where not observed")
    single = len(shape) == 2
    arrays = {k: (v[None] if single else v) for k, v in arrays.items()}
    count, n = arrays[first].shape[0], shape[-1]
    if count == 0:
        raise ValueError(f"{first} has shape {shape}: an empty batch; expected at least one sample")
    if trained_n and n != trained_n:
        raise ValueError(f"{first} has shape {shape}; this model was trained on ({trained_n}, {trained_n}) node "
                         "grids; expected that grid")
    problem.check_grid(n)
    ring = boundary_mask(n)
    g_name = problem.dirichlet_field
    dirichlet_given = g_name in arrays
    # the solution's ring is unknown only where the Dirichlet data are inferred (linear problems)
    infer_ring = g_name is not None and not dirichlet_given and spectral(problem)
    unknowns = unknown_fields(problem)
    for k in problem.condition_fields:
        if k in unknowns:
            continue
        if k not in arrays:
            default = problem.field(k).default
            if default is None:
                raise ValueError(f"{k} is required; expected an array of shape {shape} with no NaN")
            arrays[k] = np.full((count, n, n), float(default))
        else:
            acts = problem.support(k, n)
            if np.isnan(arrays[k][:, acts]).any():
                raise ValueError(f"{k} must be given whole where it acts (it is not inferred); expected no NaN "
                                 f"there, or leave {k} out" + (" to infer it" if k == g_name else ""))
    masks = {}
    seen = np.zeros(count, dtype=bool)
    for k in unknowns:
        if k not in arrays:
            continue
        if k in problem.solution_fields:
            where = np.ones((n, n), dtype=bool) if g_name is None or infer_ring else ~ring
        else:
            where = problem.support(k, n)
        m = np.isfinite(arrays[k]) & where
        if not m.any():
            raise ValueError(f"{k} has no observed node where it is unknown (all NaN); expected at least one finite "
                             f"value, or leave {k} out to treat it as unknown")
        if k in problem.coefficient_fields and not (arrays[k][m] > 0).all():
            raise ValueError(f"{k} has observed values <= 0 (min {arrays[k][m].min()!r}); expected {k} > 0")
        masks[k] = m
        seen |= m.reshape(count, -1).any(axis=1)
    if not masks:
        raise ValueError(f"nothing of {list(unknowns)} is observed; expected at least one of them, NaN where not "
                         "observed")
    check_dense(problem, masks, n)
    if not seen.all():
        b = int(np.flatnonzero(~seen)[0])
        raise ValueError(f"sample {b} of the batch has no observed node in any of {list(masks)} (all NaN); "
                         "expected at least one observed node in every sample")
    return arrays, masks, single, dirichlet_given


def check_dense(problem, masks: dict, n: int) -> None:
    """A ValueError naming the fields when a sample has more observations than the dense m x m
    systems hold (:data:`pdediff.maths.kriging.DENSE_MAX`); a field observed wherever it acts is
    substituted exactly and does not count."""
    from pdediff.maths.kriging import DENSE_MAX

    total = 0
    for k, m in masks.items():
        counts = m.reshape(len(m), -1).sum(axis=1)
        whole = k in problem.source_fields and m[:, problem.support(k, n)].all(axis=1)
        total = total + np.where(whole, 0, counts)
    worst = int(np.max(total))
    if worst > DENSE_MAX:
        raise ValueError(f"{' and '.join(masks)} have {worst} observed nodes in one sample; the posterior solves a "
                         f"dense system of one row per observation and holds at most {DENSE_MAX}: expected fewer "
                         "observations (subsample them), or a source given wholly where it acts (then substituted)")


def unknown_fields(problem) -> tuple[str, ...]:
    """The fields a reconstruction infers: a linear problem's source and solution; a coefficient
    problem's coefficient and solution."""
    if problem.coefficient_fields:
        return (*problem.coefficient_fields, *problem.solution_fields)
    return (*problem.source_fields, *problem.solution_fields)


def spectral(problem) -> bool:
    """A linear problem with one source whose interior operator has DST-I eigenvalues."""
    return (problem.linear and not problem.coefficient_fields and len(problem.source_fields) == 1
            and hasattr(problem, "eigenvalues") and problem.fast_solve is not None)


def elliptic(problem) -> bool:
    """A problem with one coefficient, one source, Dirichlet data and an adjoint-ready residual."""
    return len(problem.coefficient_fields) == 1 and problem.dirichlet_field is not None and problem.offers_residual


def check_method(problem, method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method={method!r} is unknown; expected one of {list(METHODS)}")
    if not (spectral(problem) or elliptic(problem)):
        raise ValueError(f"method={method!r} needs a linear problem with a spectral solve or a coefficient problem "
                         f"with an adjoint; problem {problem.name!r} is neither")


@functools.lru_cache(maxsize=8)
def _lift(problem_key: str, problem, n: int) -> np.ndarray:
    from pdediff.maths.kriging import ring_nodes

    nodes = ring_nodes(n)
    g = np.zeros((len(nodes), n * n))
    g[np.arange(len(nodes)), nodes] = 1.0
    zero = np.zeros((len(nodes), n, n))
    args = [zero if f.role == SOURCE else g.reshape(-1, n, n) for f in problem.fields]
    return problem.fast_solve(*args)


def lift(problem, n: int) -> np.ndarray:
    """(r, n, n): the solution of each unit value on the ring with zero source (cached)."""
    return _lift(json.dumps({"p": problem.name, **problem.params()}, sort_keys=True), problem, int(n))


# ---------------------------------------------------------------------------- the check
def flag_threshold(k: int) -> float:
    """The RMS of k standard normal residuals exceeds this with probability 1 - FLAG_QUANTILE."""
    from scipy.stats import chi2

    return float(np.sqrt(chi2.ppf(FLAG_QUANTILE, max(k, 1)) / max(k, 1)))


def split_holdout(nodes: np.ndarray, rng: np.random.Generator, share: float):
    """``(kept, held)`` of flat indices: a random ``share`` held back (none below 10 nodes)."""
    if share <= 0 or len(nodes) < 10:
        return nodes, nodes[:0]
    k = max(1, int(round(share * len(nodes))))
    order = rng.permutation(len(nodes))
    return np.sort(nodes[order[k:]]), np.sort(nodes[order[:k]])


def warn_heldout(rms: np.ndarray, counts: np.ndarray, pde: np.ndarray | None, method: str) -> None:
    """An AccuracyWarning naming how many samples the held-out residuals or the PDE residual
    say are off, and why."""
    flagged = [b for b in range(len(rms)) if counts[b] > 0 and rms[b] > flag_threshold(int(counts[b]))]
    if flagged:
        worst = max(flagged, key=lambda b: rms[b])
        warnings.warn(
            f"{len(flagged)} of {len(rms)} sample(s) are predicted poorly by their own posterior (method={method!r}): "
            f"the observations it did not use lie {rms[worst]:.3g} standard deviations off in RMS (sample {worst}; "
            f"a calibrated posterior gives about 1, and more than {flag_threshold(int(counts[worst])):.2f} has odds "
            f"under 1 in 1000). The fields likely come from a law unlike the model's training law; treat the "
            "answer and its spread as unreliable", AccuracyWarning, stacklevel=4)
    if pde is not None:
        bad = np.flatnonzero(~(pde <= 1e-6))
        if len(bad):
            warnings.warn(f"{len(bad)} of {len(pde)} sample(s) have a relative PDE residual above 1e-6 (worst "
                          f"{float(np.max(pde[bad])):.3g}): the draws are not exact solutions", AccuracyWarning,
                          stacklevel=4)


def warn_prior(misfit: np.ndarray, counts: np.ndarray, method: str) -> None:
    """An AccuracyWarning where the prior fitted to the training law cannot explain a sample's
    observations (a coefficient law has no free amplitude: its values are the law's): the
    observations' Mahalanobis norm under the prior beyond the same chi-square quantile."""
    flagged = [b for b in range(len(misfit)) if counts[b] > 0 and misfit[b] > flag_threshold(int(counts[b]))]
    if flagged:
        worst = max(flagged, key=lambda b: misfit[b])
        warnings.warn(
            f"{len(flagged)} of {len(misfit)} sample(s) have observations the training law's prior does not explain "
            f"(method={method!r}): {misfit[worst]:.3g} prior standard deviations in RMS (sample {worst}; about 1 for "
            "the model's own law). The coefficient likely comes from another law; treat the answer as unreliable",
            AccuracyWarning, stacklevel=4)


# ---------------------------------------------------------------------------- the dataset
def dataset(problem, fields: dict, stds: dict, masks: dict, given: dict, single: bool, heldout: np.ndarray,
            heldout_count: np.ndarray, draws: dict | None, attrs: dict):
    """The posterior as an ``xarray.Dataset`` (the layout of ``Solver.reconstruct``)."""
    import xarray as xr

    first = next(iter(fields.values()))
    n = first.shape[-1]
    grid = problem.grid(n)
    dims = ("sample", "y", "x")
    data = {}
    for k, v in fields.items():
        data[k] = (dims, v)
        data[f"{k}_std"] = (dims, stds[k])
        if k in masks:
            data[f"{k}_observed"] = (dims, masks[k])
        if draws is not None and k in draws:
            data[f"{k}_samples"] = (("sample", "draw", "y", "x"), draws[k])
    for k in problem.condition_fields:
        if k not in fields:
            data[k] = (dims, given[k])
    args = [fields[k] if k in fields else given[k] for k in problem.condition_fields]
    solution = fields[problem.solution_field]
    data["residual"] = (dims, problem.residual(solution, *args))
    data["residual_rel"] = (("sample",), np.atleast_1d(problem.relative_residual(solution, *args)))
    data["residual_heldout"] = (("sample",), heldout)
    data["heldout_count"] = (("sample",), heldout_count)
    total = float(np.sqrt(np.sum(heldout**2 * heldout_count) / max(np.sum(heldout_count), 1)))
    ds = xr.Dataset(data, coords={"sample": np.arange(solution.shape[0]), "y": grid.y, "x": grid.x},
                    attrs={"problem": problem.name, "N": grid.n, "h": grid.h, "joint": list(fields), "residual": total,
                           **attrs})
    return ds.isel(sample=0) if single else ds


def _rms(z: np.ndarray) -> float:
    return float(np.sqrt(np.mean(z**2))) if len(z) else 0.0


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
        heldout[b], counts[b] = _rms(post.loo), len(post.loo)
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
        heldout[b], counts[b] = _rms(post.loo), len(post.loo)
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
    priors = law_priors(problem, solver.card, n)
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


# ---------------------------------------------------------------------------- diffusion
def run_diffusion(solver, samples: int, seed: int, sigma_y: float, return_samples: bool, observed: dict, *,
                  sampler: str, steps: int, batch_size: int, progress: bool, holdout: float = HOLDOUT,
                  covariance: str = "spectral", control: bool = True):
    """``Solver.reconstruct(method="diffusion")`` (see the module docstring)."""
    import torch

    from pdediff.learning.conditioning import joint_conditions, joint_decode_field, joint_encode, joint_encode_field
    from pdediff.maths.gauss_newton import EllipticModel
    from pdediff.maths.gaussian import inverse, transform
    from pdediff.maths.kriging import LinearModel, ring_nodes
    from pdediff.maths.noise import randn
    from pdediff.maths.physics_posterior import COVARIANCES, elliptic_posterior, linear_posterior
    from pdediff.maths.samplers import SAMPLERS, get_sigmas_karras
    from pdediff.solver import _generators

    problem = solver.problem
    check_method(problem, "diffusion")
    if covariance not in COVARIANCES:
        raise ValueError(f"covariance={covariance!r} is unknown; expected one of {list(COVARIANCES)}")
    joint = tuple(solver.config.model.joint)
    wanted = unknown_fields(problem)
    if sorted(joint) != sorted(wanted) or solver.config.model.observe:
        raise ValueError(f"method='diffusion' needs a joint model of {list(wanted)} (its prior of "
                         f"{wanted[0]}), without observation inputs; this model has model.joint={list(joint)}: expected "
                         "one of the shipped '-joint' models, or method='gaussian'")
    fields, masks, single, dirichlet_given = gather(problem, solver.grid_size, observed)
    count, n = next(iter(fields.values())).shape[0], next(iter(fields.values())).shape[-1]
    t0 = time.perf_counter()
    priors = law_priors(problem, solver.card, n)
    sol, g_name = problem.solution_field, problem.dirichlet_field
    field = wanted[0]  # the source or the coefficient: the network's prior
    if spectral(problem) and sigma_y == 0 and field in masks and masks[field][:, problem.support(field, n)].all():
        # the source is known wherever it acts: the posterior is the exact solve, no prior needed
        ds = run_gaussian(solver, samples, seed, sigma_y, return_samples, observed)
        ds.attrs.update(method="diffusion", note=f"{field} given whole: the exact solve (no network evaluation)")
        return ds
    # hold back a share of each sample's observations (all fields) to check the posterior
    kept, held = {}, {}
    for b in range(count):
        rng = np.random.default_rng([int(seed), b, 3])
        for k in masks:
            nodes = np.flatnonzero(masks[k][b].ravel())
            kept[k, b], held[k, b] = split_holdout(nodes, rng, holdout)
    kept_masks = {k: np.zeros_like(m) for k, m in masks.items()}
    for (k, b), nodes in kept.items():
        kept_masks[k][b].reshape(-1)[nodes] = True
    kept_fields = {k: (np.where(kept_masks[k], v, np.nan) if k in masks else v) for k, v in fields.items()}
    amplitude = np.ones(count)
    if spectral(problem):
        # the Gaussian posterior gives the Dirichlet data where they are not given, and each
        # sample's prior amplitude
        # (a draw of the data for each draw where they are inferred) and each sample's amplitude
        base, _, _, g_est, _, _, _, amplitude, g_draws = gaussian_linear(problem, priors, kept_fields, kept_masks,
                                                                        dirichlet_given, samples, seed, sigma_y)
        if not dirichlet_given:
            fields = {**fields, g_name: g_est}
        g_rows = g_draws.reshape(count * samples, n, n)
    else:
        if not dirichlet_given:
            fields = {**fields, g_name: np.zeros((count, n, n))}
        g_rows = np.repeat(fields[g_name], samples, axis=0)
    conds = {k: np.repeat(fields[k], samples, axis=0) for k in joint_conditions(problem, joint)}
    conds[g_name] = g_rows
    dtype, device = solver.dtype, solver.device
    cond_t = {k: torch.as_tensor(v, dtype=dtype, device=device) for k, v in conds.items()}
    _, cond = joint_encode(problem, solver.norm, joint, cond_t)
    unit = joint_unit_of(problem, solver.norm, field)
    i_field, i_sol = joint.index(field), joint.index(sol)
    sigma_data = float(solver.denoiser.sigma_data)

    def fields_of(d):
        f = joint_decode_field(problem, solver.norm, field, d[:, i_field]).double().cpu().numpy()
        return np.log(f) if field in problem.coefficient_fields else f

    def model_of(f, u, d):
        ft = torch.as_tensor(np.exp(f) if field in problem.coefficient_fields else f, dtype=d.dtype, device=d.device)
        ut = torch.as_tensor(u, dtype=d.dtype, device=d.device)
        out = d.clone()
        out[:, i_field] = joint_encode_field(problem, solver.norm, field, ft)
        out[:, i_sol] = joint_encode_field(problem, solver.norm, sol, ut)
        return out

    # per observed sample: its rows of observations (the kept ones)
    if spectral(problem):
        from pdediff.maths.kriging import LinearModel

        lift_e = lift(problem, n)
        lam = problem.eigenvalues(n)
        per_sample = []
        for b in range(count):
            model = LinearModel(lam, lift_e, priors["source"], None, fields[g_name][b])
            phi_nodes = kept.get((sol, b), np.zeros(0, dtype=np.int64))
            phi_nodes = phi_nodes[~np.isin(phi_nodes, ring_nodes(n))]
            src_nodes = kept.get((field, b), np.zeros(0, dtype=np.int64))
            a, _ = model.rows(phi_nodes, src_nodes)
            y = np.concatenate([fields[sol][b].ravel()[phi_nodes] if len(phi_nodes) else np.zeros(0),
                                fields[field][b].ravel()[src_nodes] if len(src_nodes) else np.zeros(0)])
            per_sample.append((a, y, phi_nodes, np.full(len(y), sigma_y**2),
                               priors["source"].variance * amplitude[b] ** 2))
        lifted = LinearModel(lam, lift_e, priors["source"])

        def solve_of(rows):
            def solve(f):
                return lifted.solution(f, np.stack([ring_values(g_rows[r], n) for r in rows]))
            return solve

        def linear_groups(rows_all, which):
            out = []
            for b in np.unique(which):
                rows = np.flatnonzero(which == b)
                a, y, phi_nodes, sy2, variance = per_sample[b]
                y = np.repeat(y[None], len(rows), axis=0)
                offsets = solve_of(rows_all[rows])(np.zeros((len(rows), n, n))).reshape(len(rows), -1)
                y[:, :len(phi_nodes)] -= offsets[:, phi_nodes]
                out.append((rows, a, y, sy2, variance))
            return out
    else:
        per_sample = []
        for b in range(count):
            model = EllipticModel(problem, fields[problem.source_fields[0]][b], fields[g_name][b])
            u_nodes = kept.get((sol, b), np.zeros(0, dtype=np.int64))
            z_nodes = kept.get((field, b), np.zeros(0, dtype=np.int64))
            z_values = np.log(fields[field][b].ravel()[z_nodes]) if len(z_nodes) else np.zeros(0)
            u_values = fields[sol][b].ravel()[u_nodes] if len(u_nodes) else np.zeros(0)
            per_sample.append((model, u_nodes, u_values, z_nodes, z_values, sigma_y,
                               sigma_y / np.exp(z_values) if len(z_nodes) else np.zeros(0), 1.0))
        # the flow starts from the Gauss-Newton posterior's draws, noised to the level sigma* at
        # which the noise equals that posterior's own spread (its mean variance of log a over the
        # nodes): the coarse field comes from the exact adjoint, the diffusion prior sharpens it
        _, _, warm, _, _, _, misfit = gaussian_elliptic(problem, priors, kept_fields, kept_masks, max(samples, 2),
                                                        seed, sigma_y)
        warn_prior(misfit, np.array([len(kept.get((k, b), ())) for b in range(count) for k in [field, sol]])
                   .reshape(count, 2).sum(1), "diffusion")
        warm_z = np.log(warm[field])
        warm_sigma = np.sqrt(np.mean(np.var(warm_z, axis=1, ddof=1), axis=(-2, -1))) / unit
        warm_sigma = np.clip(warm_sigma, solver.config.model.sigma_min * 2, solver.config.model.sigma_max)

    sigmas = get_sigmas_karras(steps, solver.config.model.sigma_min, solver.config.model.sigma_max,
                               device=device).to(dtype)
    total = count * samples
    coupled = np.zeros((total, n, n))

    def gaussian_denoiser(amplitudes):
        law = priors["source"]

        def denoise(x, sigma, cond):
            s = float(torch.as_tensor(sigma).reshape(-1)[0]) * unit
            f = x[:, i_field].double().cpu().numpy() * unit
            c = law.variance[None] * amplitudes[:, None, None] ** 2
            f = law.mean + inverse(c / (c + s**2) * transform(f - law.mean, "dst"), "dst")
            d = x.clone()
            d[:, i_field] = torch.as_tensor(f / unit, dtype=x.dtype, device=x.device)
            return d

        return denoise
    draws = {k: np.empty((total, n, n)) for k in (field, sol)}
    if spectral(problem):
        starts = [(a, min(a + batch_size, total)) for a in range(0, total, batch_size)]
    else:  # one warm start per sample: batches do not cross samples
        starts = [(b * samples + a, b * samples + min(a + batch_size, samples))
                  for b in range(count) for a in range(0, samples, batch_size)]
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="reconstruct", unit="batch")
    nfe = 0
    for start, stop in starts:
        which = np.arange(start, stop) // samples
        rows_all = np.arange(start, stop)
        cb = None if cond is None else cond[start:stop]
        if spectral(problem):
            posterior = linear_posterior(solver.denoiser, fields_of, model_of, linear_groups(rows_all, which), unit,
                                         solve_of(rows_all), covariance, sigma_data)
        else:
            groups = [(np.flatnonzero(which == b), *per_sample[b]) for b in np.unique(which)]
            posterior = elliptic_posterior(solver.denoiser, fields_of, model_of, groups, unit,
                                           priors["log_coefficient"], covariance, sigma_data)
        x = randn((stop - start, len(joint), n, n), _generators(seed, start, stop - start, 0), device, dtype)
        schedule = sigmas
        if spectral(problem):
            x = x * sigmas[0]
        else:
            b = int(which[0])
            schedule = get_sigmas_karras(steps, solver.config.model.sigma_min, float(warm_sigma[b]),
                                         device=device).to(dtype)
            k = np.arange(start, stop) - b * samples
            a0 = torch.as_tensor(warm[field][b][k], dtype=dtype, device=device)
            u0 = torch.as_tensor(warm[sol][b][k], dtype=dtype, device=device)
            x0 = torch.stack([joint_encode_field(problem, solver.norm, name, a0 if name == field else u0)
                              for name in joint], dim=1)
            x = x0 + x * schedule[0]
        x_start = x.clone()
        with torch.no_grad():
            x, used = SAMPLERS[sampler](posterior, x, schedule, cb, generator=_generators(seed, start, stop - start, 1))
        nfe = max(nfe, int(used))
        if spectral(problem) and control:
            # the same flow from the same noise with the exact denoiser of the fitted Gaussian law:
            # draws of the Gaussian posterior coupled to the network's, whose mean is known exactly
            gauss = linear_posterior(gaussian_denoiser(amplitude[which]), fields_of, model_of,
                                     linear_groups(rows_all, which), unit, solve_of(rows_all), covariance, sigma_data)
            with torch.no_grad():
                xg, _ = SAMPLERS[sampler](gauss, x_start, sigmas, cb, generator=_generators(seed, start, stop - start, 1))
            coupled[start:stop] = np.where(boundary_mask(n), 0.0, fields_of(xg))
        f = fields_of(x)
        if spectral(problem):
            f = np.where(boundary_mask(n), 0.0, f)
            u = solve_of(rows_all)(f)
        else:
            u = np.stack([per_sample[b][0].solve(f[i])[0] for i, b in enumerate(which)])
            f = np.exp(f)
        draws[field][start:stop], draws[sol][start:stop] = f, u
    draws = {k: v.reshape(count, samples, n, n) for k, v in draws.items()}
    out = {k: v.mean(axis=1) for k, v in draws.items()}
    ddof = 1 if samples > 1 else 0
    std = {k: v.std(axis=1, ddof=ddof) for k, v in draws.items()}
    beta = np.zeros(count)
    if spectral(problem) and control:
        coupled = coupled.reshape(count, samples, n, n)
        for b in range(count):
            dx = draws[field][b] - draws[field][b].mean(0)
            dg = coupled[b] - coupled[b].mean(0)
            var = float((dg**2).sum())
            beta[b] = 1.0 if samples < 2 or var == 0 else float(np.clip((dx * dg).sum() / var, 0.0, 1.0))
            out[field][b] = out[field][b] - beta[b] * (coupled[b].mean(0) - base[field][b])
        # the Dirichlet data's draws are shared by both flows: the same correction (phi is linear
        # in the source and the data, so the mean solution is the solve of the corrected means)
        g_mean = g_rows.reshape(count, samples, n, n).mean(axis=1)
        g_mean = g_mean - beta[:, None, None] * (g_mean - fields[g_name])
        lifted_all = LinearModel(lam, lift_e, priors["source"])
        out[sol] = lifted_all.solution(out[field], np.stack([ring_values(g_mean[b], n) for b in range(count)]))
        corrected_g = g_mean
    if spectral(problem) and not dirichlet_given and priors.get("ring") is not None:
        ring = boundary_mask(n)
        g_draws = g_rows.reshape(count, samples, n, n)
        out[g_name] = corrected_g if control else g_draws.mean(axis=1)
        std[g_name] = np.where(ring, g_draws.std(axis=1, ddof=ddof), 0.0)
        fields = {**fields, g_name: out[g_name]}
    heldout, counts = np.zeros(count), np.zeros(count, dtype=np.int64)
    for b in range(count):
        z = []
        for k in masks:
            nodes = held[k, b]
            if len(nodes):
                mean, sd = out[k][b].ravel()[nodes], std[k][b].ravel()[nodes]
                z.append((fields[k][b].ravel()[nodes] - mean) / np.sqrt(sd**2 + sigma_y**2 + 1e-300))
        z = np.concatenate(z) if z else np.zeros(0)
        heldout[b], counts[b] = _rms(z), len(z)
    seconds = time.perf_counter() - t0
    args = [out[k] if k in out else fields[k] for k in problem.condition_fields]
    pde = np.atleast_1d(problem.relative_residual(out[sol], *args))
    warn_heldout(heldout, counts, pde if spectral(problem) else None, "diffusion")
    if not spectral(problem):
        extra_attrs = {"warm_start_sigma": json.dumps([round(float(v), 5) for v in warm_sigma])}
    else:
        extra_attrs = {}
    attrs = dict(method="diffusion", sigma_y=float(sigma_y), sampler=sampler, steps=int(steps), nfe=nfe, **extra_attrs,
                 samples=int(samples), seconds=seconds, check=f"held-out share {holdout:g}", covariance=covariance,
                 control_variate=json.dumps([round(float(v), 4) for v in beta]) if control and spectral(problem) else "none",
                 dirichlet="given" if dirichlet_given else ("inferred" if spectral(problem) and
                                                            priors.get("ring") is not None else "zero"))
    ds = dataset(problem, out, std, masks, fields, single, heldout, counts, draws if return_samples else None, attrs)
    for k in masks:  # the observations held back (not used by the posterior)
        held_mask = masks[k] & ~kept_masks[k]
        ds[f"{k}_heldout"] = (ds[f"{k}_observed"].dims, held_mask[0] if single else held_mask)
    return ds


def ring_values(g: np.ndarray, n: int) -> np.ndarray:
    from pdediff.maths.kriging import ring_nodes

    return g.reshape(-1)[ring_nodes(n)]


def joint_unit_of(problem, norm, name: str) -> float:
    """A joint field's scale: sigma in the network's units times it is sigma in the field's (of
    log a for a coefficient)."""
    from pdediff.learning.conditioning import joint_unit

    return float(norm.field_rms[name]) if name in problem.coefficient_fields else float(joint_unit(problem, norm, name))
