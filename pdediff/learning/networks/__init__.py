"""Score networks ``net(x, c_noise, cond) -> F`` and the registry that configs and CLIs read.

Every network is built as ``NETWORKS[name](cond_channels, **kwargs)`` with plain JSON-able
keyword arguments (``channels``: the fields denoised, 1 for a forward model, more for a joint
one), takes ``x`` (B, channels, H, W), ``c_noise`` (B,) and ``cond`` (B, cond_channels, H, W),
returns (B, channels, H, W), and has ``check_grid(h, w)`` raising ValueError for grids it
cannot handle.
"""

from __future__ import annotations

from torch import nn

from pdediff.learning.networks.fno import FNOScore
from pdediff.learning.networks.unet import UNet

NETWORKS = {"unet": UNet, "fno": FNOScore}


def build_network(name: str, cond_channels: int, **kwargs) -> nn.Module:
    """Build the network registered as ``name`` in :data:`NETWORKS`.

    Raises:
        ValueError: if ``name`` is not registered or ``kwargs`` do not fit its constructor.
    """
    try:
        cls = NETWORKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"network {name!r} is not known; choose one of {sorted(NETWORKS)}") from None
    try:
        return cls(cond_channels, **kwargs)
    except TypeError as exc:
        raise ValueError(f"network_kwargs={kwargs!r} do not fit network {name!r}: {exc}") from None


__all__ = ["NETWORKS", "FNOScore", "UNet", "build_network"]
