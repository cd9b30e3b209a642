"""From a problem's named fields to the network's input channels, and back.

The problem declares its condition fields and their roles (source, coefficient, Dirichlet
data); this module turns them into condition channels (plus a boundary mask when the problem has
Dirichlet data) and normalises each sample by its own scales. Coefficients and sources are
first divided by the coefficients' geometric mean, which leaves the solution unchanged. For a
linear problem the solution is then linear in the sources and Dirichlet data, so dividing them
by one signed scale ``s`` and multiplying the answer by ``s`` makes the solver exactly
equivariant: ``solve(c * fields) = c * solve(fields)`` for any ``c != 0`` (and, with
coefficients, ``solve(c a, f, g) = solve(a, f / c, g)``); all-zero sources and data give 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from pdediff.physics.problems import Problem
from pdediff.physics.problems.base import COEFFICIENT, DIRICHLET, SOURCE, boundary_mask

MASK = "mask"


@dataclass
class Normalisation:
    """Dataset statistics that put a sample's fields and solution at unit scale.

    Attributes:
        field_rms: RMS of each condition field over the nodes where it acts (Dirichlet data on
            the boundary ring, the other fields in the interior), over samples where it is nonzero.
        solution_rms: RMS of the solution divided by the per-sample scale ``s``.
        sigma_data: standard deviation of the normalised solution (EDM's sigma_data).
    """

    field_rms: dict[str, float]
    solution_rms: float
    sigma_data: float
    #: joint models: the shift of each coefficient field's logarithm (its training mean)
    offsets: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        if not d["offsets"]:  # forward models: the metadata they always had
            del d["offsets"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Normalisation":
        """Rebuild from :meth:`to_dict`'s output (e.g. a checkpoint's metadata), checking every value.

        Raises:
            ValueError: naming the key and value when a key is missing or a scale is not a
                positive finite number (``field_rms`` must also be a non-empty mapping).
        """
        if not isinstance(d, dict):
            raise ValueError(f"normalisation={d!r} is invalid; expected a mapping with field_rms, solution_rms "
                             "and sigma_data")
        missing = [k for k in ("field_rms", "solution_rms", "sigma_data") if k not in d]
        if missing:
            raise ValueError(f"normalisation lacks {missing}; expected field_rms, solution_rms and sigma_data")
        rms = d["field_rms"]
        if not isinstance(rms, dict) or not rms or not all(isinstance(k, str) for k in rms):
            raise ValueError(f"normalisation.field_rms={rms!r} is invalid; expected a non-empty mapping from "
                             "condition field names to positive numbers")

        def scale(key: str, value) -> float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < np.inf:
                raise ValueError(f"normalisation.{key}={value!r} is invalid; expected a finite number > 0")
            return float(value)

        offsets = d.get("offsets") or {}
        if not isinstance(offsets, dict) or not all(
                isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < np.inf
                for k, v in offsets.items()):
            raise ValueError(f"normalisation.offsets={offsets!r} is invalid; expected a mapping from field names "
                             "to finite numbers")
        return cls(field_rms={k: scale(f"field_rms.{k}", v) for k, v in rms.items()},
                   solution_rms=scale("solution_rms", d["solution_rms"]),
                   sigma_data=scale("sigma_data", d["sigma_data"]), offsets={k: float(v) for k, v in offsets.items()})

    def validate(self, problem: Problem) -> "Normalisation":
        """Check that every condition field of ``problem`` has a scale in ``field_rms``.

        Raises:
            ValueError: naming the fields that are missing.
        """
        missing = [k for k in problem.condition_fields if k not in self.field_rms]
        if missing:
            raise ValueError(f"normalisation.field_rms={self.field_rms!r} lacks {missing}; expected a scale "
                             f"for every condition field of problem {problem.name!r} {list(problem.condition_fields)}")
        return self


#: The name of the operator-guess channel (``model.operator_input``).
GUESS = "guess"


def channel_names(problem: Problem, operator_input: bool = False) -> list[str]:
    """Names of the condition channels, in order (the operator guess last, with ``operator_input``)."""
    names = list(problem.condition_fields)
    if problem.dirichlet_field is not None:
        names.append(MASK)
    if operator_input:
        names.append(GUESS)
    return names


def dirichlet_channels(problem: Problem) -> tuple[int | None, int | None]:
    """Indices of the Dirichlet-data channel and of the mask channel (None without them)."""
    if problem.dirichlet_field is None:
        return None, None
    names = channel_names(problem)
    return names.index(problem.dirichlet_field), names.index(MASK)


def _support(problem: Problem, name: str, n: int, device) -> torch.Tensor:
    """1 where field ``name`` acts (ring for Dirichlet data, interior for a source, all nodes
    for a coefficient)."""
    return torch.tensor(problem.support(name, n), device=device)


def _scaled_fields(problem: Problem) -> list[str]:
    """The fields the solution is homogeneous of degree one in (sources and Dirichlet data)."""
    return [k for k in problem.condition_fields if problem.field(k).role != COEFFICIENT]


def _mean_square(problem, name, f: torch.Tensor) -> torch.Tensor:
    support = _support(problem, name, f.shape[-1], f.device).to(f.dtype)
    return (f**2 * support).sum(dim=(-2, -1)) / support.sum()


def _sign_weight(n: int, device, dtype) -> torch.Tensor:
    # A fixed positive weight: its inner product with the fields flips sign with them, which
    # fixes the sign of the scale so that negative multiples are equivariant too.
    t = torch.linspace(0.0, 1.0, n, device=device, dtype=dtype)
    return 1.0 + t[None, :] + 2.0 * t[:, None]


def coefficient_scale(problem: Problem, fields: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """Geometric mean of each sample's coefficient fields (B,), or None without coefficients.

    Dividing the coefficients and the sources by it leaves the solution unchanged (the operator
    is linear in the coefficients and the equation is linear in the sources), so the network
    sees coefficients of unit geometric mean whatever their units.
    """
    names = problem.coefficient_fields
    if not names:
        return None
    logs = torch.cat([fields[k].log().flatten(1) for k in names], dim=1)
    return logs.mean(dim=1).exp()


def normalise_coefficients(problem: Problem, fields: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Coefficients and sources divided by :func:`coefficient_scale` (the solution is unchanged)."""
    c = coefficient_scale(problem, fields)
    if c is None:
        return fields
    div = c[:, None, None]
    divided = [k for k in problem.condition_fields if problem.field(k).role != DIRICHLET]
    return {k: (v / div if k in divided else v) for k, v in fields.items()}


