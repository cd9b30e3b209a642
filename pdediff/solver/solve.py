"""``Solver.solve``: the solution of new condition fields by a forward model.

The stages, each a plain function of a loaded model (a :class:`pdediff.solver.Solver`, or
anything with its ``problem``, ``config``, ``norm``, ``card``, ``denoiser``, ``device`` and
``dtype``) and the fields: the fields are scaled into range (:func:`prescale`) and moved to the
network's grid (:func:`to_grid`), sampled (:func:`sample`), given their exact Dirichlet data
(:func:`impose_dirichlet`), polished, and their error estimated (:func:`estimate_error`).
"""

from __future__ import annotations

import functools
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from pdediff import AccuracyWarning
from pdediff.learning.conditioning import decode_fields, decode_solution, dirichlet_channels, encode
from pdediff.maths.guidance import classifier_free, residual_guided
from pdediff.maths.noise import generators, randn
from pdediff.maths.regrid import prolong, restrict, transfer_ring
from pdediff.maths.samplers import SAMPLERS, get_sigmas_karras
from pdediff.physics.problems.base import DIRICHLET, boundary_mask
from pdediff.solver import options

#: Without ``tol``, samples whose estimated relative error exceeds this raise an AccuracyWarning.
WARN_ABOVE = 0.05
#: The most iterations of polish ``solve(tol=...)`` spends on a sample.
TOL_MAX_ITERATIONS = 200
#: A model with a ``fallback`` hands it the samples whose estimated error exceeds this.
ROUTE_ABOVE = 0.01


@dataclass
class SolveInfo:
    """What a solve cost and how good it is, per sample where it varies.

    Attributes:
        nfe: denoiser evaluations per batch.
        seconds: wall time.
        polish_iterations: iterations of classical polish each sample took (``polish`` and
            those ``tol`` asked for).
        error_estimate: each sample's estimated relative L2 error against the exact discrete
            solution (``Problem.estimate_error``; empty for a problem without a residual or with
            ``estimate=False``).
        tol_met: with ``tol``, whether each sample's estimate reached it.
        models: for a model with a ``fallback`` (:data:`pdediff.models.FALLBACKS`), the model
            whose answer each sample got: the one of the two with the lower estimated error.
    """

    nfe: int = 0
    seconds: float = 0.0
    polish_iterations: list[int] = field(default_factory=list)
    error_estimate: list[float] = field(default_factory=list)
    tol_met: list[bool] = field(default_factory=list)
    models: list[str] = field(default_factory=list)


