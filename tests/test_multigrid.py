"""Tests of pdediff.maths.multigrid: the batched V-cycle is a symmetric positive-definite
preconditioner that contracts the error, and one batched CG step equals SciPy's first CG step."""

import numpy as np
import pyamg
import scipy.sparse.linalg as spla

from pdediff.maths.multigrid import BatchedVCycle, pcg_step
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
