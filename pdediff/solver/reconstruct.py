"""``Solver.reconstruct``: a joint model's fields from what is observed of them.

The methods with the exact physics in every draw, ``"gaussian"``
(:mod:`pdediff.solver.reconstruct_gaussian`) and ``"diffusion"``
(:mod:`pdediff.solver.reconstruct_diffusion`), and the older ones that steer the network's own
denoiser towards the observations (``"dps"``, ``"replace"``, their ``+residual`` forms, ``"none"``;
:mod:`pdediff.maths.observe`), which are here.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch

from pdediff import AccuracyWarning
from pdediff.learning.conditioning import (joint_conditions, joint_decode_field, joint_encode, joint_encode_field,
                                          joint_unit, observation_channels, unknown_nodes)
from pdediff.maths import observe
from pdediff.maths.guidance import classifier_free
from pdediff.maths.noise import generators, randn
from pdediff.maths.samplers import SAMPLERS, get_sigmas_karras
from pdediff.physics.problems.base import boundary_mask
from pdediff.solver import options
from pdediff.solver.observations import (DIFFUSION_STEPS, HOLDOUT, METHODS, elliptic, gather_joint, spectral,
                                         unknown_fields)
from pdediff.solver.options import check_flags, check_integers, check_samples_and_noise
from pdediff.solver.reconstruct_diffusion import run_diffusion
from pdediff.solver.reconstruct_gaussian import run_gaussian


def default_method(model) -> str:
    """The method ``reconstruct`` uses when none is named, the best measured
    (``python -m benchmarks.posterior``): ``"diffusion"`` for a joint model of a linear
    problem's source and solution, ``"gaussian"`` for a coefficient problem (there the
    diffusion prior of log a was measured no better than the Gauss-Newton baseline), ``"none"``
    for a model that takes the observations as inputs; a checkpoint may name its own
    (``config.notes["reconstruct_method"]``, among :data:`pdediff.solver.observations.METHODS`)."""
    named = model.config.notes.get("reconstruct_method")
    if named in METHODS:
        return named
    joint = sorted(model.config.model.joint)
    if model.config.model.observe or not joint:
        return "none" if model.config.model.observe else "dps"
    card = model.dataset_card
    if not (card.get("source") or card.get("coefficient")):  # no law to fit a Gaussian prior to
        return "dps"
    if spectral(model.problem) and joint == sorted(unknown_fields(model.problem)):
        return "diffusion"
    if elliptic(model.problem) or spectral(model.problem):
        return "gaussian"
    return "dps"


def reconstruct(model, samples: int = 8, seed: int = 0, *, method: str | None = None, sigma_y: float = 0.0,
                sampler: str | None = None, steps: int | None = None, batch_size: int = 64,
                progress: bool = False, return_samples: bool = False, cg_steps: int = 0, cfg: float = 0.0,
                holdout: float | None = None, **observed):
    """Sample a joint model's fields given what is observed of them (a joint model only).

    Args:
        samples: posterior draws per observed sample (K >= 1); the mean and spread are
            taken over them.
        seed: noise seed; draw k of sample b uses the stream (seed, b * K + k) whatever the
            batching.
        method: how observations enter besides the network's own inputs
            (:mod:`pdediff.maths.observe`): ``"none"`` (only as inputs of a model trained with
            them, ``model.observe``), ``"dps"`` (guidance through the denoiser with derived
            weights), ``"replace"`` (inpainting), ``"dps+residual"`` or
            ``"replace+residual"`` (followed by a line-search step on the PDE residual with
            the exact operator). None: the model's default, measured best (README,
            "Observations and inverse problems").
        sigma_y: standard deviation of the observation noise, in the fields' own units (of
            log a for a coefficient; 0: exact observations, imposed exactly on the returned
            draws).
        sampler, steps: the sampler and its noise levels (None: the model's own,
            ``config.model.sampler`` and ``config.model.steps``).
        batch_size: draws per network batch.
        progress: a progress bar over batches.
        return_samples: also return every draw (``<field>_samples``, dims sample, draw, y, x).
        cg_steps: with ``dps``, conjugate-gradient refinements of the observations'
            covariance by Tweedie's sigma^2 dD/dx (:func:`pdediff.maths.observe.observation_guided`;
            one backward pass each). Measured on 2 samples of each shipped joint model: with
            2 steps, from 30 % of a coefficient the solution's error went 10.6 % -> 3.8 %;
            from 3 % of a solution it diverged (17 % -> 5,500 %): the network's Jacobian is
            not always a covariance (README). Default 0.
        cfg: classifier-free guidance weight w (a model with ``model.cond_dropout``; the null
            condition drops the observations' channels and the source and coefficient
            conditions): ``D = (1 + w) D(x | c) - w D(x | null)``; 0 is the unguided answer.
        **observed: the fields, each (N, N) or (B, N, N), NaN at the nodes not observed. A
            joint field not given is wholly unknown; a condition field of the model (e.g.
            Dirichlet data ``g``) must be given whole or takes its default. Values where a
            field does not act (a source on the boundary ring) are ignored.

    Returns:
        An ``xarray.Dataset`` with, for every joint field, the posterior mean (``rho``,
        ``phi``, ...), the per-node standard deviation over the draws (``rho_std``, ...) and
        the observation mask of the given fields (``rho_observed``, ...); the condition
        fields; ``residual``, the PDE residual of the means (interior equations and the
        ring's data); ``residual_rel`` per sample. Dims (y, x) for one (N, N) sample, else
        (sample, y, x). ``attrs`` hold the method, nfe, seconds and settings.

    Raises:
        ValueError: a forward model; an observation of the wrong shape, with inf, or with
            no observed node; a sample with no observed node in any field; ``samples < 1``;
            a bad method, sigma_y, steps or batch_size.
    """
    import xarray as xr

    if method is None:
        method = default_method(model)
    if holdout is not None and (not isinstance(holdout, (int, float, np.integer, np.floating))
                                or isinstance(holdout, bool) or not 0 <= holdout < 1):
        raise ValueError(f"holdout={holdout!r} is invalid; expected a share in [0, 1)")
    if method in METHODS:
        check_integers(seed=(seed, 0))
        check_samples_and_noise(samples, sigma_y)
        check_flags(progress=progress, return_samples=return_samples)
        if method == "gaussian":
            return run_gaussian(model, samples, seed, float(sigma_y), return_samples, observed)
        check_integers(batch_size=(batch_size, 1))
        options.check_cfg(model, cfg)
        if cfg:
            raise ValueError(f"cfg={cfg!r} is not offered with method='diffusion' (the observations enter through "
                             "the exact operator, not the network); expected cfg=0")
        if steps is None and sampler is None:
            steps = DIFFUSION_STEPS
        sampler, steps = options.check_options(model, sampler, steps, seed, batch_size, 0.0, 0, "amg", None, False, False)
        return run_diffusion(model, samples, seed, float(sigma_y), return_samples, observed, sampler=sampler,
                                   steps=steps, batch_size=batch_size, progress=progress,
                                   holdout=HOLDOUT if holdout is None else float(holdout))
    if holdout:
        raise ValueError(f"holdout={holdout!r} is offered with method='gaussian' or 'diffusion' only; expected None")
    joint = tuple(model.config.model.joint)
    if not joint:
        raise ValueError(f"this model is a forward model of {model.problem.solution_field} given "
                         f"{list(model.problem.condition_fields)} (its posterior is a spike); reconstruct needs "
                         f"a joint model: expected one of the shipped '-joint' models (pdediff.models.MODELS) or a checkpoint "
                         f"with model.joint, or method='gaussian' (the Gaussian prior of the training law)")
    check_integers(batch_size=(batch_size, 1), seed=(seed, 0), cg_steps=(cg_steps, 0))
    check_samples_and_noise(samples, sigma_y)
    if method not in observe.METHODS:
        raise ValueError(f"method={method!r} is unknown; expected one of {list(METHODS + observe.METHODS)}")
    if method == "none" and not model.config.model.observe:
        raise ValueError("method='none' would ignore the observations: this joint model does not take them as "
                         "inputs (model.observe); expected 'dps', 'replace', 'dps+residual' or 'replace+residual'")
    check_flags(progress=progress, return_samples=return_samples)
    sampler, steps = options.check_options(model, sampler, steps, seed, batch_size, 0.0, 0, "amg", None, False, False)
    options.check_cfg(model, cfg)
    given, masks, single = gather_joint(model, joint, observed)
    count, n = next(iter(given.values())).shape[0], next(iter(given.values())).shape[-1]
    t0 = time.perf_counter()

    # the model's units: every field encoded with NaN filled (coefficients with 1: log 1 = 0)
    filled = {k: np.where(np.isfinite(v), v, 1.0 if (k in model.problem.coefficient_fields) else 0.0) for k, v in given.items()}
    conds = {k: torch.as_tensor(filled[k], dtype=model.dtype, device=model.device)
             for k in joint_conditions(model.problem, joint)}
    y = torch.zeros((count, len(joint), n, n), dtype=model.dtype, device=model.device)
    mask = torch.zeros_like(y)
    for i, k in enumerate(joint):
        if k in given:
            f = torch.as_tensor(filled[k], dtype=model.dtype, device=model.device)
            y[:, i] = joint_encode_field(model.problem, model.norm, k, f)
            mask[:, i] = torch.as_tensor(masks[k], dtype=model.dtype, device=model.device)
    warn_scale(model, y, mask, joint)
    # Dirichlet data are never joint fields (check_joint), so a problem with a ring has conditions
    _, cond = joint_encode(model.problem, model.norm, joint, conds) if conds else (None, None)
    if model.config.model.observe:  # the network takes the observations as inputs
        obs = observation_channels(y, mask)
        cond = obs if cond is None else torch.cat([cond, obs], dim=1)
    sigma_data = float(model.denoiser.sigma_data)
    # sigma_y in each channel's units: the same relative noise where the fields differ in scale
    unit = torch.tensor([joint_unit(model.problem, model.norm, k) for k in joint], dtype=model.dtype, device=model.device)
    sigmas = get_sigmas_karras(steps, model.config.model.sigma_min, model.config.model.sigma_max,
                               device=model.device).to(model.dtype)
    total = count * samples
    draws = np.empty((len(joint), total, n, n))
    starts = range(0, total, batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="reconstruct", unit="batch")
    nfe = 0
    for start in starts:
        stop = min(start + batch_size, total)
        which = torch.as_tensor(np.arange(start, stop) // samples, device=model.device)
        yb, mb = y[which], mask[which]
        cb = None if cond is None else cond[which]
        conds_b = {k: given[k][np.arange(start, stop) // samples] for k in joint_conditions(model.problem, joint)}
        posterior = guided_posterior(model, method, yb, mb, cb, sigma_data, float(sigma_y) / unit, joint, conds_b,
                                    int(cg_steps), cfg)
        x = randn((stop - start, len(joint), n, n), generators(seed, start, stop - start, 0), model.device,
                  model.dtype) * sigmas[0]
        with torch.no_grad():
            x, used = SAMPLERS[sampler](posterior, x, sigmas, cb, generator=generators(seed, start, stop - start, 1))
        nfe = max(nfe, int(used) * (2 if cfg else 1))
        for i, k in enumerate(joint):
            draws[i, start:stop] = joint_decode_field(model.problem, model.norm, k, x[:, i]).double().cpu().numpy()
    draws = draws.reshape(len(joint), count, samples, n, n)
    out = {}
    for i, k in enumerate(joint):
        d = draws[i]
        if k in given and sigma_y == 0:  # exact observations are the values
            d = np.where(masks[k][:, None], given[k][:, None], d)
        d = impose_ring(model, k, d, given)
        if not np.all(np.isfinite(d)):
            raise ValueError(f"method={method!r} with sampler={sampler!r} and steps={steps} diverged (a non-finite "
                             f"{k}); expected a stable setting: more steps, or the model's own sampler")
        out[k] = d
    seconds = time.perf_counter() - t0
    return posterior_dataset(model, joint, out, given, masks, single, samples, return_samples,
                                   dict(method=method, sigma_y=float(sigma_y), sampler=sampler, steps=int(steps),
                                        nfe=nfe, samples=int(samples), seconds=seconds))


def warn_scale(model, y: torch.Tensor, mask: torch.Tensor, joint) -> None:
    """A joint model knows fields of its training law's size (each field has one scale; it is
    not equivariant like the forward models): warn when observations are far from it."""
    for i, k in enumerate(joint):
        seen = mask[:, i] > 0
        if seen.any():
            rms = float(y[:, i][seen].pow(2).mean().sqrt())
            # the shipped joint models' training samples span 0.004-3.2 and 0.01-2 times it
            if not 1e-3 <= rms <= 10:
                warnings.warn(f"the observations of {k} have {rms:.3g} times the size of the training data's "
                              f"{k} (RMS in the model's units); a joint model learnt fields of its training law's "
                              "size: rescale the fields (the PDE is linear) and the answer", AccuracyWarning,
                              stacklevel=3)

def wholly_observed(model, mask: torch.Tensor, joint) -> torch.Tensor:
    """(B, C, 1, 1): 1 where a sample's field is observed at every node where it is unknown."""
    n = mask.shape[-1]
    out = torch.zeros(mask.shape[:2] + (1, 1), dtype=mask.dtype, device=mask.device)
    for i, k in enumerate(joint):
        acts = torch.as_tensor(unknown_nodes(model.problem, k, n), device=mask.device)
        out[:, i, 0, 0] = (mask[:, i][:, acts] > 0).all(dim=1).to(mask.dtype)
    return out


