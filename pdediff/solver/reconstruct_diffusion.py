"""``reconstruct(method="diffusion")``: a joint diffusion model as the prior, the exact physics in
every draw.

A joint diffusion model is used as the prior of the source (or of log a), with
the solution channel never left to the network: at every sampler call, the Tweedie estimate
of the source is conditioned in closed form on the observations through the exact operator,
under N(D, C_t) with C_t the Tweedie covariance of the fitted Gaussian law,
``c sigma^2 / (c + sigma^2)`` per mode (the exact one for Gaussian data: weights derived, not
tuned), and the solution is the exact solve of the conditioned source
(:mod:`pdediff.maths.physics_posterior`).
"""

from __future__ import annotations

import json
import time

import numpy as np

from pdediff.physics.problems.base import boundary_mask
from pdediff.solver.observations import (HOLDOUT, check_method, dataset, gather, joint_unit_of, law_priors, lift, rms,
                                         ring_values, spectral, split_holdout, unknown_fields, warn_heldout, warn_prior)
from pdediff.solver.reconstruct_gaussian import gaussian_elliptic, gaussian_linear, run_gaussian


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
    from pdediff.maths.noise import generators

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
    priors = law_priors(problem, solver.dataset_card, n)
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
        x = randn((stop - start, len(joint), n, n), generators(seed, start, stop - start, 0), device, dtype)
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
            x, used = SAMPLERS[sampler](posterior, x, schedule, cb, generator=generators(seed, start, stop - start, 1))
        nfe = max(nfe, int(used))
        if spectral(problem) and control:
            # the same flow from the same noise with the exact denoiser of the fitted Gaussian law:
            # draws of the Gaussian posterior coupled to the network's, whose mean is known exactly
            gauss = linear_posterior(gaussian_denoiser(amplitude[which]), fields_of, model_of,
                                     linear_groups(rows_all, which), unit, solve_of(rows_all), covariance, sigma_data)
            with torch.no_grad():
                xg, _ = SAMPLERS[sampler](gauss, x_start, sigmas, cb, generator=generators(seed, start, stop - start, 1))
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
        heldout[b], counts[b] = rms(z), len(z)
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
