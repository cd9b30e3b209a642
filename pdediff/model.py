"""Assemble a conditional denoiser from a config, a problem and the data normalisation."""

from __future__ import annotations

import torch

from pdediff.conditioning import Normalisation, channel_names, dirichlet_channels
from pdediff.config import Config, check_network_kwargs
from pdediff.denoiser import Denoiser
from pdediff.networks import build_network
from pdediff.problems import Problem

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
            net = build_network(m.network, cond_channels=len(channel_names(problem)), **m.network_kwargs)
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
    net = build_network(
        config.model.network,
        cond_channels=len(channel_names(problem)),
        **config.model.network_kwargs,
    )
    sigma_data = config.model.sigma_data if config.model.sigma_data is not None else norm.sigma_data
    dirichlet, mask = dirichlet_channels(problem)
    return Denoiser(net, sigma_data=float(sigma_data), dirichlet_channel=dirichlet, mask_channel=mask,
                    precond=config.model.precond)