def guided_posterior(model, method: str, y, mask, cond, sigma_data: float, sigma_y: torch.Tensor, joint, conds=None,
               cg_steps: int = 0, cfg: float = 0.0):
    """The posterior denoiser of ``method`` (see :mod:`pdediff.maths.observe`)."""

    sy = sigma_y.view(1, -1, 1, 1)
    base, _, extra = method.partition("+")
    denoiser = classifier_free(model.denoiser, cfg)
    if base == "none":
        posterior = denoiser
    else:
        # a field observed at every node where it acts: replacement is its exact posterior
        # denoiser given D (its value; the others respond through the network's inputs).
        # Guidance through the network with thousands of correlated observations counted
        # as independent overshoots (full rho: phi 92 % off)
        whole = wholly_observed(model, mask, joint) if base == "dps" else torch.ones_like(mask[:, :, :1, :1])
        posterior = observe.replacement(denoiser, y, mask * whole, sigma_data, sy)
        if base == "dps" and bool((mask * (1 - whole)).any()):
            posterior = observe.observation_guided(posterior, y, mask * (1 - whole), sigma_data, sy, cg_steps)
    if extra == "residual" and model.problem.offers_residual:
        # only where the solution's data (the other joint fields) are wholly observed: there
        # the PDE fixes the solution. Elsewhere the step ties it to a guessed source and
        # undoes the observations' pull (3 % of phi: 24 % -> 41 % error of phi)
        whole = wholly_observed(model, mask, joint)[:, :, 0, 0] > 0
        others = [i for i, k in enumerate(joint) if k != model.problem.solution_field]
        known = whole[:, others].all(dim=1).cpu().numpy()
        if known.any():
            posterior = solver_step(model, posterior, conds, joint, known)
    return posterior

