"""Preconditioning around a score network (Karras et al. 2022, arXiv:2206.00364, Table 1).

    D(x; sigma, cond) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma), cond)

:data:`PRECONDITIONINGS` holds the coefficient families, each a function
``(sigma, sigma_data) -> (c_skip, c_out, c_in, c_noise)``:

* ``edm``: EDM's, ``c_skip = sigma_data^2 / (sigma^2 + sigma_data^2)``, ``c_out = sigma
  sigma_data / sqrt(sigma^2 + sigma_data^2)``, ``c_in = 1 / sqrt(sigma^2 + sigma_data^2)``,
  ``c_noise = log(sigma) / 4``. Right for broad data distributions (images).
* ``x0``: ``c_skip = 0``, ``c_out = sigma_data``, the same ``c_in`` and ``c_noise``: the network
  predicts the clean field directly. Right for a spike posterior (a well-posed PDE): there the
  exact denoiser D = phi* does not depend on x at any sigma, which ``x0`` expresses by ignoring
  x, whereas ``edm`` must cancel ``c_skip x`` exactly, and every imperfection of that
  cancellation is noise that reaches the answer (seed-to-seed spread).

Optionally the Dirichlet boundary values are imposed exactly on D.

Two options change what the network is asked for:

* ``null_channels`` (classifier-free guidance, Ho & Salimans 2022, arXiv:2207.12598): the network
  takes one more condition channel, a flag that is 1 when the condition is given and 0 for the
  *null* condition, in which the ``null_channels`` (sources, coefficients, observations) are
  zeroed and the Dirichlet data kept (they are imposed exactly either way).
* ``energy`` (Salimans & Ho 2021, arXiv:2106.02808): the score is minus the gradient of a scalar
  energy ``E(x, sigma, c) = ||x - D_net(x)||^2 / (2 sigma^2)``, with ``D_net`` the preconditioned
  network above. Then ``D = x - sigma^2 grad_x E = D_net + J^T (x - D_net)`` (J = dD_net/dx, one
  vector-Jacobian product), and the score field is a gradient: its Jacobian is symmetric. Training
  differentiates through that product (a double backward).
"""

from __future__ import annotations

import torch
from torch import nn

from pdediff.maths.tensors import append_dims


def edm_coefficients(sigma: torch.Tensor, sigma_data: torch.Tensor):
    """EDM's ``(c_skip, c_out, c_in, c_noise)`` (Karras et al. Table 1)."""
    total = sigma**2 + sigma_data**2
    return sigma_data**2 / total, sigma * sigma_data / total.sqrt(), total.rsqrt(), sigma.log() / 4


def x0_coefficients(sigma: torch.Tensor, sigma_data: torch.Tensor):
    """Clean-field prediction: ``c_skip = 0``, ``c_out = sigma_data``; ``c_in``, ``c_noise`` as EDM."""
    total = sigma**2 + sigma_data**2
    return torch.zeros_like(sigma), sigma_data.expand_as(sigma), total.rsqrt(), sigma.log() / 4


#: Preconditioning families by name (``model.precond``).
PRECONDITIONINGS = {"edm": edm_coefficients, "x0": x0_coefficients}


