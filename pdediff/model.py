"""Assemble a conditional denoiser from a config, a problem and the data normalisation."""

from __future__ import annotations

from pdediff.conditioning import Normalisation, channel_names, dirichlet_channels
from pdediff.config import Config
from pdediff.denoiser import Denoiser
from pdediff.networks import build_network
from pdediff.problems import Problem


def build_denoiser(config: Config, problem: Problem, norm: Normalisation) -> Denoiser:
    """The network named in ``config`` wrapped in its preconditioning (``model.precond``) with hard Dirichlet data."""
    net = build_network(
        config.model.network,
        cond_channels=len(channel_names(problem)),
        **config.model.network_kwargs,
    )
    sigma_data = config.model.sigma_data if config.model.sigma_data is not None else norm.sigma_data
    dirichlet, mask = dirichlet_channels(problem)
    return Denoiser(net, sigma_data=float(sigma_data), dirichlet_channel=dirichlet, mask_channel=mask,
                    precond=config.model.precond)
