"""Tests of pdediff.physics.problems: convergence on manufactured solutions, solver agreement, input checks."""

import numpy as np
import pytest

from pdediff.physics.problems import PROBLEMS, Grid, get_problem

POISSON = PROBLEMS["poisson"]
SOLVERS = {"fast": POISSON.fast_solve, "reference": POISSON.reference_solve}
SIZES = (17, 33, 65, 129)


def manufactured(n, boundary):
    """phi = sin(pi x) sin(2 pi y) (+ the harmonic exp(pi x) sin(pi y)), rho = -lap(phi), g = phi on the ring."""
    x, y = Grid(n).mesh()
    phi = np.sin(np.pi * x) * np.sin(2 * np.pi * y)
    rho = 5 * np.pi**2 * phi
    if boundary:
        phi = phi + np.exp(np.pi * x) * np.sin(np.pi * y)
    g = np.where(Grid(n).boundary_mask, phi, 0.0)
    return phi, rho, g


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("boundary", [False, True], ids=["zero_g", "nonzero_g"])
def test_second_order_convergence(solver, boundary):
    errors = []
    for n in SIZES:
        phi, rho, g = manufactured(n, boundary)
        errors.append(np.abs(SOLVERS[solver](rho, g) - phi).max())
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(np.abs(orders - 2.0) < 0.1), orders


@pytest.mark.parametrize("shape", [(33, 33), (3, 33, 33)])
def test_fast_and_reference_solves_agree(shape):
    rng = np.random.default_rng(0)
    rho, g = rng.standard_normal(shape), rng.standard_normal(shape)
    fast, ref = POISSON.fast_solve(rho, g), POISSON.reference_solve(rho, g)
    assert fast.shape == ref.shape == shape
    assert np.abs(fast - ref).max() <= 1e-10 * np.abs(ref).max()


def test_batch_equals_single_solves():
    rng = np.random.default_rng(1)
    rho, g = rng.standard_normal((4, 17, 17)), rng.standard_normal((4, 17, 17))
    batch = POISSON.fast_solve(rho, g)
    for b in range(4):
        np.testing.assert_allclose(batch[b], POISSON.reference_solve(rho[b], g[b]), rtol=0, atol=1e-12)


def test_reference_solution_residual_is_round_off():
    rng = np.random.default_rng(2)
    rho, g = rng.standard_normal((2, 33, 33)), rng.standard_normal((2, 33, 33))
    phi = POISSON.reference_solve(rho, g)
    assert POISSON.relative_residual(phi, rho, g).max() < 1e-12
    residual = POISSON.residual(phi, rho, g)
    assert residual.shape == rho.shape
    assert np.abs(residual).max() < 1e-9 * np.abs(rho).max() * 33**2


def test_solution_takes_boundary_data_and_ignores_ring_rho():
    rng = np.random.default_rng(3)
    rho, g = rng.standard_normal((17, 17)), rng.standard_normal((17, 17))
    phi = POISSON.fast_solve(rho, g)
    ring = Grid(17).boundary_mask
    np.testing.assert_array_equal(phi[ring], g[ring])
    rho2, g2 = rho.copy(), g.copy()
    rho2[ring] += 1.0
    g2[~ring] -= 1.0
    np.testing.assert_array_equal(POISSON.fast_solve(rho2, g2), phi)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize(
    "rho, g, match",
    [
        (np.zeros((16, 17)), None, "rho"),
        (np.zeros((4, 4)), None, "rho"),
        (np.full((9, 9), np.nan), None, "rho"),
        (np.zeros(9), None, "rho"),
        (np.zeros((9, 9)), np.full((9, 9), np.inf), "g"),
        (np.zeros((9, 9)), np.zeros((11, 11)), "g"),
        (np.zeros((2, 9, 9)), np.zeros((9, 9)), "g"),
    ],
    ids=["non_square", "too_small", "nan", "one_dim", "inf_g", "g_shape", "g_batch"],
)
def test_bad_inputs_raise_value_error_naming_the_argument(solver, rho, g, match):
    with pytest.raises(ValueError, match=match):
        SOLVERS[solver](rho, g)


def test_bad_grid_and_unknown_problem():
    with pytest.raises(ValueError, match="n=4"):
        Grid(4)
    with pytest.raises(ValueError, match="problem='heat'.*poisson"):
        get_problem("heat")


@pytest.mark.parametrize("method", ["cg", "amg"])
def test_iterative_solve_reaches_the_reference(method):
    rng = np.random.default_rng(3)
    rho, g = rng.normal(size=(2, 65, 65)), rng.normal(size=(2, 65, 65))
    ref = POISSON.reference_solve(rho, g)
    phi, iters = POISSON.iterative_solve(np.zeros_like(rho), rho, g, maxiter=5000, rtol=1e-10, method=method)
    np.testing.assert_allclose(phi, ref, atol=1e-8 * np.abs(ref).max())
    assert iters.shape == (2,) and np.all(iters > 0)
    # multigrid preconditioning: a handful of iterations where plain CG needs ~N
    assert (np.all(iters <= 12) if method == "amg" else np.all(iters >= 65))
    # an exact start needs no iteration; rtol = 0 runs exactly maxiter
    _, none = POISSON.iterative_solve(ref, rho, g, maxiter=50, rtol=1e-8, method=method)
    _, three = POISSON.iterative_solve(np.zeros_like(rho), rho, g, maxiter=3, rtol=0.0, method=method)
    assert np.all(none == 0) and np.all(three == 3)


def test_iterative_solve_rejects_an_unknown_method():
    with pytest.raises(ValueError, match=r"method='jacobi' is unknown; expected one of \['amg', 'cg'\]"):
        POISSON.iterative_solve(np.zeros((9, 9)), np.ones((9, 9)), method="jacobi")
    assert set(POISSON.iterative_methods) == {"cg", "amg"}
    for kw, match in ((dict(maxiter=-1), r"maxiter=-1 is invalid"), (dict(maxiter=2.5), r"maxiter=2.5"),
                      (dict(rtol=-1.0), r"rtol=-1.0 is invalid"), (dict(rtol="x"), r"rtol='x'")):
        with pytest.raises(ValueError, match=match):
            POISSON.iterative_solve(np.zeros((9, 9)), np.ones((9, 9)), **kw)
