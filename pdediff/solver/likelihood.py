"""``Solver.log_likelihood``: the log-density of whole fields under a joint model, through the
probability-flow ODE (:mod:`pdediff.maths.likelihood`).
"""

from __future__ import annotations

import numpy as np
import torch

from pdediff.learning.conditioning import joint_encode, joint_unit, observation_channels, unknown_nodes
from pdediff.maths import likelihood
from pdediff.maths.noise import generators
from pdediff.physics.problems.base import boundary_mask
from pdediff.solver.observations import gather_joint
from pdediff.solver.options import check_flags, check_integers

def log_likelihood(model, probes: int = 1, seed: int = 0, *, steps: int = 32, divergence: str = "hutchinson",
                   probe: str = "rademacher", bits: bool = False, batch_size: int = 16,
                   progress: bool = False, **fields):
    """The log-density of whole fields under a joint model, through the probability-flow ODE
    (:mod:`pdediff.maths.likelihood`): a trust score, higher for fields like the training data.

    Args:
        probes: Hutchinson-Skilling probe vectors per sample (``divergence="hutchinson"``);
            the estimate is unbiased, its spread falls as 1 / sqrt(probes).
        seed: the probes' seed; sample b uses the stream (seed, b) whatever the batching.
        steps: Runge-Kutta intervals in log sigma from ``model.sigma_min`` to
            ``model.sigma_max`` (4 network evaluations each, plus one backward pass per probe).
        divergence: ``"hutchinson"`` or ``"exact"`` (one backward pass per unknown node and
            field: small grids only).
        probe: ``"rademacher"`` (the smaller spread) or ``"gaussian"``.
        bits: return bits per dimension, ``-log2 p / d`` over the d unknown nodes, instead of nats.
        batch_size: samples per network batch.
        progress: a progress bar over batches.
        **fields: every joint field of the model (``rho`` and ``phi``, ``a`` and ``u``), each
            (N, N) or (B, N, N) with no NaN; a condition field (Dirichlet data ``g``) whole,
            or its default.

    Returns:
        log p per sample in nats (float for one (N, N) sample, else (B,) float64), the
        density of the joint fields given the conditions in the fields' own units (the
        normalisation's Jacobian, log a for a coefficient, is included); only the nodes
        where each field is unknown count (a solution's ring holds the Dirichlet data, a
        source's ring is zero). With ``bits``: bits per dimension.

    Raises:
        ValueError: a forward model (its posterior is a spike); ``probes < 1``; a missing
            joint field, a field of the wrong shape or with NaN; bad options.
    """
    joint = tuple(model.config.model.joint)
    if not joint:
        name = f"{model.problem.name}-joint"
        from pdediff.models import MODELS

        hint = f"load_solver({name!r})" if name in MODELS else "a model trained with model.joint"
        raise ValueError(f"log_likelihood needs a joint model; this forward model's density of "
                         f"{model.problem.solution_field} given {list(model.problem.condition_fields)} is a spike "
                         f"(the PDE fixes the solution), so it has no finite log-density: expected {hint}")
    check_integers(probes=(probes, 1), steps=(steps, 1), seed=(seed, 0), batch_size=(batch_size, 1))
    if divergence not in likelihood.DIVERGENCES:
        raise ValueError(f"divergence={divergence!r} is unknown; expected one of {list(likelihood.DIVERGENCES)}")
    if probe not in likelihood.PROBES:
        raise ValueError(f"probe={probe!r} is unknown; expected one of {list(likelihood.PROBES)}")
    check_flags(bits=bits, progress=progress)
    given, single, x0, cond = whole_joint(model, joint, fields, "log_likelihood")
    count, n = x0.shape[0], x0.shape[-1]
    free = torch.stack([torch.as_tensor(unknown_nodes(model.problem, k, n)) for k in joint]).to(model.device, model.dtype)[None]
    dims = float(free.sum())
    # the Jacobian of the encoding, per sample: log p(fields) = log p(x) + log |dx / dfields|
    jacobian = np.zeros(count)
    for i, k in enumerate(joint):
        acts = free[0, i].cpu().numpy() > 0
        jacobian -= acts.sum() * np.log(joint_unit(model.problem, model.norm, k))
        if (k in model.problem.coefficient_fields):  # x = (log a - offset) / scale
            jacobian -= np.log(given[k][:, acts]).sum(axis=1)
    sigma_data = float(model.denoiser.sigma_data)
    m = model.config.model
    sigmas = likelihood.log_sigmas(int(steps) + 1, m.sigma_min, m.sigma_max, dtype=model.dtype)
    prior_std = float(np.hypot(m.sigma_max, sigma_data))
    out = np.empty(count)
    starts = range(0, count, batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="log_likelihood", unit="batch")
    for start in starts:
        stop = min(start + batch_size, count)
        xb = x0[start:stop].to(model.device)
        cb = None if cond is None else cond[start:stop].to(model.device)
        v = None
        if divergence == "hutchinson":
            v = likelihood.draw_probes(xb.shape, probes, probe, generators(seed, start, stop - start, 0),
                                       device=model.device, dtype=model.dtype)
        logp, _ = likelihood.ode_log_likelihood(model.denoiser, xb, cb, sigmas, free, prior_std, v)
        out[start:stop] = logp.cpu().numpy()
    out = out + jacobian
    if bits:
        out = -out / (dims * np.log(2.0))
    return float(out[0]) if single else out

def whole_joint(model, joint, fields: dict, caller: str):
    """Check whole joint fields and encode them: ``(given, single, x0, cond)``, the
    condition with empty observation channels for a ``model.observe`` network (the prior)
    and the solution's ring taken from the Dirichlet data (where it is not a coordinate)."""
    missing = [k for k in joint if fields.get(k) is None]
    if missing:
        raise ValueError(f"{missing} are missing; {caller} scores whole fields: expected every one of "
                         f"{list(joint)} as an (N, N) or (B, N, N) array")
    given, masks, single = gather_joint(model, joint, fields)
    n = given[joint[0]].shape[-1]
    for k in joint:
        if not masks[k][:, unknown_nodes(model.problem, k, n)].all():
            raise ValueError(f"{k} contains NaN; {caller} scores whole fields: expected finite values at "
                             "every node")
    g = model.problem.dirichlet_field
    if g is not None:  # the solution's ring is the data, a condition
        k = model.problem.solution_field
        given = {**given, k: np.where(boundary_mask(n), given[g], given[k])}
    t = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in given.items()}
    x0, cond = joint_encode(model.problem, model.norm, joint, t)
    x0 = x0.to(model.dtype).to(model.device)
    cond = None if cond is None else cond.to(model.dtype).to(model.device)
    if model.config.model.observe:  # the prior: nothing observed
        obs = observation_channels(torch.zeros_like(x0), torch.zeros_like(x0))
        cond = obs if cond is None else torch.cat([cond, obs], dim=1)
    return given, single, x0, cond
