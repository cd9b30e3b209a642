"""Tests of pdediff.physics.problems.helmholtz: Poisson limit, DST against LU, manufactured-solution
convergence, iterative methods on the indefinite operator, singular and invalid wavenumbers."""

import dataclasses
import re

import numpy as np
import pytest

from pdediff.physics.problems import Grid
from pdediff.physics.problems.helmholtz import Helmholtz, shifted_laplacian_preconditioner
from pdediff.physics.problems.poisson import Poisson, _dst_eigenvalues

HELMHOLTZ = Helmholtz(k=8.0)
POISSON = Poisson()
SIZES = (17, 33, 65, 129)


def manufactured(n, k, boundary):
    """u = sin(pi x) sin(2 pi y) (+ the harmonic e^x sin(y)), f = -lap(u) - k^2 u, g = u on the ring."""
    x, y = Grid(n).mesh()
    s = np.sin(np.pi * x) * np.sin(2 * np.pi * y)
    u, f = s, (5 * np.pi**2 - k**2) * s
    if boundary:
        w = np.exp(x) * np.sin(y)
        u, f = u + w, f - k**2 * w
    g = np.where(Grid(n).boundary_mask, u, 0.0)
    return u, f, g


def fitted_order(errors, sizes=SIZES):
    h = 1.0 / (np.array(sizes) - 1.0)
    return np.polyfit(np.log(h), np.log(errors), 1)[0]


@pytest.mark.parametrize("solver", ["fast_solve", "reference_solve"])
@pytest.mark.parametrize("boundary", [False, True], ids=["zero_g", "nonzero_g"])
def test_second_order_convergence(solver, boundary):
    errors = []
    for n in SIZES:
        u, f, g = manufactured(n, HELMHOLTZ.k, boundary)
        errors.append(np.abs(getattr(HELMHOLTZ, solver)(f, g) - u).max())
    order = fitted_order(errors)
    pairwise = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert abs(order - 2.0) < 0.15, (order, pairwise, errors)
    assert np.all(np.abs(pairwise - 2.0) < 0.15), pairwise


def test_zero_wavenumber_is_poisson():
    zero = Helmholtz(k=0)
    assert zero.k == 0.0 and isinstance(zero.k, float)
    rng = np.random.default_rng(0)
    f, g = rng.standard_normal((2, 3, 33, 33))
    assert abs(zero.operator(33) - POISSON.operator(33)).max() == 0.0
    for solver in ("fast_solve", "reference_solve"):
        ref = getattr(POISSON, solver)(f, g)
        np.testing.assert_allclose(getattr(zero, solver)(f, g), ref, rtol=0, atol=1e-13 * np.abs(ref).max())
    np.testing.assert_allclose(zero.residual(ref, f, g), POISSON.residual(ref, f, g), rtol=0,
                               atol=1e-12 * np.abs(f).max() * 33**2)
    u, iters = zero.iterative_solve(np.zeros_like(f), f, g, maxiter=500, rtol=1e-10, method="amg")
    np.testing.assert_allclose(u, ref, atol=1e-8 * np.abs(ref).max())


@pytest.mark.parametrize("shape", [(33, 33), (3, 33, 33)])
def test_fast_and_reference_solves_agree(shape):
    rng = np.random.default_rng(1)
    f, g = rng.standard_normal(shape), rng.standard_normal(shape)
    fast, ref = HELMHOLTZ.fast_solve(f, g), HELMHOLTZ.reference_solve(f, g)
    assert fast.shape == ref.shape == shape
    assert np.abs(fast - ref).max() <= 1e-10 * np.abs(ref).max()
    ring = Grid(33).boundary_mask
    np.testing.assert_array_equal(fast[..., ring], g[..., ring])