def solve(model, *fields, sampler: str | None = None, steps: int | None = None, seed: int = 0,
          batch_size: int = 64, guidance: float = 0.0, polish: int = 0, polish_method: str = "amg",
          sampler_options: dict | None = None, progress: bool = False,
          return_info: bool = False, any_grid: bool = False, resample: bool = False,
          tol: float | None = None, estimate: bool = True, cfg: float = 0.0, **named):
    """Solve for the fields of one sample (N, N) or a batch (B, N, N).

    Args:
        *fields, **named: the problem's condition fields in order or by name (e.g.
            ``rho`` and optional Dirichlet data ``g``, zero by default).
        sampler: a key of :data:`pdediff.maths.samplers.SAMPLERS` (``heun``: the probability-flow
            ODE, EDM Algorithm 1, ``2 * steps - 1`` denoiser evaluations; ``euler``: ``steps``).
            None: the model's own default (``config.model.sampler``), the setting measured
            best for it.
        steps: number of noise levels of the Karras schedule. None: ``config.model.steps``
            for the model's own sampler, and for another sampler the larger of that and the
            sampler's floor in :data:`SAMPLER_STEPS` (Heun at 2 levels is unstable). With
            ``tol`` and neither ``sampler`` nor ``steps`` given, the sampler's floor (one step,
            1 NFE, for Euler): the network's answer only starts the polish, and from the
            shipped models' one-step answers it takes at most 0.1 iterations more on average
            (``python -m benchmarks time_to_tolerance``) at half the network's cost.
        seed: noise seed; sample k of a call uses the stream (seed, k) whatever the batching.
        batch_size: samples per network batch.
        guidance: residual guidance on the denoised estimate, as a fraction in [0, 1] of the
            optimal steepest-descent step (0: off); see :mod:`pdediff.maths.guidance`.
        polish: iterations of a classical solver started from the network's answer (0: off).
        polish_method: the classical solver, a key of the problem's ``ITERATIVE``
            (e.g. ``"amg"``, conjugate gradients preconditioned by algebraic multigrid;
            ``"cg"``, plain conjugate gradients).
        sampler_options: extra keyword arguments for the sampler.
        progress: show a progress bar over batches.
        return_info: also return a :class:`SolveInfo`.
        any_grid: allow a grid other than the training one for a network that is not
            resolution-free (the U-Net); accuracy is then not what the model card says.
        resample: on a grid other than the training one, run the network on its training
            grid and interpolate (:mod:`pdediff.maths.regrid`): sources are low-pass restricted,
            Dirichlet data transferred edge by edge, and phi prolonged by a bicubic spline,
            then set to g on the ring. The solution operator smooths, so the coarse answer
            loses little; ``polish`` then acts on the requested grid.
        tol: polish every sample (its first iteration is the estimate) by one continued run of the
            problem's preconditioned iteration from the network's answer
            (``Problem.polish_to_tolerance``; e.g. conjugate gradients with a multigrid
            V-cycle), each sample stopped once an iteration changes it by <= tol of
            its size, which is one iteration past the answer whose error read tol: the
            returned ``info.error_estimate`` (that last change) is an upper estimate. At most
            TOL_MAX_ITERATIONS iterations; a sample that does not get there is reported in
            ``info.tol_met`` and by an AccuracyWarning. None: no such polish.
        estimate: estimate each sample's error (``info.error_estimate``) and warn
            (AccuracyWarning) when any exceeds 5 %; it costs one iteration of the problem's
            preconditioned iterative method. False: neither (``tol`` needs it).
        cfg: classifier-free guidance weight w, ``D = (1 + w) D(x | c) - w D(x | null)``,
            for a model trained with a null condition (``model.cond_dropout``); 0 (default)
            is the unguided answer exactly. Each step then costs two network evaluations.

    Returns:
        phi as a float64 NumPy array of the shape of the first field; exactly equal to the
        Dirichlet data on the boundary ring. Magnitudes: each sample is divided by its
        largest acting value before the network sees it, so any sample whose largest value
        lies in [MAGNITUDE_MIN, MAGNITUDE_MAX] of :mod:`pdediff.physics.problems.base` (1e-200 to
        1e200) is solved as well as one of unit size; outside it, a ValueError.
    """
    if model.config.model.joint:
        raise ValueError(f"this is a joint model of {model.config.model.joint} (sampled from observations); "
                         f"expected reconstruct(samples=K, **observed), e.g. reconstruct("
                         f"{model.problem.condition_fields[0]}=...) with a field fully observed")
    explicit = {"sampler": sampler, "steps": steps}
    sampler, steps = options.check_options(model, sampler, steps, seed, batch_size, guidance, polish, polish_method,
                                         sampler_options, any_grid, resample, progress=progress,
                                         return_info=return_info, estimate=estimate)
    tol = options.check_tol(model, tol, estimate)
    if tol is not None and explicit["steps"] is None and explicit["sampler"] is None:
        steps = min(steps, options.SAMPLER_STEPS.get(sampler, steps))  # the answer only starts the polish
    options.check_cfg(model, cfg)
    batch = options.read_fields(model, fields, named, any_grid, resample)
    first = model.problem.condition_fields[0]
    single = batch[first].ndim == 2
    batch = {k: (v[None] if single else v) for k, v in batch.items()}
    count, n = batch[first].shape[0], batch[first].shape[-1]
    info = SolveInfo()
    t0 = time.perf_counter()
    given = batch
    batch, magnitude = prescale(model, batch)
    m = model.grid_size if resample and model.grid_size and model.grid_size != n else n
    out = sample(model, to_grid(model, batch, m), sampler, steps, seed, batch_size, guidance,
                       sampler_options, progress, info, cfg)
    out = impose_dirichlet(model, prolong(out, n) if m != n and count else out, batch)
    known = None
    if getattr(model, "fallback", None) is not None and estimate and model.problem.offers_residual and not cfg \
            and count:
        if tol is None:
            out, known = route(model, out, batch, m, seed, batch_size, guidance, progress, info, explicit)
        else:  # the polish reaches tol from either answer; a second network costs more than it saves
            info.models = [model.name or "model"] * count
    if polish > 0 and count:
        out, iters = model.problem.iterative_solve(out, *(batch[k] for k in model.problem.condition_fields),
                                                  maxiter=polish, rtol=0.0, method=polish_method)
        info.polish_iterations = [int(i) for i in np.atleast_1d(iters)]
    if estimate and model.problem.offers_residual and count:
        out = estimate_error(model, out, batch, tol, info, known if polish <= 0 else None)
    out = impose_dirichlet(model, out * magnitude, given)  # the exact data, not a rescaled copy
    info.seconds = time.perf_counter() - t0
    if not np.all(np.isfinite(out)):  # the inputs were scaled into range: the sampler diverged
        raise ValueError(f"sampler={sampler!r} with steps={steps} diverged (a non-finite solution); expected a "
                         f"stable setting: more steps, or the model's own sampler {model.config.model.sampler!r}")
    phi = out[0] if single else out
    return (phi, info) if return_info else phi