def sample_scale(problem: Problem, norm: Normalisation, fields: dict[str, torch.Tensor]) -> torch.Tensor:
    """Signed per-sample scale ``s`` (shape (B,)), homogeneous of degree one in the source and
    Dirichlet fields (coefficient fields do not enter; see :func:`normalise_coefficients`).

    The sign is that of a fixed positive weighting of the fields, or, where that vanishes, of
    the first nonzero value: either flips with the fields, so ``s(c f) = c s(f)`` for any c.
    """
    names = _scaled_fields(problem)
    ref = fields[names[0]]
    if not problem.linear:
        return torch.ones(ref.shape[0], device=ref.device, dtype=ref.dtype)
    n = ref.shape[-1]
    ms = sum(_mean_square(problem, k, fields[k]) / norm.field_rms[k] ** 2 for k in names)
    w = _sign_weight(n, ref.device, ref.dtype)
    acting = [(fields[k] * _support(problem, k, n, ref.device)).flatten(1) for k in names]
    t = sum((f * w.flatten()).sum(dim=1) for f in acting)
    flat = torch.cat(acting, dim=1)
    first = flat.gather(1, (flat != 0).to(torch.uint8).argmax(dim=1, keepdim=True))[:, 0]
    sign = torch.where(t != 0, t.sign(), torch.where(first < 0, -1.0, 1.0)).to(ref.dtype)
    return sign * ms.sqrt()


def _safe(s: torch.Tensor) -> torch.Tensor:
    return torch.where(s == 0, torch.ones_like(s), s)


