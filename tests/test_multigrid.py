"""Tests of pdediff.maths.multigrid: the batched V-cycle is a symmetric positive-definite
preconditioner that contracts the error, one batched CG step equals SciPy's first CG step, and
the continued batched CG equals SciPy's iterates and stops each system on its own."""

import numpy as np
import pyamg
import scipy.sparse.linalg as spla

import scipy.sparse as sp

from pdediff.maths.multigrid import BatchedVCycle, pcg, pcg_step
from pdediff.physics.problems.poisson import _operator


def _setup(n=33):
    a = _operator(n).tocsr()
    return a, BatchedVCycle(pyamg.ruge_stuben_solver(a))


def test_vcycle_is_symmetric_positive_definite_and_batched():
    a, m = _setup()
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, a.shape[0], 5))
    mx, my = m(x), m(y)
    np.testing.assert_allclose(np.einsum("ij,ij->j", y, mx), np.einsum("ij,ij->j", x, my), rtol=1e-10)
    assert np.all(np.einsum("ij,ij->j", x, mx) > 0)
    np.testing.assert_allclose(m(x[:, 2]), mx[:, 2], rtol=1e-12, atol=1e-14)  # column by column


def test_vcycle_iteration_contracts_the_error():
    a, m = _setup()
    rng = np.random.default_rng(1)
    exact = rng.standard_normal((a.shape[0], 4))
    b = a @ exact
    x = np.zeros_like(b)
    for _ in range(10):
        x = x + m(b - a @ x)
    assert np.all(np.linalg.norm(x - exact, axis=0) < 1e-2 * np.linalg.norm(exact, axis=0))


def test_pcg_step_equals_scipys_first_iteration():
    a, m = _setup()
    rng = np.random.default_rng(2)
    b, x0 = rng.standard_normal((2, a.shape[0], 3))
    ours = pcg_step(a, m, b, x0)
    op = spla.LinearOperator(a.shape, matvec=m, dtype=np.float64)
    for k in range(3):
        theirs, _ = spla.cg(a, b[:, k], x0=x0[:, k], maxiter=1, M=op)
        np.testing.assert_allclose(ours[:, k], theirs, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(pcg_step(a, m, a @ x0, x0), x0)  # a zero residual: unchanged


def test_pcg_equals_scipys_iterates_and_stops_each_system_on_its_own():
    a, m = _setup()
    rng = np.random.default_rng(3)
    exact = rng.standard_normal((a.shape[0], 3))
    b = a @ exact
    b[:, 2] *= 1e-3  # a system of another size: the stopping rule is relative
    x0 = np.zeros_like(b)
    op = spla.LinearOperator(a.shape, matvec=m, dtype=np.float64)
    for k in (1, 2, 3):  # a fixed number of iterations: SciPy's iterates (tol 0 never stops early)
        ours, iters, _ = pcg(a, m, b, x0, tol=0.0, maxiter=k)
        assert iters.tolist() == [[k, k, k]]
        for j in range(3):
            theirs, _ = spla.cg(a, b[:, j], x0=x0[:, j], rtol=0.0, atol=0.0, maxiter=k, M=op)
            np.testing.assert_allclose(ours[:, j], theirs, rtol=1e-8, atol=1e-12 * np.abs(theirs).max())
    for tol in (1e-4, 1e-8):
        x, iters, step = pcg(a, m, b, x0, tol=tol, maxiter=100)
        assert np.all(step <= tol) and np.all(iters < 100)
        # one iteration past the first step <= tol: the answer's error is below tol
        solution = spla.spsolve(a.tocsc(), b)
        assert np.all(np.linalg.norm(x - solution, axis=0) <= tol * np.linalg.norm(solution, axis=0))
        x_more, _, _ = pcg(a, m, b, x0, tol=tol, maxiter=int(iters.max()))  # a system that stopped stays put
        np.testing.assert_array_equal(x_more, x)
    # stacked systems (a block-diagonal operator): the same iterates as one at a time
    block = sp.block_diag([a, 2.0 * a], format="csr")
    bb = np.concatenate([b[:, :1], b[:, 1:2]])
    xs, iters, _ = pcg(block, lambda r: np.concatenate([m(r[: a.shape[0]]), m(r[a.shape[0]:]) / 2.0]),
                       bb, np.zeros_like(bb), tol=1e-6, maxiter=50, segments=2)
    one, it_one, _ = pcg(a, m, b[:, :1], x0[:, :1], tol=1e-6, maxiter=50)
    np.testing.assert_allclose(xs[: a.shape[0]], one, rtol=1e-8, atol=1e-12)
    assert iters[0, 0] == it_one[0, 0]
    zero, iters, step = pcg(a, m, np.zeros_like(b), x0, tol=1e-6, maxiter=10)  # nothing to solve: no iteration
    assert not zero.any() and not iters.any() and not step.any()
