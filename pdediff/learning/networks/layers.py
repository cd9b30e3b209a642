"""Building blocks shared by the score networks.

Everything here is per-sample: no layer mixes information across the batch axis (no
BatchNorm), so a sample's output depends only on its own input, noise level and condition.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from pdediff.maths.tensors import append_dims  # noqa: F401  (re-exported)

EMBEDDINGS = ("fourier", "positional")


def group_norm(channels: int, max_groups: int = 32, min_channels_per_group: int = 4) -> nn.GroupNorm:
    """GroupNorm with as many groups as possible (at most ``max_groups``, at least 4 channels each).

    GroupNorm normalises each sample on its own, which keeps the per-sample conditioning exact.
    """
    groups = max(1, min(max_groups, channels // min_channels_per_group))
    while channels % groups:  # GroupNorm needs the groups to divide the channels
        groups -= 1
    return nn.GroupNorm(groups, channels, eps=1e-5)


def zero_init(module: nn.Module) -> nn.Module:
    """Set every parameter of ``module`` to zero and return it.

    Used on the last layer of residual branches and of the network so that the untrained model
    starts as the identity on its residual stream and outputs ~0 (Goyal et al. 2017; the ADM and
    EDM U-Nets do the same).
    """
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class PositionalEmbedding(nn.Module):
    """Sinusoidal embedding of a scalar per sample (Vaswani et al. 2017; EDM's DDPM++ choice).

    Frequencies are ``(1 / max_positions) ** (k / (channels / 2))`` for ``k = 0 .. channels/2 - 1``.
    """

    def __init__(self, channels: int, max_positions: int = 10000):
        super().__init__()
        if channels % 2:
            raise ValueError(f"embedding channels must be even, got {channels}")
        half = channels // 2
        freqs = (1.0 / max_positions) ** (torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Map (B,) to (B, channels)."""
        arg = t.to(self.freqs.dtype)[:, None] * self.freqs[None, :]
        return torch.cat([arg.cos(), arg.sin()], dim=1)


class FourierEmbedding(nn.Module):
    """Random Fourier features of a scalar per sample (Tancik et al. 2020; EDM's NCSN++ choice).

    The frequencies are drawn once from N(0, scale^2) and stored as a (persistent) buffer, so a
    checkpoint reproduces them exactly.
    """

    def __init__(self, channels: int, scale: float = 16.0):
        super().__init__()
        if channels % 2:
            raise ValueError(f"embedding channels must be even, got {channels}")
        # A fixed seed keeps construction deterministic regardless of the global RNG state.
        gen = torch.Generator().manual_seed(0)
        self.register_buffer("freqs", torch.randn(channels // 2, generator=gen) * scale)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Map (B,) to (B, channels)."""
        arg = (2 * math.pi) * t.to(self.freqs.dtype)[:, None] * self.freqs[None, :]
        return torch.cat([arg.cos(), arg.sin()], dim=1)


class NoiseEmbedding(nn.Module):
    """c_noise (B,) -> embedding (B, emb_channels): a fixed feature map followed by a 2-layer MLP.

    Args:
        channels: width of the fixed (Fourier or positional) features.
        emb_channels: width of the output embedding.
        embed: ``"fourier"`` or ``"positional"``.
    """

    def __init__(self, channels: int, emb_channels: int, embed: str = "fourier"):
        super().__init__()
        if embed == "fourier":
            self.features = FourierEmbedding(channels)
        elif embed == "positional":
            self.features = PositionalEmbedding(channels)
        else:
            raise ValueError(f"embed={embed!r} is not known; choose one of {EMBEDDINGS}")
        self.mlp = nn.Sequential(
            nn.Linear(channels, emb_channels),
            nn.SiLU(),
            nn.Linear(emb_channels, emb_channels),
            nn.SiLU(),
        )

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        emb = self.features(c_noise)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class FiLM(nn.Module):
    """Per-sample feature-wise affine modulation ``x * (1 + scale) + shift`` (Perez et al. 2018).

    ``scale`` and ``shift`` are linear in the embedding; the ``1 +`` makes a zero embedding
    response the identity. Applied after a normalisation this is the "adaptive group norm" of
    Dhariwal & Nichol (2021) and EDM's ``adaptive_scale``.
    """

    def __init__(self, emb_channels: int, channels: int):
        super().__init__()
        self.affine = nn.Linear(emb_channels, 2 * channels)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = append_dims(self.affine(emb), x.ndim).chunk(2, dim=1)
        return torch.addcmul(shift, x, scale + 1)


def coordinate_channels(x: torch.Tensor) -> torch.Tensor:
    """Return (B, 2, H, W) channels holding the node coordinates x_j and y_i, both in [0, 1].

    Follows the grid convention of :mod:`pdediff.physics.problems.base`: index ``[i, j]`` is the node
    ``(x_j, y_i)`` with the boundary nodes at 0 and 1. Depends only on the grid, so the same
    weights see the same coordinates at every resolution.
    """
    b, _, h, w = x.shape
    ys = torch.linspace(0.0, 1.0, h, dtype=x.dtype, device=x.device)
    xs = torch.linspace(0.0, 1.0, w, dtype=x.dtype, device=x.device)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y]).expand(b, 2, h, w)


def network_input(name: str, net: nn.Module, x: torch.Tensor, c_noise: torch.Tensor,
                  cond: torch.Tensor) -> torch.Tensor:
    """Validate a network's inputs and concatenate x, the condition and (optionally) the
    node coordinates into one (B, C, H, W) tensor."""
    check_inputs(name, x, c_noise, cond, net.cond_channels, getattr(net, "channels", 1))
    net.check_grid(*x.shape[-2:])
    parts = [x] + ([cond] if net.cond_channels else [])
    if net.add_coords:
        parts.append(coordinate_channels(x))
    return torch.cat(parts, dim=1)


def check_inputs(name: str, x: torch.Tensor, c_noise: torch.Tensor, cond: torch.Tensor, cond_channels: int,
                 channels: int = 1) -> None:
    """Validate the shapes given to a score network's ``forward``.

    Raises:
        ValueError: naming the network, the offending shape and the one expected.
    """
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"x has shape {tuple(x.shape)}; {name} expects (B, {channels}, H, W)")
    b, _, h, w = x.shape
    if c_noise.shape != (b,):
        raise ValueError(f"c_noise has shape {tuple(c_noise.shape)}; {name} expects ({b},) for a batch of {b}")
    if cond_channels == 0 and cond is None:
        return
    if cond is None or cond.shape != (b, cond_channels, h, w):
        got = None if cond is None else tuple(cond.shape)
        raise ValueError(f"cond has shape {got}; {name} expects ({b}, {cond_channels}, {h}, {w}) to match x")