def test_reference_solution_residual_is_round_off():
    rng = np.random.default_rng(2)
    f, g = rng.standard_normal((2, 2, 33, 33))
    u = HELMHOLTZ.reference_solve(f, g)
    assert HELMHOLTZ.relative_residual(u, f, g).max() < 1e-12
    res = HELMHOLTZ.residual(u, f, g)
    assert res.shape == f.shape
    assert np.abs(res).max() < 1e-9 * np.abs(f).max() * 33**2
    op = HELMHOLTZ.operator(33)
    interior = u.copy()
    interior[:, Grid(33).boundary_mask] = 0.0
    np.testing.assert_allclose(op @ interior[0, 1:-1, 1:-1].ravel(), HELMHOLTZ.apply(interior[0]).ravel(),
                               rtol=1e-12, atol=1e-9)
    # the ring of f and the interior of g are ignored
    ring = Grid(33).boundary_mask
    f2, g2 = f.copy(), g.copy()
    f2[:, ring] += 1.0
    g2[:, ~ring] -= 1.0
    np.testing.assert_array_equal(HELMHOLTZ.reference_solve(f2, g2), u)


def test_residual_terms_numpy_and_torch_agree():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    f, g = rng.standard_normal((2, 2, 17, 17))
    g[:, 1:-1, 1:-1] = 0.0
    u = HELMHOLTZ.fast_solve(f, g)
    r, b = HELMHOLTZ.residual_terms(u, f, g)
    assert np.abs(r).max() < 1e-10 * np.abs(b).max()
    np.testing.assert_allclose(b, HELMHOLTZ.rhs(f, g), rtol=1e-14, atol=1e-12)
    v = rng.standard_normal(u.shape)
    tv = torch.tensor(v, requires_grad=True)
    rt, bt = HELMHOLTZ.residual_terms(tv, torch.tensor(f), torch.tensor(g))
    rn, bn = HELMHOLTZ.residual_terms(v, f, g)
    np.testing.assert_allclose(rt.detach().numpy(), rn, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(bt.numpy(), bn, rtol=1e-12, atol=1e-12)
    (rt**2).sum().backward()
    assert tv.grad is not None and torch.isfinite(tv.grad).all()
    np.testing.assert_allclose(HELMHOLTZ.residual(v, f, g)[:, 1:-1, 1:-1], rn, rtol=1e-12, atol=1e-12)


def test_operator_at_k8_is_indefinite_so_cg_is_not_offered():
    lam = np.linalg.eigvalsh(HELMHOLTZ.operator(17).toarray())
    assert lam.min() < 0 < lam.max()
    np.testing.assert_allclose(np.sort(lam), np.sort(HELMHOLTZ.eigenvalues(17).ravel()), rtol=1e-10, atol=1e-9)
    assert 8.0**2 > 2 * np.pi**2
    assert set(HELMHOLTZ.iterative_methods) == {"minres", "gmres", "amg"}


@pytest.mark.parametrize("method", ["minres", "gmres", "amg"])
def test_iterative_solve_reaches_the_reference(method):
    rng = np.random.default_rng(4)
    n = 65
    f, g = rng.normal(size=(2, 2, n, n))
    ref = HELMHOLTZ.reference_solve(f, g)
    u, iters = HELMHOLTZ.iterative_solve(np.zeros_like(f), f, g, maxiter=5000, rtol=1e-8, method=method)
    assert iters.shape == (2,) and np.all(iters > 0)
    assert HELMHOLTZ.relative_residual(u, f, g).max() <= 1e-8 * (1 + 1e-6)
    np.testing.assert_allclose(u, ref, atol=1e-6 * np.abs(ref).max())
    # the shifted-Laplacian V-cycle: a few dozen iterations where MINRES alone needs ~ 4 N
    assert np.all(iters <= 40) if method in ("gmres", "amg") else np.all(iters >= 2 * n)
    _, none = HELMHOLTZ.iterative_solve(ref, f, g, maxiter=50, rtol=1e-8, method=method)
    _, three = HELMHOLTZ.iterative_solve(np.zeros_like(f), f, g, maxiter=3, rtol=0.0, method=method)
    assert np.all(none == 0) and np.all(three == 3)
    u1, it1 = HELMHOLTZ.iterative_solve(np.zeros((n, n)), f[0], g[0], maxiter=5000, rtol=1e-8, method=method)
    assert it1.shape == () and int(it1) == iters[0]
    np.testing.assert_allclose(u1, u[0], rtol=0, atol=1e-12 * np.abs(ref).max())


def test_iterative_solve_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"method='cg' is unknown; expected one of \['amg', 'gmres', 'minres'\]"):
        HELMHOLTZ.iterative_solve(np.zeros((9, 9)), np.ones((9, 9)), method="cg")
    for kw, match in ((dict(maxiter=-1), r"maxiter=-1 is invalid"), (dict(maxiter=2.5), r"maxiter=2.5"),
                      (dict(rtol=-1.0), r"rtol=-1.0 is invalid"), (dict(rtol="x"), r"rtol='x'")):
        with pytest.raises(ValueError, match=match):
            HELMHOLTZ.iterative_solve(np.zeros((9, 9)), np.ones((9, 9)), **kw)
    m = shifted_laplacian_preconditioner(17, 8.0)
    assert m.shape == (15**2, 15**2)