def route(model, out: np.ndarray, batch: dict[str, np.ndarray], m: int, seed: int, batch_size: int,
          guidance: float, progress: bool, info: SolveInfo, explicit: dict):
    """Hand the samples whose estimated error exceeds :data:`ROUTE_ABOVE` to ``model.fallback``
    (a model of the same problem, run with its own default sampling unless the call named
    one) and keep, per sample, the answer with the lower estimate. Fills ``info.models``;
    returns the answers and their ``(estimate, improved)``."""
    fallback = model.fallback
    names = model.problem.condition_fields
    est, improved = model.problem.estimate_error(out, *(batch[k] for k in names))
    est = np.atleast_1d(est).astype(np.float64)
    chosen = np.array([model.name or "model"] * len(out), dtype=object)
    need = np.flatnonzero(est > ROUTE_ABOVE)
    if len(need):
        sub = {k: v[need] for k, v in batch.items()}
        sampler = explicit["sampler"] or fallback.config.model.sampler
        steps = explicit["steps"] or fallback.config.model.steps
        n = out.shape[-1]
        spent = SolveInfo()
        alt = sample(fallback, to_grid(fallback, sub, m), sampler, steps, seed, batch_size, guidance, None,
                     progress, spent)
        alt = impose_dirichlet(fallback, prolong(alt, n) if m != n else alt, sub)
        e_alt, i_alt = fallback.problem.estimate_error(alt, *(sub[k] for k in names))
        better = np.atleast_1d(e_alt) < est[need]
        take = need[better]
        out, improved = out.copy(), np.array(improved, copy=True)
        out[take], improved[take], est[take] = alt[better], np.asarray(i_alt)[better], np.atleast_1d(e_alt)[better]
        chosen[take] = fallback.name or "fallback"
        info.nfe += spent.nfe
    info.models = [str(c) for c in chosen]
    return out, (est, improved)


def estimate_error(model, out: np.ndarray, batch: dict[str, np.ndarray], tol: float | None,
              info: SolveInfo, known: tuple | None = None) -> np.ndarray:
    """Estimate each sample's error (or take ``known``, the ``(estimate, improved)`` of ``out``);
    with ``tol``, polish every sample to it instead (``Problem.polish_to_tolerance``, whose first
    iteration is the estimate). Fills ``info`` and warns; returns the answer (B, N, N)."""
    names = model.problem.condition_fields
    count = len(out)
    iters = np.array(info.polish_iterations or [0] * count, dtype=np.int64)
    if tol is not None:
        out, est, it = model.problem.polish_to_tolerance(out, *(batch[k] for k in names), tol=tol,
                                                         maxiter=TOL_MAX_ITERATIONS, method=model.problem.polish_method)
        est, iters = np.atleast_1d(est).astype(np.float64), iters + np.atleast_1d(it)
        need = np.flatnonzero(est > tol)
        info.tol_met = [bool(e <= tol) for e in est]
        if len(need):
            warnings.warn(f"tol={tol:g} was not reached for {len(need)} of {count} samples after "
                          f"{TOL_MAX_ITERATIONS} iterations of polish (estimates up to {est.max():.2e}); "
                          "see info.tol_met and info.error_estimate", AccuracyWarning, stacklevel=3)
    else:
        est, _ = known if known is not None else model.problem.estimate_error(out, *(batch[k] for k in names))
        est = np.atleast_1d(est).astype(np.float64)
        high = est > WARN_ABOVE
        if high.any():
            warnings.warn(f"{int(high.sum())} of {count} samples have an estimated error above "
                          f"{WARN_ABOVE:.0%} (largest {est.max():.1%}): the network is off its training "
                          "data; pass tol (e.g. tol=1e-4) to polish them, or see info.error_estimate",
                          AccuracyWarning, stacklevel=3)
    info.error_estimate = [float(e) for e in est]
    if tol is not None or info.polish_iterations:
        info.polish_iterations = [int(i) for i in iters]
    return out

