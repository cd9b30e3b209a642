"""A compact conditional U-Net score network (after Ho et al. 2020 and Dhariwal & Nichol 2021).

The noise level enters through an embedding of ``c_noise`` that modulates every residual block
per sample (FiLM after GroupNorm, the "adaptive group norm" of ADM / EDM). The condition fields
(e.g. ``[rho, g, boundary_mask]``) and, optionally, the node coordinates are concatenated to the
noisy field as input channels.

Grid sizes: a U-Net with L levels halves the grid L - 1 times, so it needs sides divisible by
``2 ** (L - 1)``. Rather than refusing other sizes (our grids are often ``2^k + 1`` nodes, e.g.
65), the input is padded on the high-index side by edge replication up to the next multiple
and the output is cropped back. Any grid with both sides >= ``max(8, 2 ** L)`` is accepted; the
padding only touches the last rows/columns, which for a Dirichlet problem lie on the boundary
ring whose values the :class:`pdediff.maths.denoiser.Denoiser` overwrites anyway.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pdediff.learning.networks.layers import (
    EMBEDDINGS,
    FiLM,
    NoiseEmbedding,
    check_periodic,
    group_norm,
    network_input,
    pad_axes,
    periodic_convolutions,
    zero_init,
)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the grid points, added residually.

    Uses one head per 32 channels. The output projection starts at zero, so the block starts as
    the identity.
    """

    def __init__(self, channels: int, head_channels: int = 32):
        super().__init__()
        self.heads = max(1, channels // head_channels)
        if channels % self.heads:
            raise ValueError(f"{channels} channels cannot be split into {self.heads} attention heads")
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = qkv.transpose(-1, -2).unbind(dim=1)  # each (B, heads, HW, C/heads)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj(out)


class ResBlock(nn.Module):
    """Pre-activation residual block with per-sample FiLM conditioning on the noise embedding.

    ``GroupNorm -> SiLU -> conv3x3 -> GroupNorm -> FiLM(emb) -> SiLU -> dropout -> conv3x3``,
    plus a 1x1 projection on the skip path when the width changes. The last conv starts at
    zero so the block starts as (a projection of) the identity.
    """

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, dropout: float = 0.0,
                 attention: bool = False):
        super().__init__()
        self.norm0 = group_norm(in_channels)
        self.conv0 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm1 = group_norm(out_channels)
        self.film = FiLM(emb_channels, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = zero_init(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        self.attention = SelfAttention(out_channels) if attention else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv0(F.silu(self.norm0(x)))
        h = F.silu(self.film(self.norm1(h), emb))
        h = self.conv1(self.dropout(h))
        x = self.skip(x) + h
        if self.attention is not None:
            x = self.attention(x)
        return x


class Downsample(nn.Module):
    """Halve the resolution with a strided 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour upsampling, then a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """Conditional U-Net score network: ``net(x, c_noise, cond) -> F`` of shape (B, 1, H, W).

    Args:
        cond_channels: number of condition channels in ``cond`` (e.g. 3: a source, Dirichlet data and the ring mask).
        model_channels: width of the first level; level ``l`` has ``model_channels *
            channel_mult[l]`` channels.
        channel_mult: width multiplier per level; ``len(channel_mult)`` is the number of levels.
        num_blocks: residual blocks per level in the encoder (the decoder has one more).
        attention_levels: levels (0 = full resolution) whose blocks end with self-attention.
            Attention at level ``l`` costs O((H W / 4^l)^2), so keep it at low resolution.
        embed: noise-level features, ``"fourier"`` or ``"positional"``.
        dropout: dropout probability inside the residual blocks.
        add_coords: append the node coordinates x, y in [0, 1] as two input channels.
        channels: the fields denoised together (1: a forward model's solution; a joint model's
            fields as channels).
        periodic: the axes (``"y"``, ``"x"``) on which the grid wraps around: every convolution
            pads them circularly, and sides not divisible by :attr:`grid_multiple` are padded by
            wrapping instead of by edge replication.

    Raises:
        ValueError: on an invalid configuration.
    """

    # 3x3 kernels act in grid units, so a model trained at one N has learnt the operator at
    # that h only: other grids run, but the solver refuses them unless asked (any_grid=True).
    resolution_free = False

    def __init__(
        self,
        cond_channels: int,
        model_channels: int = 32,
        channel_mult=(1, 2, 2),
        num_blocks: int = 1,
        attention_levels=(2,),
        embed: str = "fourier",
        dropout: float = 0.0,
        add_coords: bool = True,
        channels: int = 1,
        periodic=(),
    ):
        super().__init__()
        periodic = check_periodic(periodic)
        channel_mult = tuple(int(m) for m in channel_mult)
        attention_levels = tuple(int(a) for a in attention_levels)
        if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
            raise ValueError(f"channels={channels!r} must be an integer >= 1 (the fields the network denoises)")
        if cond_channels < 0:
            raise ValueError(f"cond_channels={cond_channels} must be >= 0")
        if model_channels < 1 or not channel_mult or min(channel_mult) < 1 or num_blocks < 1:
            raise ValueError(
                f"invalid U-Net size: model_channels={model_channels}, channel_mult={channel_mult}, "
                f"num_blocks={num_blocks}; all must be positive and channel_mult non-empty"
            )
        levels = len(channel_mult)
        if any(not 0 <= a < levels for a in attention_levels):
            raise ValueError(
                f"attention_levels={attention_levels} must lie in 0..{levels - 1} for channel_mult={channel_mult} "
                f"({levels} levels); pass e.g. attention_levels=({levels - 1},) or ()"
            )
        if embed not in EMBEDDINGS:
            raise ValueError(f"embed={embed!r} is not known; choose one of {EMBEDDINGS}")

        # Plain JSON-able record of the constructor arguments, for configs and checkpoints.
        self.config = dict(
            cond_channels=cond_channels, model_channels=model_channels, channel_mult=list(channel_mult),
            num_blocks=num_blocks, attention_levels=list(attention_levels), embed=embed,
            dropout=dropout, add_coords=add_coords, channels=channels,
        )
        if periodic:
            self.config["periodic"] = list(periodic)
        self.periodic = periodic
        self.cond_channels = cond_channels
        self.channels = channels
        self.levels = levels
        self.add_coords = add_coords
        emb_channels = 4 * model_channels

        self.embedding = NoiseEmbedding(model_channels, emb_channels, embed)
        in_channels = channels + cond_channels + (2 if add_coords else 0)
        ch = model_channels * channel_mult[0]
        self.input_conv = nn.Conv2d(in_channels, ch, 3, padding=1)

        # Encoder. ``skips`` records the width of every tensor pushed onto the skip stack.
        self.encoder = nn.ModuleList()
        skips = [ch]
        for level, mult in enumerate(channel_mult):
            out = model_channels * mult
            for _ in range(num_blocks):
                self.encoder.append(ResBlock(ch, out, emb_channels, dropout, level in attention_levels))
                ch = out
                skips.append(ch)
            if level < levels - 1:
                self.encoder.append(Downsample(ch))
                skips.append(ch)

        self.middle = nn.ModuleList([
            ResBlock(ch, ch, emb_channels, dropout, (levels - 1) in attention_levels),
            ResBlock(ch, ch, emb_channels, dropout),
        ])

        # Decoder: one block per skip tensor, upsampling at the end of every level but the top.
        self.decoder = nn.ModuleList()
        for level in reversed(range(levels)):
            out = model_channels * channel_mult[level]
            for i in range(num_blocks + 1):
                self.decoder.append(ResBlock(ch + skips.pop(), out, emb_channels, dropout,
                                             level in attention_levels))
                ch = out
            if level > 0:
                self.decoder.append(Upsample(ch))

        self.output_norm = group_norm(ch)
        # Zero so the untrained network outputs exactly 0 and D starts at c_skip * x.
        self.output_conv = zero_init(nn.Conv2d(ch, channels, 3, padding=1))
        periodic_convolutions(self, periodic)

    @property
    def grid_multiple(self) -> int:
        """Internal grids must be divisible by this; other sizes are padded up to it."""
        return 2 ** (self.levels - 1)

    @property
    def min_grid_size(self) -> int:
        """Smallest accepted side: at least 2x2 nodes remain at the coarsest level."""
        return max(8, 2 ** self.levels)

    def check_grid(self, h: int, w: int) -> None:
        """Raise ValueError unless an ``h x w`` node grid is accepted.

        Any side >= :attr:`min_grid_size` works; sides not divisible by :attr:`grid_multiple`
        are padded internally (see the module docstring).
        """
        if min(h, w) < self.min_grid_size:
            raise ValueError(
                f"the grid has shape ({h}, {w}); the U-Net with {self.levels} levels needs both sides "
                f">= {self.min_grid_size} (e.g. 64)"
            )

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Evaluate the network.

        Args:
            x: (B, channels, H, W) preconditioned noisy field (``c_in * x`` in EDM).
            c_noise: (B,) noise conditioning (EDM: ``log(sigma) / 4``).
            cond: (B, cond_channels, H, W) condition channels.

        Returns:
            (B, channels, H, W) raw network output ``F`` (EDM eq. 7).
        """
        h, w = x.shape[-2:]
        z = network_input("the U-Net", self, x, c_noise, cond)
        m = self.grid_multiple
        pad_h, pad_w = -h % m, -w % m
        if pad_h or pad_w:
            z = pad_axes(z, (0, pad_h), (0, pad_w), self.periodic, other="replicate")

        emb = self.embedding(c_noise)
        z = self.input_conv(z)
        stack = [z]
        for block in self.encoder:
            z = block(z, emb) if isinstance(block, ResBlock) else block(z)
            stack.append(z)
        for block in self.middle:
            z = block(z, emb)
        for block in self.decoder:
            if isinstance(block, ResBlock):
                z = block(torch.cat([z, stack.pop()], dim=1), emb)
            else:
                z = block(z)
        z = self.output_conv(F.silu(self.output_norm(z)))
        return z[..., :h, :w]
