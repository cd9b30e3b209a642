"""Random families of coefficient fields a(x, y) > 0 for problems with a coefficient field (:data:`COEFFICIENTS`).

Families follow :mod:`pdediff.physics.sources`: frozen dataclasses of parameters (``params()`` gives them
as a JSON-ready dict), ``family.sample(grid, rngs)`` returns a (B, N, N) float64 stack with one
field per generator, and ``family(grid, rng)`` one (N, N) field. Each sample's draws come from its
own generator only, and the modes are fixed, so a generator gives the same continuous field at
every N (evaluated at that grid's nodes).

Both families start from a zero-mean Gaussian random field with covariance
(-lap + tau^2 I)^(-alpha) (Neumann cosine modes),

    psi(x, y) = sum_{0 <= k1, k2 < modes, (k1, k2) != (0, 0)}
                xi_k (pi^2 (k1^2 + k2^2) + tau^2)^(-alpha/2) cos(pi k1 x) cos(pi k2 y),

xi_k ~ N(0, 1); the constant mode is left out, so the field has zero mean.

* ``threshold``: the neural-operator benchmark law of variable-coefficient flow (Li et al., Fourier neural operator):
  alpha = 2, tau = 3, a = 12 where psi >= 0 and a = 3 elsewhere. A larger tau (e.g. 6) flattens
  the low end of the spectrum and gives finer inclusions.
* ``lognormal``: a = exp(mu + sigma psi / s) with a smoother field (alpha = 3, tau = 3), where s^2
  is the expected mean square of psi over the square (a constant of the spectrum, not of the
  sample or of N), so log a has standard deviation ~ sigma = 1; positive by construction.
* ``channels``: channelised media, as in reservoir models: 2 to 4 meandering channels of
  ``high`` permeability (centre lines ``c + A sin(2 pi k s + phase)`` across the square, along x
  or y, width 0.04-0.1) in a ``low`` background. It is in no training law: a test of coefficients
  that a model never saw.
* ``broad-threshold`` and ``broad-lognormal``: the same two laws with their parameters drawn
  afresh for every sample (log-uniform contrast and scale, uniform length scale, smoothness,
  volume fraction and log-spread), so that a model trained on them has seen a continuum of
  laws rather than one point of it.
* ``broad-channels``: channels with their law drawn per sample: 1 to 5 meandering bands at any
  angle (width 0.02-0.15, meander amplitude up to 0.25, up to 2.5 cycles across the square),
  log-uniform contrast 2-100 and scale, and for half the samples the inverse, barriers of low
  permeability. ``channels`` is one point of it (axis-aligned, a in {1, 10}).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from pdediff.physics.sources import Family, _lookup


def _spectrum(modes: int, alpha: float, tau: float) -> np.ndarray:
    k = np.arange(modes)
    spectrum = (np.pi**2 * (k[:, None] ** 2 + k[None, :] ** 2) + tau**2) ** (-alpha / 2)
    spectrum[0, 0] = 0.0  # zero mean
    return spectrum


def _gaussian_field(grid, rngs, modes: int, alpha: float, tau: float) -> np.ndarray:
    """Zero-mean GRF (see the module docstring) at the nodes, in units of its expected RMS.

    The scale s, s^2 = sum_k spectrum_k^2 c_k1 c_k2 (c_0 = 1, c_k = 1/2 the mean of cos^2), is the
    expected mean square over the square: it depends on the parameters only, so a generator gives
    the same continuous field at every N.
    """
    spectrum = _spectrum(modes, alpha, tau)
    c = np.where(np.arange(modes) == 0, 1.0, 0.5)
    scale = np.sqrt(np.sum(spectrum**2 * c[:, None] * c[None, :]))
    xi = np.stack([rng.standard_normal((modes, modes)) for rng in rngs])
    basis = np.cos(np.pi * grid.x[:, None] * np.arange(modes)[None, :])  # basis[i, k] = cos(k pi x_i)
    return basis @ (xi * (spectrum / scale)) @ basis.T


@dataclass(frozen=True)
class ThresholdField(Family):
    """Two-valued coefficient: ``high`` where the GRF is >= 0, ``low`` elsewhere (the FNO benchmark law)."""

    name: ClassVar[str] = "threshold"
    alpha: float = 2.0
    tau: float = 3.0
    high: float = 12.0
    low: float = 3.0
    modes: int = 32

    def __post_init__(self):
        for key in ("high", "low"):
            value = getattr(self, key)
            if not (isinstance(value, (int, float)) and 0 < value < np.inf):
                raise ValueError(f"{key}={value!r} is invalid; expected a finite coefficient value > 0")

    def sample(self, grid, rngs):
        psi = _gaussian_field(grid, rngs, self.modes, self.alpha, self.tau)
        return np.where(psi >= 0.0, float(self.high), float(self.low))


@dataclass(frozen=True)
class LogNormalField(Family):
    """a = exp(mu + sigma * GRF), the GRF in units of its expected RMS; a > 0 everywhere."""

    name: ClassVar[str] = "lognormal"
    alpha: float = 3.0
    tau: float = 3.0
    mu: float = 0.0
    sigma: float = 1.0
    modes: int = 24

    def sample(self, grid, rngs):
        psi = _gaussian_field(grid, rngs, self.modes, self.alpha, self.tau)
        return np.exp(self.mu + self.sigma * psi)


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(np.exp(rng.uniform(np.log(bounds[0]), np.log(bounds[1]))))


@dataclass(frozen=True)
class BroadThresholdField(Family):
    """Two-valued coefficient with per-sample law: ``a = low * contrast`` where the GRF (alpha, tau
    drawn per sample) is >= ``level`` (in units of its RMS), ``low`` elsewhere."""

    name: ClassVar[str] = "broad-threshold"
    alpha: tuple[float, float] = (1.5, 2.5)
    tau: tuple[float, float] = (2.0, 8.0)
    level: tuple[float, float] = (-0.5, 0.5)
    contrast: tuple[float, float] = (1.5, 200.0)
    low: tuple[float, float] = (0.1, 10.0)
    modes: int = 32

    def sample(self, grid, rngs):
        out = []
        for rng in rngs:
            alpha, tau, level = (rng.uniform(*self.alpha), rng.uniform(*self.tau), rng.uniform(*self.level))
            low = _log_uniform(rng, self.low)
            high = low * _log_uniform(rng, self.contrast)
            psi = _gaussian_field(grid, [rng], self.modes, alpha, tau)[0]
            out.append(np.where(psi >= level, high, low))
        return np.stack(out)


@dataclass(frozen=True)
class BroadLogNormalField(Family):
    """a = exp(mu + sigma * GRF) with mu, sigma, alpha and tau drawn per sample."""

    name: ClassVar[str] = "broad-lognormal"
    alpha: tuple[float, float] = (1.5, 3.5)
    tau: tuple[float, float] = (2.0, 6.0)
    mu: tuple[float, float] = (-2.0, 2.0)
    sigma: tuple[float, float] = (0.25, 2.0)
    modes: int = 32

    def sample(self, grid, rngs):
        out = []
        for rng in rngs:
            alpha, tau = rng.uniform(*self.alpha), rng.uniform(*self.tau)
            mu, sigma = rng.uniform(*self.mu), rng.uniform(*self.sigma)
            out.append(np.exp(mu + sigma * _gaussian_field(grid, [rng], self.modes, alpha, tau)[0]))
        return np.stack(out)


@dataclass(frozen=True)
class ChannelField(Family):
    """Meandering channels of ``high`` in a ``low`` background (see the module docstring)."""

    name: ClassVar[str] = "channels"
    high: float = 10.0
    low: float = 1.0
    count: tuple[int, int] = (2, 4)
    width: tuple[float, float] = (0.04, 0.1)

    def sample(self, grid, rngs):
        X, Y = np.meshgrid(grid.x, grid.x, indexing="xy")  # X varies along columns (x), Y along rows
        out = []
        for rng in rngs:
            inside = np.zeros(X.shape, dtype=bool)
            for _ in range(int(rng.integers(self.count[0], self.count[1] + 1))):
                along, across = (X, Y) if rng.random() < 0.5 else (Y, X)
                centre = rng.uniform(0.15, 0.85) + rng.uniform(0.05, 0.2) * np.sin(
                    2 * np.pi * rng.uniform(0.5, 2.0) * along + rng.uniform(0, 2 * np.pi))
                inside |= np.abs(across - centre) < rng.uniform(*self.width) / 2
            out.append(np.where(inside, float(self.high), float(self.low)))
        return np.stack(out)


@dataclass(frozen=True)
class BroadChannelField(Family):
    """Channels with their law drawn per sample: 1 to 5 meandering bands at any angle, of width,
    meander amplitude and wavelength drawn per band, ``low * contrast`` inside and ``low`` outside,
    or, for half the samples, the inverse (barriers of low permeability in a permeable background)."""

    name: ClassVar[str] = "broad-channels"
    count: tuple[int, int] = (1, 5)
    width: tuple[float, float] = (0.02, 0.15)
    amplitude: tuple[float, float] = (0.0, 0.25)
    cycles: tuple[float, float] = (0.0, 2.5)
    contrast: tuple[float, float] = (2.0, 100.0)
    low: tuple[float, float] = (0.1, 10.0)

    def sample(self, grid, rngs):
        X, Y = np.meshgrid(grid.x, grid.x, indexing="xy")
        out = []
        for rng in rngs:
            inside = np.zeros(X.shape, dtype=bool)
            for _ in range(int(rng.integers(self.count[0], self.count[1] + 1))):
                angle = rng.uniform(0.0, np.pi)
                along = (X - 0.5) * np.cos(angle) + (Y - 0.5) * np.sin(angle)
                across = -(X - 0.5) * np.sin(angle) + (Y - 0.5) * np.cos(angle)
                centre = rng.uniform(-0.35, 0.35) + rng.uniform(*self.amplitude) * np.sin(
                    2 * np.pi * rng.uniform(*self.cycles) * along + rng.uniform(0, 2 * np.pi))
                inside |= np.abs(across - centre) < rng.uniform(*self.width) / 2
            low = _log_uniform(rng, self.low)
            high = low * _log_uniform(rng, self.contrast)
            if rng.random() < 0.5:
                low, high = high, low
            out.append(np.where(inside, high, low))
        return np.stack(out)


COEFFICIENTS: dict[str, Family] = {
    "threshold": ThresholdField(),
    "lognormal": LogNormalField(),
    "broad-threshold": BroadThresholdField(),
    "broad-lognormal": BroadLogNormalField(),
    "channels": ChannelField(),
    "broad-channels": BroadChannelField(),
}


def get_coefficient(spec: str) -> Family:
    """Return the coefficient family named ``spec``, or a mixture for a comma list of names.

    Raises:
        ValueError: naming the unknown entry and the known names.
    """
    return _lookup(COEFFICIENTS, spec, "coefficient")
