"""Kriging through a linear PDE: the exact Gaussian posterior of a source and its solution.

For a linear problem whose interior operator is diagonal in the DST-I basis (a constant-
coefficient 5-point operator, shifted or not: eigenvalues ``lam``), the solution is

    phi = G rho + E g,     G = T^T diag(1 / lam) T,

with ``T`` the orthonormal DST-I of the interior, ``E`` the lift of the Dirichlet data (the
solution of the problem with zero source and data ``g`` on the ring) and ``g`` the ring's values.
Observations of phi and of rho at a few nodes are linear in the source's modes ``rho_hat = T
rho`` and in ``g``:

    y = A rho_hat + B g + noise,   A = rows of T / lam (phi) or of T (rho),   B = rows of E.

With the Gaussian priors ``rho_hat ~ N(T mu, diag(c))`` and ``g ~ N(mu_g, C_g)``
(:mod:`pdediff.maths.gaussian`), the posterior is closed-form (a Bayesian linear inverse problem):

    S = A diag(c) A^T + B C_g B^T + diag(sigma_y^2),    alpha = S^-1 (y - A T mu - B mu_g),
    rho_hat | y has mean  T mu + c * (A^T alpha),     g | y has mean mu_g + C_g B^T alpha,

and S is m x m for m observations. The same update conditions a diffusion model's Tweedie
estimate D of the source, with the prior ``N(T D, diag(c_t))`` of x0 given the noisy state
(:mod:`pdediff.solver.observations`). Every field this module returns satisfies the discrete PDE to
round-off: the solution is always computed from the source by the exact spectral solve.

Maths only (NumPy, float64).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from pdediff.maths.gaussian import DenseGaussian, SpectralGaussian, inverse, transform, transform_1d

#: The relative jitter added to S's diagonal (times its mean diagonal) so that the Cholesky
#: factorisation of exact, strongly correlated observations stays stable.
JITTER = 1e-10

#: The most observations of one sample that the dense m x m system is built for (a Cholesky
#: factorisation of 6,000 rows: about 290 MB and 10-20 s on a 2-core CPU); ``reconstruct``
#: refuses more with a ValueError that says so. A source observed wherever it acts does not count:
#: it is substituted exactly.
DENSE_MAX = 6000


def ring_nodes(n: int) -> np.ndarray:
    """Flat indices (row-major) of the boundary ring of an n x n grid, in increasing order."""
    mask = np.zeros((n, n), dtype=bool)
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = True
    return np.flatnonzero(mask.ravel())


def unit_modes(n: int, nodes: np.ndarray) -> np.ndarray:
    """(m, (n-2)^2): the DST-I coefficients of unit fields at flat node indices ``nodes`` (zero
    rows for ring nodes), from the separable 1-D transform."""
    t1 = transform_1d(np.eye(n - 2), "dst")  # symmetric: t1[k, i] is mode k at interior node i
    i, j = np.divmod(np.asarray(nodes, dtype=np.int64), n)
    inside = (i > 0) & (i < n - 1) & (j > 0) & (j < n - 1)
    ii, jj = np.clip(i - 1, 0, n - 3), np.clip(j - 1, 0, n - 3)
    rows = t1[:, ii].T[:, :, None] * t1[:, jj].T[:, None, :]
    rows[~inside] = 0.0
    return rows.reshape(len(nodes), (n - 2) ** 2)


@dataclass
class LinearModel:
    """A spectral linear problem with Gaussian priors: ``phi = G rho + E g``.

    Attributes:
        eigenvalues: (n-2, n-2) eigenvalues of the interior operator in the DST-I basis.
        lift: (r, n, n) the solution of each unit ring value (zero source), r = 4 (n - 1),
            ring nodes in the order of :func:`ring_nodes`.
        source: the source's prior (basis "dst").
        ring: the Dirichlet data's prior on the ring (None: the data are known, ``g_known``).
        g_known: (n, n) known Dirichlet data (used when ``ring`` is None).
    """

    eigenvalues: np.ndarray
    lift: np.ndarray
    source: SpectralGaussian
    ring: DenseGaussian | None = None
    g_known: np.ndarray | None = None

    @property
    def n(self) -> int:
        return self.eigenvalues.shape[-1] + 2

    def solution(self, rho: np.ndarray, g_ring: np.ndarray) -> np.ndarray:
        """phi (..., n, n) of sources (..., n, n) and ring values (..., r): the exact solve."""
        phi = inverse(transform(rho, "dst") / self.eigenvalues, "dst")
        return phi + np.tensordot(g_ring, self.lift, axes=(-1, 0))

    def ring_values(self, g: np.ndarray) -> np.ndarray:
        """The ring values (..., r) of a full (..., n, n) field."""
        return g.reshape(g.shape[:-2] + (-1,))[..., ring_nodes(self.n)]

    def rows(self, phi_nodes: np.ndarray, rho_nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(A, B)``: observation rows on the source's modes (m, (n-2)^2) and the ring (m, r)
        for observations of phi at ``phi_nodes`` then of rho at ``rho_nodes`` (flat indices)."""
        lam = self.eigenvalues.reshape(-1)
        a_phi = unit_modes(self.n, phi_nodes) / lam
        a_rho = unit_modes(self.n, rho_nodes)
        lift = self.lift.reshape(len(self.lift), -1)
        b = np.concatenate([lift[:, phi_nodes].T, np.zeros((len(rho_nodes), len(lift)))])
        return np.concatenate([a_phi, a_rho]), b

    def ring_prior(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mu_g, C_g)`` on the ring (C_g = 0 for known data)."""
        r = len(self.lift)
        if self.ring is None:
            g = np.zeros(r) if self.g_known is None else self.ring_values(self.g_known)
            return g, np.zeros((r, r))
        return self.ring.mean, self.ring.cov


def factor(a: np.ndarray, b: np.ndarray, variance: np.ndarray, ring_cov: np.ndarray, sigma_y2: np.ndarray):
    """Cholesky factor of S = A diag(c) A^T + B C_g B^T + diag(sigma_y^2) (+ jitter)."""
    s = (a * variance.reshape(-1)) @ a.T
    if ring_cov.any():
        s += b @ ring_cov @ b.T
    s[np.diag_indices_from(s)] += sigma_y2 + JITTER * max(float(np.mean(np.diag(s))), 1e-300)
    return scipy.linalg.cho_factor(s, lower=True, check_finite=False)


def condition(a, b, y, sigma_y2, mean_modes, variance, mu_g, ring_cov, chol=None):
    """The posterior means given observations y (m,), or (K, m) one set per prior, of K priors
    with means ``mean_modes`` (K, M) and a common spectrum ``variance`` (M,): ``(modes (K, M), ring (K, r), alpha (K, m),
    chol)`` (see the module docstring)."""
    variance = variance.reshape(-1)
    if chol is None:
        chol = factor(a, b, variance, ring_cov, sigma_y2)
    resid = np.atleast_2d(y) - mean_modes @ a.T - (b @ mu_g)[None, :]
    alpha = scipy.linalg.cho_solve(chol, resid.T, check_finite=False).T
    modes = mean_modes + variance * (alpha @ a)
    ring = mu_g[None, :] + (alpha @ b) @ ring_cov
    return modes, ring, alpha, chol


@dataclass
class Posterior:
    """The Gaussian posterior of one sample: means, per-node standard deviations, draws and
    leave-one-out residuals of the observations in standard-deviation units."""

    rho: np.ndarray
    phi: np.ndarray
    g: np.ndarray
    rho_std: np.ndarray
    phi_std: np.ndarray
    rho_draws: np.ndarray
    phi_draws: np.ndarray
    g_draws: np.ndarray
    loo: np.ndarray
    amplitude: float = 1.0


def prior_amplitude(a, b, resid, variance, ring_cov, sigma_y2) -> float:
    """The factor s of the prior's standard deviations that maximises the marginal likelihood
    of the observations, y - E[y] ~ N(0, s^2 K + diag(sigma_y^2)), K = A diag(c) A^T + B C_g B^T.

    Exact observations: s^2 = r^T K^-1 r / m in closed form. Noisy ones: a 1-D search on the
    eigenvalues of K (equal noise) or of the noise-whitened K.
    """
    k = (a * variance.reshape(-1)) @ a.T
    if ring_cov.any():
        k += b @ ring_cov @ b.T
    m = len(resid)
    if not np.any(sigma_y2 > 0):
        chol = factor(a, b, variance, ring_cov, np.zeros(m))
        s2 = float(resid @ scipy.linalg.cho_solve(chol, resid, check_finite=False)) / m
        return float(np.sqrt(max(s2, 1e-300)))
    w = 1.0 / np.sqrt(np.maximum(sigma_y2, 1e-300))
    lam, vec = np.linalg.eigh(w[:, None] * k * w[None, :])
    lam = np.maximum(lam, 0.0)
    r2 = (vec.T @ (w * resid)) ** 2

    def negative_log_likelihood(log_s2):
        d = np.exp(log_s2) * lam + 1.0
        return 0.5 * float(np.sum(np.log(d) + r2 / d))

    from scipy.optimize import minimize_scalar

    best = minimize_scalar(negative_log_likelihood, bounds=(-60.0, 60.0), method="bounded")
    return float(np.exp(0.5 * best.x))


def krige(model: LinearModel, phi_nodes, phi_values, rho_nodes, rho_values, sigma_y: float,
          rng: np.random.Generator, draws: int, fit_amplitude: bool = True) -> Posterior:
    """The exact posterior of the linear-Gaussian model given observations (one sample).

    Args:
        model: the problem and priors.
        phi_nodes, phi_values: flat indices and values of observed phi (ring nodes observe g).
        rho_nodes, rho_values: the same for rho (interior nodes).
        sigma_y: the observations' noise standard deviation (0: exact).
        rng: for the posterior draws (Matheron's rule: a prior draw corrected by the update of
            its own simulated observations), each an exact solution of the PDE.
        draws: how many.
        fit_amplitude: scale the prior covariance by the amplitude that maximises the
            observations' marginal likelihood (:func:`prior_amplitude`; type-II maximum
            likelihood). With exact observations it leaves the mean unchanged and sets the
            spread; a law that is a mixture of scales (a source of random strength) is then
            calibrated sample by sample.
    """
    n = model.n
    m_size = (n - 2) ** 2
    ring = ring_nodes(n)
    known_ring = model.ring is None
    if known_ring:  # the ring of phi is the data: no information there
        keep = ~np.isin(phi_nodes, ring)
        phi_nodes, phi_values = phi_nodes[keep], phi_values[keep]
    mean = transform(model.source.mean, "dst").reshape(-1)
    variance = model.source.variance.reshape(-1).copy()
    rho_whole = len(rho_nodes) == m_size and sigma_y == 0
    if rho_whole:  # the source is known exactly: condition by substitution
        full = np.zeros(n * n)
        full[rho_nodes] = rho_values
        mean = transform(full.reshape(n, n), "dst").reshape(-1)
        variance = np.zeros_like(variance)
        rho_nodes, rho_values = rho_nodes[:0], rho_values[:0]
    mu_g, cov_g = model.ring_prior()
    a, b = model.rows(phi_nodes, rho_nodes)
    y = np.concatenate([phi_values, rho_values])
    m = len(y)
    sy2 = np.full(m, float(sigma_y) ** 2)
    lam = model.eigenvalues.reshape(-1)
    amplitude = 1.0
    if m and fit_amplitude:
        amplitude = prior_amplitude(a, b, y - a @ mean - b @ mu_g, variance, cov_g, sy2)
        variance, cov_g = variance * amplitude**2, cov_g * amplitude**2
    if m == 0:
        chol = None
        modes, g_ring, alpha = mean[None], mu_g[None], np.zeros((1, 0))
    else:
        modes, g_ring, alpha, chol = condition(a, b, y, sy2, mean[None], variance, mu_g, cov_g)
    rho = inverse(modes[0].reshape(n - 2, n - 2), "dst")
    phi = model.solution(rho, g_ring[0])
    # per-node variances: prior minus the explained part, through the m cross-covariance fields
    rho_var = model.source.node_variance(variance.reshape(n - 2, n - 2))
    phi_var = model.source.node_variance((variance / lam**2).reshape(n - 2, n - 2))
    lift = model.lift.reshape(len(model.lift), -1)
    phi_var = phi_var + np.einsum("rk,rs,sk->k", lift, cov_g, lift).reshape(n, n)
    if m:
        cross_rho = inverse((variance * a).reshape(m, n - 2, n - 2), "dst").reshape(m, -1)
        cross_phi = inverse((variance / lam * a).reshape(m, n - 2, n - 2), "dst").reshape(m, -1)
        cross_phi = cross_phi + (b @ cov_g) @ lift
        lower = chol[0]
        v_rho = scipy.linalg.solve_triangular(lower, cross_rho, lower=True, check_finite=False)
        v_phi = scipy.linalg.solve_triangular(lower, cross_phi, lower=True, check_finite=False)
        rho_var = rho_var - (v_rho**2).sum(0).reshape(n, n)
        phi_var = phi_var - (v_phi**2).sum(0).reshape(n, n)
        # leave-one-out: residual alpha_k / [S^-1]_kk over the predictive sd 1 / sqrt([S^-1]_kk)
        inv_diag = np.diag(scipy.linalg.cho_solve(chol, np.eye(m), check_finite=False))
        loo = alpha[0] / np.sqrt(inv_diag)
    else:
        loo = np.zeros(0)
    # draws: prior draws of (modes, ring), each moved by the update of its own observations
    xi = rng.standard_normal((draws, m_size))
    prior_modes = mean + np.sqrt(variance) * xi
    prior_ring = (mu_g + rng.standard_normal((draws, len(mu_g))) @ _root(cov_g).T) if cov_g.any() \
        else np.repeat(mu_g[None], draws, 0)
    if m:
        sim = prior_modes @ a.T + prior_ring @ b.T + np.sqrt(sy2) * rng.standard_normal((draws, m))
        beta = scipy.linalg.cho_solve(chol, (y[None] - sim).T, check_finite=False).T
        prior_modes = prior_modes + variance * (beta @ a)
        prior_ring = prior_ring + (beta @ b) @ cov_g
    rho_draws = inverse(prior_modes.reshape(draws, n - 2, n - 2), "dst")
    phi_draws = model.solution(rho_draws, prior_ring)
    g_draws = np.zeros((draws, n * n))
    g_draws[:, ring] = prior_ring
    g_full = np.zeros(n * n)
    g_full[ring] = g_ring[0]
    return Posterior(rho, phi, g_full.reshape(n, n), np.sqrt(np.maximum(rho_var, 0.0)),
                     np.sqrt(np.maximum(phi_var, 0.0)), rho_draws, phi_draws, g_draws.reshape(draws, n, n), loo,
                     amplitude)


def _root(cov: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(cov)
    return v * np.sqrt(np.maximum(w, 0.0))