def encode(problem: Problem, norm: Normalisation, fields: dict[str, torch.Tensor], operator_input: bool = False):
    """Condition channels (B, C, N, N) and per-sample scales (B,) for fields of shape (B, N, N).

    Each field is zeroed where it does not act; Dirichlet data are put in the units of the
    normalised solution so that the denoiser can copy them onto the boundary ring; coefficients
    enter as the logarithm of their ratio to the sample's geometric mean. With
    ``operator_input``, the last channel is the problem's operator guess
    (:meth:`~pdediff.physics.problems.base.Problem.operator_guess`, one V-cycle step from zero)
    in the units of the normalised solution: the network learns a correction to it.
    """
    fields = normalise_coefficients(problem, fields)
    s = sample_scale(problem, norm, fields)
    div = _safe(s)[:, None, None]
    n = fields[problem.condition_fields[0]].shape[-1]
    channels = []
    for name in problem.condition_fields:
        if problem.field(name).role == COEFFICIENT:
            channels.append(fields[name].log())
            continue
        f = fields[name] * _support(problem, name, n, fields[name].device)
        unit = _unit(problem, norm, name)
        channels.append(f / (div * unit) if problem.linear else f / unit)
    if problem.dirichlet_field is not None:
        ring = torch.tensor(boundary_mask(n), device=channels[0].device, dtype=channels[0].dtype)
        channels.append(ring.expand_as(channels[0]))
    if operator_input:
        given = [fields[k].detach().double().cpu().numpy() for k in problem.condition_fields]
        guess = torch.as_tensor(problem.operator_guess(*given), device=channels[0].device, dtype=channels[0].dtype)
        channels.append(encode_solution(norm, guess, s)[:, 0])
    return torch.stack(channels, dim=1), s


def decode_fields(problem: Problem, norm: Normalisation, cond: torch.Tensor) -> dict[str, torch.Tensor]:
    """The condition fields of ``cond`` in the units of a sample with scale 1 and coefficients of
    geometric mean 1 (inverse of :func:`encode` up to those two scales; the solution of the
    decoded fields is the normalised solution times ``norm.solution_rms``)."""
    return {name: (cond[:, i].exp() if problem.field(name).role == COEFFICIENT else cond[:, i] * _unit(problem, norm, name))
            for i, name in enumerate(problem.condition_fields)}


def _unit(problem: Problem, norm: Normalisation, name: str) -> float:
    # Dirichlet data share the solution's units, so the denoiser can copy them onto the ring
    return norm.solution_rms if name == problem.dirichlet_field else norm.field_rms[name]


