"""Assemble a conditional denoiser from a config, a problem and the data normalisation."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pdediff.data.checkpoint import group, load_checkpoint
from pdediff.learning.conditioning import (Normalisation, channel_names, check_joint, dirichlet_channels, joint_channel_names,
                                  joint_ring_channels)
from pdediff.learning.config import Config, check_network_kwargs
from pdediff.maths.denoiser import Denoiser
from pdediff.learning.networks import build_network
from pdediff.physics.problems import Problem

#: Most parameters a network may have: a run holds four copies (weights, EMA, two Adam moments)
#: plus gradients, 20 GB in float32 at this bound.
MAX_PARAMETERS = 1_000_000_000


def check_network(config: Config, problem: Problem) -> torch.nn.Module:
    """Build the network of ``config`` on the meta device (no memory) and bound its size.

    Validates ``model.network`` and ``model.network_kwargs`` as the real build would, before any
    memory is allocated. The first call in a process takes a few seconds (torch loads its meta
    kernels), so it is meant for training, not for every solver load.

    Returns:
        The network on the meta device: ``check_grid`` and the parameter count work on it.

    Raises:
        ValueError: naming ``model.network``/``model.network_kwargs`` when they do not fit the
            network or give more than :data:`MAX_PARAMETERS` parameters.
    """
    m = config.model
    check_network_kwargs(m.network_kwargs)
    with torch.device("meta"):
        try:
            net = build_network(m.network, **network_channels(config, problem), **m.network_kwargs)
        except (ValueError, TypeError, RuntimeError) as exc:
            raise ValueError(f"model.network={m.network!r} with model.network_kwargs={m.network_kwargs!r} "
                             f"cannot be built: {exc}") from None
    count = sum(p.numel() for p in net.parameters())
    if count > MAX_PARAMETERS:
        raise ValueError(f"model.network_kwargs={m.network_kwargs!r} give a {m.network} of {count:,} parameters; "
                         f"expected at most {MAX_PARAMETERS:,}: reduce the widths or depths")
    return net


def build_denoiser(config: Config, problem: Problem, norm: Normalisation) -> Denoiser:
    """The network named in ``config`` wrapped in its preconditioning (``model.precond``) with hard Dirichlet data."""
    check_network_kwargs(config.model.network_kwargs)  # cheap: no size that cannot be allocated
    net = build_network(config.model.network, **network_channels(config, problem), **config.model.network_kwargs)
    sigma_data = config.model.sigma_data if config.model.sigma_data is not None else norm.sigma_data
    joint = config.model.joint
    options = dict(precond=config.model.precond, energy=config.model.energy,
                   null_channels=null_channels(config, problem) if config.model.cond_dropout > 0 else None)
    if not joint:
        dirichlet, mask = dirichlet_channels(problem)
        return Denoiser(net, sigma_data=float(sigma_data), dirichlet_channel=dirichlet, mask_channel=mask, **options)
    names = joint_channel_names(problem, joint, config.model.observe)
    solution, sources = joint_ring_channels(problem, tuple(joint))
    ring = problem.dirichlet_field is not None
    return Denoiser(net, sigma_data=float(sigma_data),
                    dirichlet_channel=names.index(problem.dirichlet_field) if ring else None,
                    mask_channel=names.index("mask") if ring else None,
                    solution_channel=solution or 0, interior_channels=sources, **options)


def condition_names(config: Config, problem: Problem) -> list[str]:
    """The names of the condition channels of ``config``'s network (without the presence flag)."""
    joint = config.model.joint
    return (joint_channel_names(problem, joint, config.model.observe) if joint
            else channel_names(problem, config.model.operator_input))


def null_channels(config: Config, problem: Problem) -> tuple[int, ...]:
    """The condition channels zeroed in the null condition of classifier-free guidance: every
    condition but the Dirichlet data and the ring mask (imposed exactly, so kept)."""
    keep = {problem.dirichlet_field, "mask"}
    return tuple(i for i, name in enumerate(condition_names(config, problem)) if name not in keep)


def network_channels(config: Config, problem: Problem) -> dict:
    """``channels`` and ``cond_channels`` of the network of ``config`` on ``problem``: one
    channel and every condition field for a forward model; the joint fields and the others for
    a joint model (``model.joint``, checked here)."""
    joint = config.model.joint
    flag = int(config.model.cond_dropout > 0)  # the presence flag of the null condition
    if config.model.operator_input and (joint or problem.guess_method is None):
        raise ValueError(f"model.operator_input is set for {'a joint model' if joint else 'problem ' + repr(problem.name)}"
                         f"; expected a forward model of a problem with an operator guess (guess_method), "
                         f"or model.operator_input: false")
    if not joint:
        return {"cond_channels": len(channel_names(problem, config.model.operator_input)) + flag}
    joint = check_joint(problem, joint)
    return {"channels": len(joint), "cond_channels": len(joint_channel_names(problem, joint, config.model.observe)) + flag}


@dataclass
class LoadedModel:
    """A checkpoint's denoiser (in eval mode, on the CPU) with everything it was trained with."""

    denoiser: torch.nn.Module
    config: Config
    norm: Normalisation
    card: dict
    problem: Problem


def load_denoiser(path, weights: str = "ema") -> LoadedModel:
    """Read a checkpoint (JSON metadata and tensors only, never pickles) and rebuild its denoiser.

    Used by the solver and by fine-tuning (``train.init``) alike.

    Args:
        path: a training checkpoint or an exported one.
        weights: ``"ema"`` (the EMA weights, falling back to the raw ones) or ``"model"``.

    Raises:
        ValueError: naming the file, for incomplete metadata, a normalisation that does not fit the
            problem, problem parameters that differ between the config and the data card, or
            weights that do not match the config.
    """
    tensors, meta = load_checkpoint(path)
    try:
        config = Config.from_dict(meta["config"])
        norm = Normalisation.from_dict(meta["normalisation"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint={str(path)!r} has incomplete metadata: {exc}") from None
    card = meta.get("card") or {}
    try:
        problem = config.data.make_problem(card)
        norm.validate(problem)
    except ValueError as exc:
        raise ValueError(f"checkpoint={str(path)!r}: {exc}") from None
    card_params = card.get("params", problem.params())
    if card_params != problem.params():
        raise ValueError(f"checkpoint={str(path)!r} was trained on data with problem parameters {card_params} "
                         f"but its config says data.params={problem.params()}")
    denoiser = build_denoiser(config, problem, norm)
    state = group(tensors, weights) or group(tensors, "model")
    if not state:
        raise ValueError(f"checkpoint={str(path)!r} holds no model weights")
    try:
        # complex tensors (the FNO's spectral weights) stay complex: .float() would drop their
        # imaginary part
        denoiser.load_state_dict({k: v.to(torch.complex64) if v.is_complex() else v.float() for k, v in state.items()})
    except RuntimeError as exc:
        raise ValueError(f"checkpoint={str(path)!r} does not match its config: {exc}") from None
    return LoadedModel(denoiser.eval(), config, norm, card, problem)
