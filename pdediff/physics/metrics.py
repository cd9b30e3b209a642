"""Error figures of a solution against a reference, per sample."""

from __future__ import annotations

import numpy as np

from pdediff.physics.problems.base import boundary_mask


def _flat(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(-1, a.shape[-2] * a.shape[-1])


def relative_l2(phi, ref) -> np.ndarray:
    """||phi - ref|| / ||ref|| per sample (absolute error where ref is zero)."""
    d, r = _flat(phi) - _flat(ref), _flat(ref)
    num, den = np.linalg.norm(d, axis=1), np.linalg.norm(r, axis=1)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), num)


def max_error(phi, ref) -> np.ndarray:
    """max |phi - ref| / max |ref| per sample."""
    d, r = np.abs(_flat(phi) - _flat(ref)), np.abs(_flat(ref))
    den = r.max(axis=1)
    return np.where(den > 0, d.max(axis=1) / np.where(den > 0, den, 1.0), d.max(axis=1))


def boundary_error(phi, g) -> np.ndarray:
    """max |phi - g| on the boundary ring per sample, relative to max |phi|."""
    p, g = np.asarray(phi, dtype=np.float64), np.asarray(g, dtype=np.float64)
    ring = boundary_mask(p.shape[-1])
    err = np.abs(p - g)[..., ring].reshape(-1, int(ring.sum())).max(axis=1)
    scale = np.abs(_flat(p)).max(axis=1)
    return np.where(scale > 0, err / np.where(scale > 0, scale, 1.0), err)


def seed_spread(runs, ref=None) -> np.ndarray:
    """Seed-to-seed spread per sample of ``runs`` (S seeds, B, N, N): the mean over seeds of
    ||phi_seed - mean|| / ||ref|| (``ref`` defaults to the mean over seeds)."""
    runs = np.asarray(runs, dtype=np.float64)
    if runs.ndim != 4 or len(runs) < 2:
        raise ValueError(f"runs has shape {runs.shape}; expected (seeds >= 2, B, N, N)")
    mean = runs.mean(axis=0)
    dev = np.stack([np.linalg.norm(_flat(r - mean), axis=1) for r in runs]).mean(axis=0)
    den = np.linalg.norm(_flat(mean if ref is None else ref), axis=1)
    return np.where(den > 0, dev / np.where(den > 0, den, 1.0), dev)


def report(problem, phi, fields: dict, ref=None) -> dict[str, np.ndarray]:
    """All figures for a batch: relative L2 and max error (with ``ref``), boundary error, residual."""
    names = problem.condition_fields
    out = {}
    if ref is not None:
        out["rel_l2"] = relative_l2(phi, ref)
        out["max_err"] = max_error(phi, ref)
    if problem.dirichlet_field is not None:
        out["boundary_err"] = boundary_error(phi, fields[problem.dirichlet_field])
    if problem.offers_residual:
        out["residual"] = np.atleast_1d(problem.relative_residual(phi, *(fields[k] for k in names)))
    return out


def auroc(higher, lower) -> float:
    """Area under the ROC curve of a score meant to be higher on ``higher`` than on ``lower``:
    the probability that a random member of the first scores above one of the second (ties count
    one half; the Mann-Whitney statistic). 1: perfect separation, 0.5: none."""
    a, b = np.asarray(higher, dtype=np.float64).ravel(), np.asarray(lower, dtype=np.float64).ravel()
    if not (a.size and b.size) or not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError(f"auroc needs finite scores in both groups; got {a.size} and {b.size} values")
    above = (a[:, None] > b[None, :]).sum() + 0.5 * (a[:, None] == b[None, :]).sum()
    return float(above / (a.size * b.size))