class Denoiser(nn.Module):
    """An already-built network ``net(x, c_noise, cond)`` wrapped with EDM preconditioning.

    Args:
        net: the score network (see :mod:`pdediff.learning.networks`).
        sigma_data: standard deviation of the (normalised) training solutions; stored as a
            float32 buffer (devices such as MPS lack float64) so it travels with the weights.
        dirichlet_channel: index in ``cond``'s channel axis of the boundary data ``g``.
        mask_channel: index in ``cond``'s channel axis of the boundary mask (1 on the boundary
            ring, 0 inside). With both indices set, ``D = mask * g + (1 - mask) * D``, so the
            denoised field equals ``g`` on the ring exactly and the network only has to learn
            the interior.
        precond: a key of :data:`PRECONDITIONINGS`.
        solution_channel: the channel of ``x`` that the Dirichlet data are imposed on (a joint
            model denoises several fields as channels; a forward model has one).
        interior_channels: channels of ``x`` set to zero on the ring (sources of a joint model,
            which act at interior nodes only).
        null_channels: None for a network without a null condition; else the ``cond`` channels
            zeroed in the null condition, and the network takes a presence flag after ``cond``.
        energy: parameterise the score as minus the gradient of a scalar energy (see above).

    Raises:
        ValueError: if only one of ``dirichlet_channel`` and ``mask_channel`` is given,
            ``sigma_data`` is not positive or ``precond`` is unknown.
    """

    def __init__(self, net: nn.Module, sigma_data: float = 0.5, dirichlet_channel: int | None = None,
                 mask_channel: int | None = None, precond: str = "edm", solution_channel: int = 0,
                 interior_channels: tuple[int, ...] = (), null_channels: tuple[int, ...] | None = None,
                 energy: bool = False):
        super().__init__()
        if precond not in PRECONDITIONINGS:
            raise ValueError(f"precond={precond!r} is unknown; expected one of {sorted(PRECONDITIONINGS)}")
        self.precond = precond
        if (dirichlet_channel is None) != (mask_channel is None):
            raise ValueError(
                f"dirichlet_channel={dirichlet_channel} and mask_channel={mask_channel}: give both "
                "to impose the boundary values, or neither"
            )
        if not float(sigma_data) > 0:
            raise ValueError(f"sigma_data={sigma_data} must be positive")
        self.net = net
        self.register_buffer("sigma_data", torch.tensor(float(sigma_data)))
        self.dirichlet_channel = dirichlet_channel
        self.mask_channel = mask_channel
        self.solution_channel = int(solution_channel)
        self.interior_channels = tuple(int(c) for c in interior_channels)
        self.null_channels = None if null_channels is None else tuple(int(c) for c in null_channels)
        self.energy = bool(energy)

    def _sigma(self, sigma, x: torch.Tensor) -> torch.Tensor:
        """Return sigma as a (B,) tensor in x's dtype and device (broadcasting a scalar)."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        if sigma.shape != (x.shape[0],):
            raise ValueError(
                f"sigma has shape {tuple(sigma.shape)}; expected a scalar or ({x.shape[0]},) for x of "
                f"shape {tuple(x.shape)}"
            )
        return sigma

    def preconditioning(self, sigma: torch.Tensor):
        """Return ``(c_skip, c_out, c_in, c_noise)`` for noise levels ``sigma`` (``self.precond``).

        Args:
            sigma: tensor of noise levels (> 0), any shape; the results have the same shape.
        """
        return PRECONDITIONINGS[self.precond](sigma, self.sigma_data.to(sigma.dtype))

    def forward(self, x: torch.Tensor, sigma, cond: torch.Tensor | None = None, null=None) -> torch.Tensor:
        """Denoise ``x``: the model's estimate of E[phi | x, sigma, cond] (EDM eq. 7).

        Args:
            x: (B, C, H, W) noisy fields (C = 1 for a forward model).
            sigma: (B,) noise levels, or a scalar shared by the batch; must be > 0.
            cond: (B, C, H, W) condition channels passed to the network.
            null: with ``null_channels``: True, or a (B,) bool tensor, for the samples given the
                null condition (None: none of them).

        Returns:
            (B, C, H, W) denoised fields D.
        """
        sigma = self._sigma(sigma, x)
        cond = self._with_presence(cond, null, x)
        if not self.energy:
            return self._denoise(x, sigma, cond)
        if torch.is_inference_mode_enabled():
            raise ValueError("an energy model (energy=True) takes a gradient of its energy: call it under "
                             "torch.no_grad(), not torch.inference_mode()")
        outer = torch.is_grad_enabled()
        with torch.enable_grad():
            xg = x if x.requires_grad else x.detach().requires_grad_(True)
            d = self._denoise(xg, sigma, cond)
            # D = x - sigma^2 grad E = D_net + J^T (x - D_net), E = ||x - D_net||^2 / (2 sigma^2)
            (vjp,) = torch.autograd.grad(d, xg, grad_outputs=(xg - d).detach() if not outer else xg - d,
                                         create_graph=outer)
        out = self._impose_ring(d + vjp, cond)
        return out if outer else out.detach()

    def energy_value(self, x: torch.Tensor, sigma, cond: torch.Tensor | None = None, null=None) -> torch.Tensor:
        """The energy ``E(x, sigma, c) = ||x - D_net(x)||^2 / (2 sigma^2)`` per sample, (B,), of an
        energy model (``energy=True``): its score is ``-grad_x E``.

        Raises:
            ValueError: for a model whose score is not parameterised by an energy.
        """
        if not self.energy:
            raise ValueError("energy_value needs an energy-parameterised model (model.energy: true); this one "
                             "outputs its score directly")
        sigma = self._sigma(sigma, x)
        d = self._denoise(x, sigma, self._with_presence(cond, null, x))
        return (x - d).pow(2).flatten(1).sum(1) / (2 * sigma**2)

    def _with_presence(self, cond, null, x: torch.Tensor):
        """``cond`` with the presence flag appended (a network with a null condition), the
        ``null`` samples' droppable channels zeroed and their flag 0."""
        if self.null_channels is None:
            if null is not None and (not isinstance(null, bool) or null):
                raise ValueError("null is given but this model has no null condition (model.cond_dropout: 0); "
                                 "expected null=None")
            return cond
        b, (h, w) = x.shape[0], x.shape[-2:]
        present = torch.ones((b,), dtype=x.dtype, device=x.device)
        if null is not None and not (isinstance(null, bool) and not null):
            present = 1 - torch.as_tensor(null, device=x.device).expand(b).to(x.dtype)
            if cond is not None:
                keep = torch.ones((b, cond.shape[1]), dtype=cond.dtype, device=cond.device)
                keep[:, list(self.null_channels)] = present[:, None].to(cond.dtype)
                cond = cond * keep[:, :, None, None]
        flag = present.to(cond.dtype if cond is not None else x.dtype)[:, None, None, None].expand(b, 1, h, w)
        return flag if cond is None else torch.cat([cond, flag], dim=1)

    def _denoise(self, x: torch.Tensor, sigma: torch.Tensor, cond) -> torch.Tensor:
        """The preconditioned network, with the ring imposed: ``D_net``."""
        c_skip, c_out, c_in, c_noise = self.preconditioning(sigma)
        f = self.net(append_dims(c_in, x.ndim) * x, c_noise, cond)
        d = append_dims(c_skip, x.ndim) * x + append_dims(c_out, x.ndim) * f.to(x.dtype)
        return self._impose_ring(d, cond)

    def _impose_ring(self, d: torch.Tensor, cond) -> torch.Tensor:
        if self.mask_channel is None:
            return d
        if cond is None:
            raise ValueError("cond is None; this Denoiser imposes boundary values and needs g and the mask in cond")
        mask = cond[:, self.mask_channel : self.mask_channel + 1].to(d.dtype)
        g = cond[:, self.dirichlet_channel : self.dirichlet_channel + 1].to(d.dtype)
        # Exact on a {0, 1} mask: 1 * g + 0 * d == g bit for bit (d finite).
        if d.shape[1] == 1:
            return mask * g + (1 - mask) * d
        parts = list(d.split(1, dim=1))
        k = self.solution_channel
        parts[k] = mask * g + (1 - mask) * parts[k]
        for c in self.interior_channels:
            parts[c] = (1 - mask) * parts[c]
        return torch.cat(parts, dim=1)

    def score(self, x: torch.Tensor, sigma, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Score of the noised data density, ``grad_x log p(x; sigma) = (D - x) / sigma^2`` (EDM eq. 3)."""
        sigma = self._sigma(sigma, x)
        return (self(x, sigma, cond) - x) / append_dims(sigma, x.ndim) ** 2