def solver_step(model, denoiser, conds: dict, joint, known: np.ndarray):
    """Follow each denoised estimate of the samples ``known`` (B,) by one iteration of the
    problem's preconditioned iterative method (``Problem.estimate_step``, e.g. a conjugate-gradient step
    preconditioned by a V-cycle) on the solution field, with the other
    fields as denoised (sources, coefficients) or given (conditions): PDE-residual guidance
    with the exact operator, which contracts the solution's error given the others by the
    method's factor at every call."""
    k = joint.index(model.problem.solution_field)

    method = getattr(model.problem, "guidance_method", None) or model.problem.estimate_method
    sigma_data = float(model.denoiser.sigma_data)

    def posterior(x, sigma, cond):
        d = denoiser(x, sigma, cond).detach()
        # above sigma_data the estimate is a blurred mean of many fields: solving the PDE on
        # it says nothing, and its coefficients may be extreme (exp of a noisy channel)
        if float(torch.as_tensor(sigma).max()) > sigma_data:
            return d
        fields = {name: joint_decode_field(model.problem, model.norm, name, d[:, i]).double().cpu().numpy()
                  for i, name in enumerate(joint)}
        fields.update(conds)
        solution = fields[model.problem.solution_field]
        # at high noise a denoised coefficient exp(...) may overflow: no step for those samples
        ok = known & np.all([np.isfinite(v).all(axis=(-2, -1)) for v in fields.values()], axis=0)
        if not ok.any():
            return d
        improved = solution.copy()
        with np.errstate(all="ignore"):
            improved[ok] = model.problem.estimate_step(
                solution[ok], *(fields[n][ok] for n in model.problem.condition_fields), method=method)
        if not np.all(np.isfinite(improved)):
            return d
        step = joint_encode_field(model.problem, model.norm, model.problem.solution_field,
                                  torch.as_tensor(improved, dtype=d.dtype, device=d.device))
        return torch.cat([d[:, :k], step[:, None], d[:, k + 1:]], dim=1)

    return posterior

