"""Transfer node fields between node grids of the unit square (maths only).

Fields live on ``N x N`` node grids whose first and last rows and columns are the boundary
(``pdediff.physics.problems.base.Grid``, nodes at ``i / (N - 1)``), so every transfer maps corner nodes
onto corner nodes.

* :func:`restrict` (a source term, to a coarser grid) averages the fine values with the coarse
  grid's hat functions as weights (multigrid's full-weighting restriction, the normalised
  transpose of linear interpolation), so that a sharp source keeps its weight instead of being
  point-sampled away; the end nodes, shared by both grids, are injected. Second order when the
  fine grid refines the coarse one (M - 1 a multiple of n - 1); first order otherwise (the
  sampled weights' centroid is off by a few hundredths of the coarse spacing: errors of about
  1e-3 of a smooth source at n = 64, below the network's error in the solution). To a finer grid it interpolates linearly.
* :func:`prolong` (a smooth solution, to any grid) is the interpolating bicubic spline
  (SciPy's ``RectBivariateSpline``, not-a-knot ends: fourth order for smooth fields).
* :func:`transfer_ring` (Dirichlet data) interpolates each edge from that edge's values alone
  with a cubic spline; interior values are ignored and come back as zero.
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import CubicSpline, RectBivariateSpline


def _check(field, n):
    a = np.asarray(field, dtype=np.float64)
    if a.ndim < 2 or a.shape[-1] != a.shape[-2] or a.shape[-1] < 4:
        raise ValueError(f"field has shape {a.shape}; expected (..., N, N) with N >= 4")
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 4:
        raise ValueError(f"n={n!r} is invalid; expected an integer >= 4")
    return a


def _nodes(n: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, n)


def _linear(src: int, dst: int) -> np.ndarray:
    """(dst, src) matrix of linear interpolation between node grids of the unit interval."""
    h = 1.0 / (src - 1)
    return np.maximum(0.0, 1.0 - np.abs(_nodes(dst)[:, None] - _nodes(src)[None, :]) / h)


def restrict(field, n: int) -> np.ndarray:
    """A source field (..., M, M) on the (..., n, n) grid: hat-weighted averages when n < M."""
    a = _check(field, n)
    m = a.shape[-1]
    if m == n:
        return a.copy()
    if n > m:
        r = _linear(m, n)
    else:
        r = _linear(n, m).T
        r[[0, -1]] = 0.0  # the end nodes coincide: injection there (a truncated hat is off-centre)
        r[0, 0] = r[-1, -1] = 1.0
        r /= r.sum(axis=1, keepdims=True)
    return r @ a @ r.T


def prolong(field, n: int) -> np.ndarray:
    """A smooth field (..., m, m) on the (..., n, n) grid by the interpolating bicubic spline."""
    a = _check(field, n)
    m = a.shape[-1]
    if m == n:
        return a.copy()
    src, dst = _nodes(m), _nodes(n)
    flat = a.reshape(-1, m, m)
    out = np.stack([RectBivariateSpline(src, src, f, kx=3, ky=3, s=0)(dst, dst) for f in flat])
    return out.reshape(*a.shape[:-2], n, n)


def transfer_ring(field, n: int) -> np.ndarray:
    """Dirichlet data (..., M, M): its boundary ring on the (..., n, n) grid, edge by edge."""
    a = _check(field, n)
    m = a.shape[-1]
    src, dst = _nodes(m), _nodes(n)
    out = np.zeros((*a.shape[:-2], n, n))
    for index in (np.s_[..., 0, :], np.s_[..., -1, :], np.s_[..., :, 0], np.s_[..., :, -1]):
        out[index] = CubicSpline(src, a[index], axis=-1)(dst)
    return out