def test_singular_wavenumber_raises_naming_k_eigenvalue_and_n():
    lam = float(_dst_eigenvalues(17)[2, 4])  # an exact discrete eigenvalue of the N = 17 grid
    k = float(np.sqrt(lam))
    singular = Helmholtz(k=k)
    f = np.random.default_rng(5).standard_normal((17, 17))
    with pytest.raises(ValueError, match=rf"k={re.escape(repr(k))}.*singular.*N=17.*eigenvalue {re.escape(repr(lam))}"):
        singular.operator(17)
    for call in (lambda: singular.reference_solve(f), lambda: singular.fast_solve(f),
                 lambda: singular.iterative_solve(np.zeros_like(f), f, method="gmres")):
        with pytest.raises(ValueError, match=r"N=17"):
            call()
    # within 1e-8 relative still counts; the same k is fine on another grid
    with pytest.raises(ValueError, match="singular"):
        Helmholtz(k=float(np.sqrt(lam * (1 + 5e-9)))).reference_solve(f)
    f33 = np.random.default_rng(6).standard_normal((33, 33))
    assert np.all(np.isfinite(singular.fast_solve(f33)))


def test_k10_at_n64_is_fine_and_k8_lies_between_eigenvalues():
    f = np.random.default_rng(7).standard_normal((64, 64))
    k10 = Helmholtz(k=10.0)
    np.testing.assert_allclose(k10.fast_solve(f), k10.reference_solve(f), rtol=0,
                               atol=1e-10 * np.abs(k10.reference_solve(f)).max())
    lam = np.sort(_dst_eigenvalues(64).ravel())
    below, above = lam[lam < 64.0].max(), lam[lam > 64.0].min()
    assert 49.0 < below < 50.0 and 78.0 < above < 80.0, (below, above)
    assert np.count_nonzero(lam < 64.0) == 3  # modes (1, 1), (1, 2), (2, 1)


@pytest.mark.parametrize("k", [-1.0, np.nan, np.inf, "8", None, True])
def test_invalid_wavenumber_raises(k):
    with pytest.raises(ValueError, match=r"k=.* is invalid; expected a finite wavenumber >= 0"):
        Helmholtz(k=k)


@pytest.mark.parametrize(
    "f, g, match",
    [
        (np.zeros((16, 17)), None, "f has shape"),
        (np.full((9, 9), np.nan), None, "f contains"),
        (np.zeros((9, 9)), np.zeros((11, 11)), r"g has shape \(11, 11\); expected \(9, 9\) to match f"),
        (np.zeros((9, 9)), np.full((9, 9), np.inf), "g contains"),
    ],
)
def test_bad_fields_raise_value_error_naming_the_argument(f, g, match):
    for solver in (HELMHOLTZ.fast_solve, HELMHOLTZ.reference_solve):
        with pytest.raises(ValueError, match=match):
            solver(f, g)


def test_problem_attributes_and_frozen_parameter():
    assert Helmholtz() == Helmholtz(k=8) and Helmholtz().k == 8.0
    assert HELMHOLTZ.name == "helmholtz" and HELMHOLTZ.condition_fields == ("f", "g")
    assert HELMHOLTZ.solution_field == "u" and HELMHOLTZ.dirichlet_field == "g" and HELMHOLTZ.linear
    assert [fld.name for fld in dataclasses.fields(HELMHOLTZ)] == ["k"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        HELMHOLTZ.k = 3.0
    assert Helmholtz(k=3).operator(9).shape == (49, 49)
