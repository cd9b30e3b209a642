"""The coefficient of a variable-coefficient elliptic problem from observations of its solution.

Unknown: z = log a at every node, with a Gaussian prior ``z ~ N(mu, C)`` diagonal in the DCT-I
basis (:class:`pdediff.maths.gaussian.SpectralGaussian`, coefficients ``z_hat = T z``). Observations

    y_u = M u(exp z) + noise,      y_a = M' z + noise

(the solution at a few interior nodes; log a at others). The forward map is the exact sparse
solve; its Jacobian follows from the discrete residual R(u, z) = f - A(exp z) u = 0:

    du = A^-1 (dR/dz) dz,     so the row of node k is  J^T e_k = (dR/dz)^T A^-1 e_k,

one adjoint solve per observed node and one vector-Jacobian product of the residual (torch
autograd on the problem's own differentiable residual). Gauss-Newton in observation space,

    z_hat' = mu_hat + c * J^T alpha,   alpha = (J diag(c) J^T + diag(sigma_y^2))^-1 (y - F(z) + J (z_hat - mu_hat)),

is the MAP of the linearised problem at each iterate; steps are halved until the misfit falls.
At the MAP, Matheron's rule on the linearisation gives the Laplace approximation's draws, each
solved exactly. Maths only (NumPy float64, torch for the one vector-Jacobian product).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse.linalg as spla
import torch

from pdediff.maths.gaussian import SpectralGaussian, inverse, transform, transform_1d
from pdediff.maths.kriging import JITTER

#: Gauss-Newton iterations at most, and the relative change of the misfit below which they stop.
ITERATIONS = 30
TOLERANCE = 1e-6


def unit_modes_all(n: int, nodes: np.ndarray) -> np.ndarray:
    """(m, n^2): DCT-I coefficients of unit fields at flat node indices ``nodes``."""
    t1 = transform_1d(np.eye(n), "dct")
    i, j = np.divmod(np.asarray(nodes, dtype=np.int64), n)
    rows = t1[:, i].T[:, :, None] * t1[:, j].T[:, None, :]
    return rows.reshape(len(nodes), n * n)


@dataclass
class EllipticModel:
    """The forward map of one sample: ``problem`` (one with a coefficient), its source ``f`` and data ``g``."""

    problem: object
    f: np.ndarray
    g: np.ndarray

    def solve(self, z: np.ndarray):
        """``(u, lu)``: the exact solution for a = exp(z) (n, n), and the interior LU."""
        a = np.exp(z)
        n = a.shape[-1]
        lu = spla.splu(self.problem.operator(a))
        b = self.problem.rhs(a, self.f, self.g).reshape(-1)
        u = np.array(self.g, dtype=np.float64, copy=True)
        u[1:-1, 1:-1] = lu.solve(b).reshape(n - 2, n - 2)
        return u, lu

    def jacobian_rows(self, z: np.ndarray, u: np.ndarray, lu, nodes: np.ndarray) -> np.ndarray:
        """(m, n^2): d u[node] / d z for interior flat ``nodes``, by the adjoint (module docstring)."""
        n = z.shape[-1]
        m = len(nodes)
        if m == 0:
            return np.zeros((0, n * n))
        i, j = np.divmod(nodes, n)
        e = np.zeros(((n - 2) ** 2, m))
        e[(i - 1) * (n - 2) + (j - 1), np.arange(m)] = 1.0
        w = lu.solve(e).T.reshape(m, n - 2, n - 2)  # A symmetric: A^-T e_k = A^-1 e_k
        with torch.enable_grad():  # also inside a sampler's no_grad
            zt = torch.as_tensor(z, dtype=torch.float64).expand(m, n, n).clone().requires_grad_(True)
            ut = torch.as_tensor(u, dtype=torch.float64).expand(m, n, n)
            ft = torch.as_tensor(self.f, dtype=torch.float64).expand(m, n, n)
            gt = torch.as_tensor(self.g, dtype=torch.float64).expand(m, n, n)
            r, _ = self.problem.residual_terms(ut, zt.exp(), ft, gt)
            (grad,) = torch.autograd.grad((r * torch.as_tensor(w)).sum(), zt)
        return grad.reshape(m, n * n).numpy()


@dataclass
class Laplace:
    """The MAP of log a, its Laplace draws (exact solves each) and diagnostics."""

    z: np.ndarray
    u: np.ndarray
    z_draws: np.ndarray
    u_draws: np.ndarray
    loo: np.ndarray
    iterations: int
    #: sqrt(r^T S^-1 r / m) of the observations less the prior's prediction (linearised at the
    #: MAP): about 1 when the prior explains them, far above 1 for a law unlike the prior's
    prior_misfit: float = 0.0


def map_estimate(model: EllipticModel, prior: SpectralGaussian, u_nodes, u_values, z_nodes, z_values,
                 sigma_u: float, sigma_z: np.ndarray, rng: np.random.Generator, draws: int,
                 start: np.ndarray | None = None, iterations: int = ITERATIONS) -> Laplace:
    """Gauss-Newton MAP of z = log a given observations of u and of z; Laplace draws.

    Args:
        model: the forward map.
        prior: the prior of z (basis "dct").
        u_nodes, u_values: flat interior indices and values of observed u.
        z_nodes, z_values: flat indices and values of observed log a.
        sigma_u: the noise sd of u's observations; sigma_z: of log a's (per node).
        rng: for the draws.
        draws: Laplace draws.
        start: the first iterate (None: the prior mean).
    """
    n = prior.n
    c = prior.variance.reshape(-1)
    mu = transform(prior.mean, "dct").reshape(-1)
    a_z = unit_modes_all(n, z_nodes)
    y = np.concatenate([u_values, z_values])
    sy2 = np.concatenate([np.full(len(u_nodes), float(sigma_u) ** 2), np.broadcast_to(sigma_z, len(z_nodes)) ** 2])
    zh = mu.copy() if start is None else transform(start, "dct").reshape(-1)

    def forward(zh):
        z = inverse(zh.reshape(n, n), "dct")
        u, lu = model.solve(z)
        pred = np.concatenate([u.reshape(-1)[u_nodes], z.reshape(-1)[z_nodes]])
        return z, u, lu, pred

    def rows(z, u, lu):
        j_u = model.jacobian_rows(z, u, lu, u_nodes)
        j_u = transform(j_u.reshape(-1, n, n), "dct").reshape(len(u_nodes), n * n)  # d/dz_hat = T d/dz
        return np.concatenate([j_u, a_z])

    def merit(pred, zh):
        misfit = (y - pred) ** 2
        prior_term = float(((zh - mu) ** 2 / c).sum())
        if np.all(sy2 > 0):
            return float((misfit / sy2).sum()) + prior_term
        return float(misfit.sum())  # exact observations: the misfit alone

    z, u, lu, pred = forward(zh)
    value = merit(pred, zh)
    done = 0
    for done in range(1, iterations + 1):
        jac = rows(z, u, lu)
        s = (jac * c) @ jac.T
        s[np.diag_indices_from(s)] += sy2 + JITTER * max(float(np.mean(np.diag(s))), 1e-300)
        chol = scipy.linalg.cho_factor(s, lower=True, check_finite=False)
        alpha = scipy.linalg.cho_solve(chol, y - pred + jac @ (zh - mu), check_finite=False)
        step = mu + c * (jac.T @ alpha) - zh
        t = 1.0
        while t > 1e-3:
            trial = zh + t * step
            try:
                z_t, u_t, lu_t, pred_t = forward(trial)
            except (RuntimeError, ValueError, FloatingPointError):
                t *= 0.5
                continue
            v = merit(pred_t, trial)
            if np.isfinite(v) and v < value:
                break
            t *= 0.5
        else:
            break
        gain = (value - v) / max(value, 1e-300)
        zh, z, u, lu, pred, value = trial, z_t, u_t, lu_t, pred_t, v
        if gain < TOLERANCE:
            break
    jac = rows(z, u, lu)
    s = (jac * c) @ jac.T
    s[np.diag_indices_from(s)] += sy2 + JITTER * max(float(np.mean(np.diag(s))), 1e-300)
    chol = scipy.linalg.cho_factor(s, lower=True, check_finite=False)
    # leave-one-out on the linearisation at the MAP (standardised residuals)
    loo = np.zeros(0)
    prior_misfit = 0.0
    if draws:
        inv = scipy.linalg.cho_solve(chol, np.eye(len(y)), check_finite=False)
        resid = y - pred + jac @ (zh - mu)  # the observations less the prior mean, linearised at the MAP
        alpha = inv @ resid
        loo = alpha / np.sqrt(np.diag(inv))
        prior_misfit = float(np.sqrt(max(float(resid @ alpha), 0.0) / len(y)))
    xi = np.sqrt(c) * rng.standard_normal((draws, len(c)))
    sim = xi @ jac.T + np.sqrt(sy2) * rng.standard_normal((draws, len(y)))
    beta = scipy.linalg.cho_solve(chol, sim.T, check_finite=False).T
    z_draws = inverse((zh + xi - c * (beta @ jac)).reshape(draws, n, n), "dct")
    u_draws = np.stack([model.solve(zd)[0] for zd in z_draws]) if draws else np.zeros((0, n, n))
    return Laplace(z, u, z_draws, u_draws, loo, done, prior_misfit)