def encode_solution(norm: Normalisation, solution: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Normalised solution (B, 1, N, N): the diffusion's data x0."""
    return (solution / (_safe(s)[:, None, None] * norm.solution_rms))[:, None]


def decode_solution(norm: Normalisation, x0: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`encode_solution`: (B, 1, N, N) -> (B, N, N); zero where ``s == 0``."""
    return x0[:, 0] * (s[:, None, None] * norm.solution_rms)


def fit_normalisation(problem: Problem, arrays: dict[str, np.ndarray]) -> Normalisation:
    """Measure :class:`Normalisation` on training arrays (each (B, N, N))."""
    t = {k: torch.as_tensor(np.asarray(v), dtype=torch.float64) for k, v in arrays.items()}
    t = {**t, **normalise_coefficients(problem, {k: t[k] for k in problem.condition_fields})}
    field_rms = {}
    for name in problem.condition_fields:
        if problem.field(name).role == COEFFICIENT:  # enters as log(a / geometric mean): unit 1
            field_rms[name] = float(t[name].log().pow(2).mean().sqrt()) or 1.0
            continue
        ms = _mean_square(problem, name, t[name])
        nz = ms[ms > 0]
        field_rms[name] = float(nz.mean().sqrt()) if nz.numel() else 1.0
    if not problem.linear:
        sol = t[problem.solution_field]
        rms = float(sol.pow(2).mean().sqrt()) or 1.0
        return Normalisation(field_rms, rms, float((sol / rms).std()))
    probe = Normalisation(field_rms, 1.0, 1.0)
    s = sample_scale(problem, probe, t)
    x = t[problem.solution_field][s != 0] / s[s != 0][:, None, None]
    rms = float(x.pow(2).mean().sqrt()) or 1.0
    return Normalisation(field_rms, rms, float((x / rms).std()))


# ---------------------------------------------------------------------------- joint models
#
# A joint model generates several of a problem's fields at once (e.g. rho and phi), as the
# channels of x; the other condition fields (Dirichlet data, a known source) stay conditions.
# Any joint field may be unobserved, so nothing is divided by a per-sample scale: each field has
# one scale (and coefficients one offset of their logarithm) fitted on the training data.


def check_joint(problem: Problem, joint) -> tuple[str, ...]:
    """The joint fields of a model, checked against ``problem``.

    Raises:
        ValueError: naming ``model.joint`` when a name is not a field of the problem, is
            Dirichlet data (known on the ring, a condition), or the solution is missing.
    """
    joint = tuple(joint)
    known = (*problem.condition_fields, *problem.solution_fields)
    bad = [k for k in joint if k not in known]
    if bad:
        raise ValueError(f"model.joint={list(joint)!r} names {bad}, not fields of problem {problem.name!r}; "
                         f"expected some of {list(known)}")
    if problem.solution_field not in joint:
        raise ValueError(f"model.joint={list(joint)!r} lacks the solution field {problem.solution_field!r}; "
                         "expected it among the joint fields")
    ring = [k for k in joint if k in problem.condition_fields and problem.field(k).role == DIRICHLET]
    if ring:
        raise ValueError(f"model.joint={list(joint)!r} names Dirichlet data {ring}; expected them as conditions "
                         "(their values on the ring are imposed exactly)")
    return joint


def joint_conditions(problem: Problem, joint) -> list[str]:
    """The condition fields of a joint model: the problem's fields outside ``joint``."""
    return [k for k in problem.condition_fields if k not in joint]


def joint_channel_names(problem: Problem, joint, observe: bool = False) -> list[str]:
    """Names of a joint model's condition channels, in order; with ``observe``, each joint
    field's observed values (``<name>_obs``, zero where not observed) and mask (``<name>_seen``)
    follow."""
    names = joint_conditions(problem, joint)
    if problem.dirichlet_field is not None:
        names.append(MASK)
    if observe:
        names += [f"{k}_{part}" for k in joint for part in ("obs", "seen")]
    return names


def unknown_nodes(problem: Problem, name: str, n: int) -> np.ndarray:
    """Boolean (n, n): where joint field ``name`` is unknown and can be observed (where it acts;
    a solution's ring is the Dirichlet data, a condition, when the problem has them)."""
    if name in problem.solution_fields:
        return ~boundary_mask(n) if problem.dirichlet_field is not None else np.ones((n, n), dtype=bool)
    return problem.support(name, n)


def observation_channels(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The network inputs of observations ``y`` (B, C, N, N, model units) seen where ``mask``
    is 1: per field its masked values and its mask, (B, 2C, N, N)."""
    return torch.stack([y * mask, mask], dim=2).flatten(1, 2)


#: The law of training observations of each joint field, drawn independently per field and
#: sample: wholly observed, not at all, or at a share of its nodes drawn log-uniformly.
OBSERVATION_LAW = {"whole": 0.2, "none": 0.3, "sparse": 0.5, "fraction": (0.003, 0.5)}


def random_observations(problem: Problem, joint, shape, generator: torch.Generator, device) -> torch.Tensor:
    """A 0/1 mask (B, C, N, N) of observed nodes drawn from :data:`OBSERVATION_LAW` (only where
    each field is unknown: a source's interior, a solution's interior when the ring is data)."""
    b, c, n, _ = shape
    law = OBSERVATION_LAW
    kind = torch.rand((b, c), generator=generator, device=device)
    low, high = (torch.log(torch.tensor(f)) for f in law["fraction"])
    share = torch.exp(low + (high - low) * torch.rand((b, c), generator=generator, device=device))
    share = torch.where(kind < law["whole"], torch.ones_like(share),
                        torch.where(kind < law["whole"] + law["none"], torch.zeros_like(share), share))
    mask = (torch.rand((b, c, n, n), generator=generator, device=device) < share[:, :, None, None]).float()
    for i, k in enumerate(joint):
        mask[:, i] *= torch.as_tensor(unknown_nodes(problem, k, n), device=device)
    return mask


def _role(problem: Problem, name: str) -> str | None:
    return None if name in problem.solution_fields else problem.field(name).role


def _joint_support(problem: Problem, name: str, n: int, device) -> torch.Tensor:
    if name in problem.solution_fields:
        return torch.ones((n, n), dtype=torch.bool, device=device)
    return _support(problem, name, n, device)


def joint_unit(problem: Problem, norm: Normalisation, name: str) -> float:
    # Dirichlet data share the solution's units, so the denoiser can copy them onto the ring
    if name == problem.dirichlet_field or name in problem.solution_fields:
        return norm.solution_rms
    return norm.field_rms[name]


def joint_encode_field(problem: Problem, norm: Normalisation, name: str, f: torch.Tensor) -> torch.Tensor:
    """One field (B, N, N) in a joint model's units: coefficients as (log a - offset) / scale,
    the others zeroed where they do not act and divided by their scale."""
    if _role(problem, name) == COEFFICIENT:
        return (f.log() - norm.offsets.get(name, 0.0)) / norm.field_rms[name]
    support = _joint_support(problem, name, f.shape[-1], f.device)
    return torch.where(support, f, torch.zeros_like(f)) / joint_unit(problem, norm, name)


def joint_decode_field(problem: Problem, norm: Normalisation, name: str, x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`joint_encode_field`."""
    if _role(problem, name) == COEFFICIENT:
        return (x * norm.field_rms[name] + norm.offsets.get(name, 0.0)).exp()
    return x * joint_unit(problem, norm, name)


def joint_encode(problem: Problem, norm: Normalisation, joint, fields: dict[str, torch.Tensor]):
    """A joint model's data ``x0`` (B, len(joint), N, N) and condition channels (B, C, N, N); a
    field of ``joint`` missing from ``fields`` gives x0 = None (only the condition is encoded)."""
    x0 = None
    if all(k in fields for k in joint):
        x0 = torch.stack([joint_encode_field(problem, norm, k, fields[k]) for k in joint], dim=1)
    ref = fields[next(iter(fields))]
    n = ref.shape[-1]
    channels = [joint_encode_field(problem, norm, k, fields[k]) for k in joint_conditions(problem, joint)]
    if problem.dirichlet_field is not None:
        ring = torch.tensor(boundary_mask(n), device=ref.device, dtype=ref.dtype)
        channels.append(ring.expand(ref.shape[0], n, n))
    cond = torch.stack(channels, dim=1) if channels else None
    return x0, cond


def joint_ring_channels(problem: Problem, joint) -> tuple[int | None, tuple[int, ...]]:
    """x channels whose ring values are fixed: (the solution's channel, which carries the
    Dirichlet data, or None without them; the channels of sources, zero on the ring)."""
    if problem.dirichlet_field is None:
        return None, ()
    sources = tuple(i for i, k in enumerate(joint) if _role(problem, k) == SOURCE)
    return joint.index(problem.solution_field), sources


def fit_joint_normalisation(problem: Problem, joint, arrays: dict[str, np.ndarray]) -> Normalisation:
    """Per-field scales (and log offsets of coefficients) of a joint model, from training arrays;
    sigma_data is the standard deviation of the encoded joint fields."""
    t = {k: torch.as_tensor(np.asarray(v), dtype=torch.float64) for k, v in arrays.items()}
    rms, offsets = {}, {}
    for name in [*joint, *joint_conditions(problem, joint)]:
        f = t[name]
        if _role(problem, name) == COEFFICIENT:
            logs = f.log()
            offsets[name] = float(logs.mean())
            rms[name] = float((logs - offsets[name]).pow(2).mean().sqrt()) or 1.0
        elif name != problem.dirichlet_field:
            ms = _mean_square(problem, name, f) if name not in problem.solution_fields else f.pow(2).mean(dim=(-2, -1))
            nz = ms[ms > 0]
            rms[name] = float(nz.mean().sqrt()) if nz.numel() else 1.0
    solution_rms = rms.pop(problem.solution_field)
    if problem.dirichlet_field is not None:
        rms[problem.dirichlet_field] = solution_rms
    norm = Normalisation(rms, solution_rms, 1.0, offsets)
    x0, _ = joint_encode(problem, norm, joint, t)
    norm.sigma_data = float(x0.std()) or 1.0
    return norm