def impose_ring(model, name: str, d: np.ndarray, given: dict) -> np.ndarray:
    """Dirichlet data on the solution's ring and zero sources there, exactly (float64)."""
    g = model.problem.dirichlet_field
    if g is None:
        return d
    ring = boundary_mask(d.shape[-1])
    if name == model.problem.solution_field:
        return np.where(ring, given[g][:, None], d)
    if name in model.problem.condition_fields and model.problem.field(name).role != "coefficient":
        return np.where(ring, 0.0, d)
    return d

def posterior_dataset(model, joint, draws: dict, given: dict, masks: dict, single: bool, samples: int,
                       return_samples: bool, attrs: dict):
    import xarray as xr

    n = next(iter(draws.values())).shape[-1]
    grid = model.problem.grid(n)
    dims = ("sample", "y", "x")
    data = {}
    means = {}
    for k in joint:
        means[k] = draws[k].mean(axis=1)
        data[k] = (dims, means[k])
        data[f"{k}_std"] = (dims, draws[k].std(axis=1, ddof=1) if samples > 1 else np.zeros_like(means[k]))
        if k in masks:
            data[f"{k}_observed"] = (dims, masks[k])
        if return_samples:
            data[f"{k}_samples"] = (("sample", "draw", "y", "x"), draws[k])
    for k in model.problem.condition_fields:
        if k not in joint:
            data[k] = (dims, given[k])
    fields = [means[k] if k in joint else given[k] for k in model.problem.condition_fields]
    solution = means[model.problem.solution_field]
    if model.problem.offers_residual:
        data["residual"] = (dims, model.problem.residual(solution, *fields))
        data["residual_rel"] = (("sample",), np.atleast_1d(model.problem.relative_residual(solution, *fields)))
    ds = xr.Dataset(data, coords={"sample": np.arange(solution.shape[0]), "y": grid.y, "x": grid.x},
                    attrs={"problem": model.problem.name, "N": grid.n, "h": grid.h, "joint": list(joint), **attrs})
    return ds.isel(sample=0) if single else ds