def prescale(model, batch: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Zero each field where it does not act and divide each sample by its largest acting
    value (linear problems), so that float32 never under- or overflows; returns the scaled
    fields and the factors (B, 1, 1) to multiply the answer by."""
    n = batch[model.problem.condition_fields[0]].shape[-1]
    batch = {k: np.where(model.problem.support(k, n), v, 0.0) for k, v in batch.items()}
    count = len(batch[model.problem.condition_fields[0]])
    if count == 0:
        return batch, np.ones((count, 1, 1))
    coefficients = model.problem.coefficient_fields
    if coefficients:  # a / c and f / c have the same solution: coefficients of geometric mean 1
        c = np.exp(np.mean(np.concatenate([np.log(batch[k]).reshape(count, -1) for k in coefficients], 1), 1))
        batch = {k: (v if model.problem.field(k).role == DIRICHLET else v / c[:, None, None])
                 for k, v in batch.items()}
    return model.problem.scaled(batch)

def to_grid(model, batch: dict[str, np.ndarray], m: int) -> dict[str, np.ndarray]:
    """The fields on the network's m x m grid (restricted sources, transferred ring data)."""
    n = batch[model.problem.condition_fields[0]].shape[-1]
    if m == n or len(batch[model.problem.condition_fields[0]]) == 0:
        return batch
    return {k: (transfer_ring(v, m) if k == model.problem.dirichlet_field else restrict(v, m))
            for k, v in batch.items()}

def impose_dirichlet(model, out: np.ndarray, batch: dict[str, np.ndarray]) -> np.ndarray:
    if model.problem.dirichlet_field is not None:
        ring = boundary_mask(out.shape[-1])
        out[:, ring] = batch[model.problem.dirichlet_field][:, ring]
    return out

def sample(model, net_batch: dict[str, np.ndarray], sampler: str, steps: int, seed: int, batch_size: int,
            guidance: float, sampler_options: dict | None, progress: bool, info: SolveInfo,
            cfg: float = 0.0) -> np.ndarray:
    """Run the sampler batch by batch on the network's grid; the decoded solutions (B, m, m)."""
    first = model.problem.condition_fields[0]
    count, m = net_batch[first].shape[0], net_batch[first].shape[-1]
    denoiser = classifier_free(model.denoiser, cfg)
    if guidance > 0:
        _, mask_channel = dirichlet_channels(model.problem)
        denoiser = residual_guided(denoiser, functools.partial(normalised_residual, model), guidance, mask_channel)
    sigmas = get_sigmas_karras(steps, model.config.model.sigma_min, model.config.model.sigma_max,
                               device=model.device).to(model.dtype)
    step = SAMPLERS[sampler]
    out = np.empty((count, m, m))
    starts = range(0, count, batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="solve", unit="batch")
    for start in starts:
        stop = min(start + batch_size, count)
        chunk = {k: torch.as_tensor(v[start:stop], dtype=model.dtype, device=model.device)
                 for k, v in net_batch.items()}
        cond, s = encode(model.problem, model.norm, chunk, model.config.model.operator_input)
        cond = cond.contiguous(memory_format=model.memory_format)
        count_b = stop - start
        x = randn((count_b, 1, m, m), generators(seed, start, count_b, 0), model.device, model.dtype) * sigmas[0]
        x = x.contiguous(memory_format=model.memory_format)
        gens = generators(seed, start, count_b, 1)
        # inference mode where no gradient is taken (residual guidance differentiates)
        with torch.no_grad() if guidance > 0 or getattr(model.denoiser, "energy", False) else torch.inference_mode():
            x, nfe = step(denoiser, x, sigmas, cond, generator=gens, **(sampler_options or {}))
        info.nfe = max(info.nfe, int(nfe) * (2 if cfg else 1))  # network evaluations
        out[start:stop] = decode_solution(model.norm, x, s).double().cpu().numpy()
    return out

def normalised_residual(model, x0, cond):
    """PDE residual of a normalised denoised estimate, in units of the scaled condition."""
    fields = decode_fields(model.problem, model.norm, cond)
    phi = x0[:, 0] * model.norm.solution_rms
    return model.problem.residual_terms(phi, *(fields[k] for k in model.problem.condition_fields))


def solve_dataset(model, *fields, **kwargs):
    """Like :meth:`solve` for a batch, returned as an ``xarray.Dataset`` (sample, y, x)."""
    import xarray as xr

    names = model.problem.condition_fields
    given = {**dict(zip(names, fields)), **{k: kwargs.pop(k) for k in list(kwargs) if k in names}}
    phi = solve(model, **given, **kwargs)
    phi = phi[None] if phi.ndim == 2 else phi
    grid = model.problem.grid(phi.shape[-1])
    dims = ("sample", "y", "x")
    data = {k: (dims, np.broadcast_to(np.asarray(v, dtype=np.float64), phi.shape)) for k, v in given.items()
            if v is not None}
    data[model.problem.solution_field] = (dims, phi)
    return xr.Dataset(data, coords={"sample": np.arange(phi.shape[0]), "y": grid.y, "x": grid.x},
                      attrs={"problem": model.problem.name, "N": grid.n, "h": grid.h})
