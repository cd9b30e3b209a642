"""``Solver.energy``: the energy of an energy-parameterised model at whole fields, a trust score."""

from __future__ import annotations

import numpy as np
import torch

from pdediff.learning.conditioning import encode, encode_solution
from pdediff.physics.problems import as_field
from pdediff.solver import options
from pdediff.solver.likelihood import whole_joint

def energy(model, sigma: float = 0.05, **fields):
    """The energy ``E(x, sigma, c)`` of an energy-parameterised model (``model.energy``) at
    whole fields, per sample: lower for fields the model finds likely (its score is
    ``-grad_x E``). A trust score for (condition, solution) pairs.

    Args:
        sigma: the noise level the energy is read at, in the model's units (small: near
            the data; the fields are not noised).
        **fields: a forward model's condition fields and its solution (``rho``, ``g``,
            ``phi``), or a joint model's joint fields and conditions; each (N, N) or (B, N, N).

    Returns:
        E per sample (float for one (N, N) sample, else (B,) float64), in nats of the
        noised density up to a constant that depends on sigma only.

    Raises:
        ValueError: a model without an energy; a bad sigma; a missing or ill-shaped field.
    """
    if not getattr(model.denoiser, "energy", False):
        raise ValueError("energy needs an energy-parameterised model (model.energy: true); this one outputs its "
                         "score directly")
    if not isinstance(sigma, (int, float, np.floating)) or isinstance(sigma, bool) or not 0 < sigma < np.inf:
        raise ValueError(f"sigma={sigma!r} is invalid; expected a finite noise level > 0")
    joint = tuple(model.config.model.joint)
    if joint:
        _, single, x, cond = whole_joint(model, joint, fields, "energy")
    else:
        name = model.problem.solution_field
        if fields.get(name) is None:
            raise ValueError(f"{name} is missing; the energy scores a pair: expected {name} with the conditions")
        solution = fields.pop(name)
        batch = options.read_fields(model, (), fields)
        first = batch[model.problem.condition_fields[0]]
        single = first.ndim == 2
        solution = as_field(name, solution, like=first, dtype=np.float64)
        batch = {k: (v[None] if single else v) for k, v in batch.items()}
        # float64 through the encoding: the per-sample scale keeps any magnitude in range
        t = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in batch.items()}
        cond, s = encode(model.problem, model.norm, t, model.config.model.operator_input)
        x = encode_solution(model.norm, torch.as_tensor(solution, dtype=torch.float64).reshape(cond.shape[0], *cond.shape[-2:]), s)
        x, cond = x.to(model.device, model.dtype), cond.to(model.device, model.dtype)
    with torch.no_grad():
        e = model.denoiser.energy_value(x, float(sigma), cond).double().cpu().numpy()
    return float(e[0]) if single else e