#: The axes a grid may wrap around on, in the (H, W) = (y, x) order of the tensors.
PERIODIC_AXES = ("y", "x")


def check_periodic(periodic) -> tuple[str, ...]:
    """``periodic`` as a tuple of axis names in (y, x) order.

    Raises:
        ValueError: naming the value, unless it is a list of axes among ``y`` and ``x``.
    """
    if isinstance(periodic, str):
        periodic = [periodic]
    if not isinstance(periodic, (list, tuple)) or not set(periodic) <= set(PERIODIC_AXES):
        raise ValueError(f"periodic={periodic!r} is invalid; expected a list of axes among {list(PERIODIC_AXES)}")
    return tuple(a for a in PERIODIC_AXES if a in periodic)


def pad_axes(z: torch.Tensor, pad_h: tuple[int, int], pad_w: tuple[int, int], periodic: tuple[str, ...],
             other: str = "constant") -> torch.Tensor:
    """Pad the last two axes: circularly on the periodic ones, with mode ``other`` elsewhere."""
    if any(pad_w):
        z = F.pad(z, (*pad_w, 0, 0), mode="circular" if "x" in periodic else other)
    if any(pad_h):
        z = F.pad(z, (0, 0, *pad_h), mode="circular" if "y" in periodic else other)
    return z


def _pad_input(ph: int, pw: int, periodic: tuple[str, ...], module, args):
    return (pad_axes(args[0], (ph, ph), (pw, pw), periodic), *args[1:])


def periodic_convolutions(module: nn.Module, periodic: tuple[str, ...]) -> None:
    """Make every padded convolution in ``module`` pad circularly on the ``periodic`` axes (zeros
    on the others): the network then treats a periodic grid as a torus, with no edge."""
    if not periodic:
        return
    for m in module.modules():
        if isinstance(m, nn.Conv2d) and tuple(m.padding) != (0, 0):
            ph, pw = m.padding
            m.padding = (0, 0)
            m.register_forward_pre_hook(partial(_pad_input, ph, pw, periodic))
