"""What reconstruct reads and returns: observed fields gathered and checked, the training law's
Gaussian prior, the held-out check and its warnings, the posterior dataset.

Shared by the methods of :func:`pdediff.solver.reconstruct.reconstruct`: ``"gaussian"``
(:mod:`pdediff.solver.reconstruct_gaussian`), ``"diffusion"``
(:mod:`pdediff.solver.reconstruct_diffusion`) and the network-guided ones.
"""

from __future__ import annotations

import functools
import json
import time
import warnings

import numpy as np

from pdediff import AccuracyWarning
from pdediff.maths.gaussian import DenseGaussian, SpectralGaussian
from pdediff.learning.conditioning import joint_conditions, unknown_nodes
from pdediff.physics.problems.base import SOURCE, Grid, boundary_mask

#: The methods with the exact physics in every draw (``reconstruct`` keeps the network-guided ones beside them).
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


def beyond_threshold(z: np.ndarray, counts: np.ndarray) -> tuple[list[int], int | None]:
    """The samples whose RMS ``z`` over ``counts`` residuals lies beyond :func:`flag_threshold`,
    and the worst of them (None when none)."""
    flagged = [b for b in range(len(z)) if counts[b] > 0 and z[b] > flag_threshold(int(counts[b]))]
    return flagged, (max(flagged, key=lambda b: z[b]) if flagged else None)


def warn_heldout(rms: np.ndarray, counts: np.ndarray, pde: np.ndarray | None, method: str) -> None:
    """An AccuracyWarning naming how many samples the held-out residuals or the PDE residual
    say are off, and why."""
    flagged, worst = beyond_threshold(rms, counts)
    if flagged:
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
    flagged, worst = beyond_threshold(misfit, counts)
    if flagged:
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


def rms(z: np.ndarray) -> float:
    return float(np.sqrt(np.mean(z**2))) if len(z) else 0.0


def ring_values(g: np.ndarray, n: int) -> np.ndarray:
    from pdediff.maths.kriging import ring_nodes

    return g.reshape(-1)[ring_nodes(n)]


def joint_unit_of(problem, norm, name: str) -> float:
    """A joint field's scale: sigma in the network's units times it is sigma in the field's (of
    log a for a coefficient)."""
    from pdediff.learning.conditioning import joint_unit

    return float(norm.field_rms[name]) if name in problem.coefficient_fields else float(joint_unit(problem, norm, name))


def gather_joint(model, joint, observed: dict):
    """Check and gather ``reconstruct``'s fields: ``(given, masks, single)`` with every given
    field as (B, N, N) float64 (NaN where not observed; conditions whole, defaults filled),
    the observed nodes of each joint field where it acts, and whether one (N, N) sample came."""
    arrays, shape, first = read_arrays(model.problem, observed)
    if not any(k in arrays for k in joint):
        raise ValueError(f"nothing of {list(joint)} is observed; expected at least one of them, NaN where "
                         "not observed")
    single = len(shape) == 2
    arrays = {k: (v[None] if single else v) for k, v in arrays.items()}
    count, n = arrays[first].shape[0], shape[-1]
    if count == 0:
        raise ValueError(f"{first} has shape {shape}: an empty batch; expected at least one sample")
    trained = model.grid_size
    if trained and n != trained:
        raise ValueError(f"{first} has shape {shape}; this joint model was trained on ({trained}, {trained}) "
                         f"node grids; expected that grid")
    model.problem.check_grid(n)
    for k in joint_conditions(model.problem, joint):
        if k not in arrays:
            default = model.problem.field(k).default
            if default is None:
                raise ValueError(f"{k} is a condition of this joint model and is required; expected an array of "
                                 f"shape {shape} with no NaN")
            arrays[k] = np.full((count, n, n), float(default))
        elif np.isnan(arrays[k]).any():
            raise ValueError(f"{k} is a condition of this joint model (not one of {list(joint)}); expected it whole, "
                             f"with no NaN")
    masks = {}
    seen = np.zeros(count, dtype=bool)
    for k in joint:
        if k not in arrays:
            continue
        m = np.isfinite(arrays[k]) & unknown_nodes(model.problem, k, n)
        if not m.any():
            raise ValueError(f"{k} has no observed node where it acts (all NaN); expected at least one finite "
                             f"value, or leave {k} out to treat it as unknown")
        if (k in model.problem.coefficient_fields) and not (arrays[k][m] > 0).all():
            raise ValueError(f"{k} has observed values <= 0 (min {arrays[k][m].min()!r}); expected {k} > 0")
        masks[k] = m
        seen |= m.reshape(count, -1).any(axis=1)
    if not seen.all():
        b = int(np.flatnonzero(~seen)[0])
        raise ValueError(f"sample {b} of the batch has no observed node in any of {list(masks)} (all NaN); "
                         "expected at least one observed node in every sample")
    return arrays, masks, single
