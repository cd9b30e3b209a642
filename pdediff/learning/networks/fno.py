"""A Fourier neural operator score network with per-sample noise conditioning.

Built from neuraloperator's :class:`~neuralop.layers.spectral_convolution.SpectralConv` (Li et
al. 2021, arXiv:2010.08895) with our own lifting, projection and conditioning.
``neuralop.models.FNO`` itself is not used: its ``forward`` drops unknown keyword arguments such
as ``sigma=`` and its AdaIN norm holds a single embedding for the whole batch, whereas a
diffusion model needs a different noise level for each sample. Here the ``c_noise`` embedding
modulates every Fourier layer per sample (FiLM after GroupNorm).

The network is resolution-agnostic: the spectral weights act on a fixed number of Fourier modes,
the coordinate channels always span [0, 1], and the domain padding is a fraction of the grid,
so the same weights run on 32 x 32, 64 x 64 or 65 x 65 grids.

Fourier layers assume periodic fields; our fields are not (Dirichlet boundary data), so the grid
is zero-padded on the high-index side by ``domain_padding`` times its size (plus one node where
that leaves an odd size: the same continuous input then gives the same output on odd and even
grids) before the Fourier layers and cropped afterwards, which keeps the wrap-around from
coupling opposite edges.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pdediff.learning.networks.layers import (EMBEDDINGS, FiLM, NoiseEmbedding, check_periodic, group_norm,
                                              network_input, zero_init)


class FourierBlock(nn.Module):
    """One Fourier layer with a residual connection and per-sample FiLM conditioning.

    ``h + MLP(GELU(FiLM(GroupNorm(K h + W h), emb)))`` where ``K`` is the spectral convolution
    (kept modes only), ``W`` a pointwise linear skip (the FNO's local term) and MLP a two-layer
    pointwise channel MLP whose last layer starts at zero (the block starts as the identity).
    """

    def __init__(self, channels: int, n_modes: tuple[int, int], emb_channels: int, mlp_ratio: float = 2.0):
        super().__init__()
        # imported here: neuraloperator (and what it pulls in) loads only when an FNO is built
        from neuralop.layers.spectral_convolution import SpectralConv

        self.spectral = SpectralConv(channels, channels, n_modes)
        self.pointwise = nn.Conv2d(channels, channels, 1)
        self.norm = group_norm(channels)
        self.film = FiLM(emb_channels, channels)
        hidden = max(1, round(mlp_ratio * channels))
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.GELU(),
            zero_init(nn.Conv2d(hidden, channels, 1)),
        )

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        z = self.spectral(h) + self.pointwise(h)
        z = F.gelu(self.film(self.norm(z), emb))
        return h + self.mlp(z)


class FNOScore(nn.Module):
    """Conditional FNO score network: ``net(x, c_noise, cond) -> F`` of shape (B, 1, H, W).

    Args:
        cond_channels: number of condition channels in ``cond`` (e.g. 3: a source, Dirichlet data and the ring mask).
        hidden_channels: width of the Fourier layers.
        n_modes: Fourier modes kept along (H, W); grids with fewer modes use all they have.
        n_layers: number of Fourier layers.
        embed: noise-level features, ``"fourier"`` or ``"positional"``.
        domain_padding: zero padding added on the high-index side of each axis before the
            Fourier layers, as a fraction of the grid size (0 disables it).
        add_coords: append the node coordinates x, y in [0, 1] as two input channels.
        channels: the fields denoised together (1: a forward model's solution).
        periodic: the axes (``"y"``, ``"x"``) on which the grid wraps around: no domain padding
            there, so the Fourier layers see the torus as it is.

    Raises:
        ValueError: on an invalid configuration.
    """

    #: Smallest accepted side: below this there is hardly a spectrum to speak of.
    min_grid_size = 4
    resolution_free = True  # spectral weights act on physical modes: any grid, same weights

    def __init__(
        self,
        cond_channels: int,
        hidden_channels: int = 32,
        n_modes=(16, 16),
        n_layers: int = 4,
        embed: str = "fourier",
        domain_padding: float = 0.125,
        add_coords: bool = True,
        channels: int = 1,
        periodic=(),
    ):
        super().__init__()
        self.periodic = check_periodic(periodic)
        n_modes = tuple(int(m) for m in n_modes)
        if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
            raise ValueError(f"channels={channels!r} must be an integer >= 1 (the fields the network denoises)")
        if cond_channels < 0:
            raise ValueError(f"cond_channels={cond_channels} must be >= 0")
        if len(n_modes) != 2 or min(n_modes) < 1:
            raise ValueError(f"n_modes={n_modes} must be two positive integers (modes along H and W)")
        if hidden_channels < 1 or n_layers < 1:
            raise ValueError(f"hidden_channels={hidden_channels} and n_layers={n_layers} must be positive")
        if not 0.0 <= domain_padding <= 1.0:
            raise ValueError(f"domain_padding={domain_padding} must be a fraction in [0, 1]")
        if embed not in EMBEDDINGS:
            raise ValueError(f"embed={embed!r} is not known; choose one of {EMBEDDINGS}")

        # Plain JSON-able record of the constructor arguments, for configs and checkpoints.
        self.config = dict(
            cond_channels=cond_channels, hidden_channels=hidden_channels, n_modes=list(n_modes),
            n_layers=n_layers, embed=embed, domain_padding=domain_padding, add_coords=add_coords, channels=channels,
        )
        if self.periodic:
            self.config["periodic"] = list(self.periodic)
        self.cond_channels = cond_channels
        self.channels = channels
        self.add_coords = add_coords
        self.domain_padding = float(domain_padding)
        emb_channels = 4 * hidden_channels

        self.embedding = NoiseEmbedding(hidden_channels, emb_channels, embed)
        in_channels = channels + cond_channels + (2 if add_coords else 0)
        self.lifting = nn.Sequential(
            nn.Conv2d(in_channels, 2 * hidden_channels, 1),
            nn.GELU(),
            nn.Conv2d(2 * hidden_channels, hidden_channels, 1),
        )
        self.blocks = nn.ModuleList(FourierBlock(hidden_channels, n_modes, emb_channels) for _ in range(n_layers))
        self.projection_norm = group_norm(hidden_channels)
        self.projection_film = FiLM(emb_channels, hidden_channels)
        self.projection = nn.Sequential(
            nn.Conv2d(hidden_channels, 2 * hidden_channels, 1),
            nn.GELU(),
            # Zero so the untrained network outputs exactly 0 and D starts at c_skip * x.
            zero_init(nn.Conv2d(2 * hidden_channels, channels, 1)),
        )

    def check_grid(self, h: int, w: int) -> None:
        """Raise ValueError unless an ``h x w`` node grid is accepted (any side >= 4 is)."""
        if min(h, w) < self.min_grid_size:
            raise ValueError(
                f"the grid has shape ({h}, {w}); the FNO needs both sides >= {self.min_grid_size} (e.g. 64)"
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
        z = self.lifting(network_input("the FNO", self, x, c_noise, cond))
        pad_h, pad_w = math.ceil(self.domain_padding * h), math.ceil(self.domain_padding * w)
        # an even padded size on every grid: the spectral layers treat the kept modes of odd and
        # even FFT lengths differently (6 % apart on the same continuous input before this)
        pad_h, pad_w = pad_h + (h + pad_h) % 2, pad_w + (w + pad_w) % 2
        pad_h, pad_w = (0 if "y" in self.periodic else pad_h), (0 if "x" in self.periodic else pad_w)
        if pad_h or pad_w:
            z = F.pad(z, (0, pad_w, 0, pad_h))

        emb = self.embedding(c_noise)
        for block in self.blocks:
            z = block(z, emb)
        z = z[..., :h, :w]
        z = F.gelu(self.projection_film(self.projection_norm(z), emb))
        return self.projection(z)
