"""Gaussian priors of fields: stationary covariances diagonal in a sine or cosine basis.

A field law is approximated by N(mu, C) with C diagonal in an orthonormal transform T:

    C = T^T diag(c) T,     c_k = E[(T (x - mu))_k^2]   (its power spectrum),

* ``"dst"`` (type-I sine transform of the interior nodes): fields that vanish on the boundary
  ring, e.g. sources, whose Dirichlet Laplacian is diagonal in the same basis;
* ``"dct"`` (type-I cosine transform of every node): fields at every node, e.g. log a.

Both transforms are orthonormal and self-inverse (``norm="ortho"``). This is the textbook
prior of a Bayesian linear inverse problem (kriging with a stationary covariance); conditioned
on linear observations it is the exact posterior of Gaussian data (:mod:`pdediff.maths.kriging`).

:class:`DenseGaussian` holds a small field (the boundary ring's Dirichlet data) with a full
covariance. Maths only: NumPy in, NumPy out; randomness is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft

#: Basis name -> (forward transform, inverse transform) on (..., n, n) arrays (the whole array
#: given; "dst" acts on the interior nodes and leaves zeros on the ring).
BASES = ("dst", "dct")

#: The smallest variance of a mode relative to the largest: fitted spectra of smooth laws fall
#: to round-off, and a conditioning step must not divide by zero.
VARIANCE_FLOOR = 1e-12


def transform(x: np.ndarray, basis: str) -> np.ndarray:
    """Coefficients of fields x (..., n, n): (..., n-2, n-2) for "dst", (..., n, n) for "dct"."""
    if basis == "dst":
        return scipy.fft.dstn(np.asarray(x, dtype=np.float64)[..., 1:-1, 1:-1], type=1, axes=(-2, -1), norm="ortho")
    return scipy.fft.dctn(np.asarray(x, dtype=np.float64), type=1, axes=(-2, -1), norm="ortho")


def inverse(coeff: np.ndarray, basis: str) -> np.ndarray:
    """Fields (..., n, n) of coefficients (the inverse of :func:`transform`)."""
    if basis == "dst":
        inner = scipy.fft.idstn(coeff, type=1, axes=(-2, -1), norm="ortho")
        out = np.zeros(coeff.shape[:-2] + (coeff.shape[-2] + 2, coeff.shape[-1] + 2))
        out[..., 1:-1, 1:-1] = inner
        return out
    return scipy.fft.idctn(coeff, type=1, axes=(-2, -1), norm="ortho")


@dataclass
class SpectralGaussian:
    """N(mean, T^T diag(variance) T) on (n, n) fields (see the module docstring).

    Attributes:
        mean: (n, n) mean field (zero on the ring for "dst").
        variance: per-mode variances, (n-2, n-2) for "dst", (n, n) for "dct".
        basis: ``"dst"`` or ``"dct"``.
    """

    mean: np.ndarray
    variance: np.ndarray
    basis: str

    @classmethod
    def fit(cls, samples: np.ndarray, basis: str) -> "SpectralGaussian":
        """The mean and per-mode variance of samples (S, n, n) of a law."""
        if basis not in BASES:
            raise ValueError(f"basis={basis!r} is unknown; expected one of {BASES}")
        x = np.asarray(samples, dtype=np.float64)
        if x.ndim != 3 or len(x) < 2:
            raise ValueError(f"samples has shape {x.shape}; expected (S, n, n) with S >= 2")
        mean = x.mean(axis=0)
        if basis == "dst":
            mean[0, :] = mean[-1, :] = mean[:, 0] = mean[:, -1] = 0.0
        variance = (transform(x - mean, basis) ** 2).mean(axis=0)
        variance = np.maximum(variance, VARIANCE_FLOOR * max(float(variance.max()), 1e-300))
        return cls(mean, variance, basis)

    @property
    def n(self) -> int:
        return self.mean.shape[-1]

    def scaled(self, factor: float) -> "SpectralGaussian":
        """The law of ``factor * x``."""
        return SpectralGaussian(self.mean * factor, self.variance * factor**2, self.basis)

    def apply(self, v: np.ndarray, variance: np.ndarray | None = None) -> np.ndarray:
        """C v for fields v (..., n, n) (``variance``: another spectrum in the same basis)."""
        variance = self.variance if variance is None else variance
        return inverse(variance * transform(v, self.basis), self.basis)

    def node_variance(self, variance: np.ndarray | None = None) -> np.ndarray:
        """diag(C) as an (n, n) field: sum_k c_k T_k(node)^2 (separable transforms)."""
        variance = self.variance if variance is None else variance
        m = variance.shape[-1]
        basis = np.eye(m)
        t = transform_1d(basis, self.basis)  # t[k, i]: mode k at node i
        inner = (t**2).T @ variance @ (t**2)
        if self.basis == "dst":
            out = np.zeros((m + 2, m + 2))
            out[1:-1, 1:-1] = inner
            return out
        return inner

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """``count`` draws (count, n, n)."""
        xi = rng.standard_normal((count,) + self.variance.shape)
        return self.mean + inverse(np.sqrt(self.variance) * xi, self.basis)

    def tweedie_variance(self, sigma: float) -> np.ndarray:
        """Spectrum of Cov[x0 | x0 + sigma z] = (C^-1 + sigma^-2 I)^-1: c sigma^2 / (c + sigma^2)."""
        return self.variance * sigma**2 / (self.variance + sigma**2)

    def denoise(self, x: np.ndarray, sigma: float) -> np.ndarray:
        """E[x0 | x0 + sigma z = x]: the exact denoiser of this law (Tweedie's formula)."""
        return self.mean + self.apply(x - self.mean, self.variance / (self.variance + sigma**2))


def transform_1d(x: np.ndarray, basis: str) -> np.ndarray:
    """The 1-D orthonormal transform along the last axis (the separable factor of the 2-D one)."""
    if basis == "dst":
        return scipy.fft.dst(x, type=1, axis=-1, norm="ortho")
    return scipy.fft.dct(x, type=1, axis=-1, norm="ortho")


@dataclass
class DenseGaussian:
    """N(mean, cov) on vectors (the nodes of a small field such as the boundary ring)."""

    mean: np.ndarray
    cov: np.ndarray

    @classmethod
    def fit(cls, samples: np.ndarray) -> "DenseGaussian":
        """Sample mean and covariance of (S, r) vectors (a floor keeps it positive definite)."""
        x = np.asarray(samples, dtype=np.float64)
        mean = x.mean(axis=0)
        d = x - mean
        cov = d.T @ d / max(len(x) - 1, 1)
        cov = 0.5 * (cov + cov.T)
        cov += np.eye(len(mean)) * VARIANCE_FLOOR * max(float(np.trace(cov)) / len(mean), 1e-300)
        return cls(mean, cov)

    def scaled(self, factor: float) -> "DenseGaussian":
        return DenseGaussian(self.mean * factor, self.cov * factor**2)

    @property
    def is_zero(self) -> bool:
        """A law of one value (zero Dirichlet data): nothing to infer."""
        return float(np.trace(self.cov)) <= VARIANCE_FLOOR * 10 * max(float(np.abs(self.mean).max(initial=0)), 1e-300) \
            or float(np.trace(self.cov)) < 1e-280

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray:
        w, v = np.linalg.eigh(self.cov)
        root = v * np.sqrt(np.maximum(w, 0.0))
        return self.mean + rng.standard_normal((count, len(self.mean))) @ root.T
