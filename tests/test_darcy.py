"""Tests of pdediff.physics.problems.darcy (Poisson limit, manufactured-solution convergence, SPD operator,
reference and iterative solves, coefficient checks) and of the coefficient families in
pdediff.physics.coefficients."""

import json

import numpy as np
import pytest

from pdediff.physics.coefficients import COEFFICIENTS, LogNormalField, ThresholdField, get_coefficient
from pdediff.physics.problems import Grid
from pdediff.physics.problems.darcy import Darcy, amg_preconditioner
from pdediff.physics.problems.poisson import Poisson

DARCY = Darcy()
SIZES = (17, 33, 65, 129)

# coefficient a(x, y) and its gradient (a_x, a_y)
A_FIELDS = {
    "trig": lambda x, y: (
        1 + 0.5 * np.sin(2 * np.pi * x) * np.cos(np.pi * y),
        np.pi * np.cos(2 * np.pi * x) * np.cos(np.pi * y),
        -0.5 * np.pi * np.sin(2 * np.pi * x) * np.sin(np.pi * y),
    ),
    "exp": lambda x, y: (np.exp(x - y**2), np.exp(x - y**2), -2 * y * np.exp(x - y**2)),
}


def manufactured(n, coefficient, boundary):
    """u = e^x sin(pi x) sin(pi y) (+ x^2 y, nonzero on the ring), f = -div(a grad u), g = u on the ring."""
    x, y = Grid(n).mesh()
    a, a_x, a_y = A_FIELDS[coefficient](x, y)
    ex, sx, cx, sy, cy = np.exp(x), np.sin(np.pi * x), np.cos(np.pi * x), np.sin(np.pi * y), np.cos(np.pi * y)
    u = ex * sx * sy
    u_x = ex * (sx + np.pi * cx) * sy
    u_y = np.pi * ex * sx * cy
    lap = ex * sy * ((1 - 2 * np.pi**2) * sx + 2 * np.pi * cx)
    if boundary:
        u, u_x, u_y, lap = u + x**2 * y, u_x + 2 * x * y, u_y + x**2, lap + 2 * y
    f = -(a_x * u_x + a_y * u_y + a * lap)
    g = np.where(Grid(n).boundary_mask, u, 0.0)
    return u, a, f, g


def fitted_order(errors, sizes=SIZES):
    h = 1.0 / (np.array(sizes) - 1.0)
    return np.polyfit(np.log(h), np.log(errors), 1)[0]


@pytest.mark.parametrize("coefficient", sorted(A_FIELDS))
@pytest.mark.parametrize("boundary", [False, True], ids=["zero_g", "nonzero_g"])
def test_second_order_convergence(coefficient, boundary):
    errors = []
    for n in SIZES:
        u, a, f, g = manufactured(n, coefficient, boundary)
        errors.append(np.abs(DARCY.reference_solve(a, f, g) - u).max())
    order = fitted_order(errors)
    pairwise = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert abs(order - 2.0) < 0.15, (order, pairwise, errors)
    assert np.all(np.abs(pairwise - 2.0) < 0.15), pairwise


def test_unit_coefficient_is_poisson():
    rng = np.random.default_rng(0)
    n = 17
    f, g = rng.standard_normal((2, 3, n, n))
    ones = np.ones((3, n, n))
    op = DARCY.operator(ones[0])
    assert op.shape == ((n - 2) ** 2,) * 2
    assert abs(op - Poisson().operator(n)).max() == 0.0
    ref = Poisson().reference_solve(f, g)
    np.testing.assert_allclose(DARCY.reference_solve(ones, f, g), ref, rtol=0, atol=1e-12 * np.abs(ref).max())
    np.testing.assert_allclose(DARCY.rhs(ones, f, g), Poisson().rhs(f, g), rtol=1e-14, atol=1e-12)
    # f defaults to 1 and g to 0
    np.testing.assert_allclose(DARCY.reference_solve(ones[0]), Poisson().reference_solve(np.ones((n, n))),
                               rtol=0, atol=1e-14)


def test_operator_matches_apply_and_is_symmetric_positive_definite():
    rng = np.random.default_rng(1)
    n = 9
    a = np.exp(3.0 * rng.standard_normal((n, n)))  # rough, contrast ~ e^12
    op = DARCY.operator(a)
    assert (op - op.T).nnz == 0  # exactly symmetric
    assert np.linalg.eigvalsh(op.toarray()).min() > 0
    u = rng.standard_normal((n, n))
    interior = u.copy()
    interior[Grid(n).boundary_mask] = 0.0
    np.testing.assert_allclose(op @ interior[1:-1, 1:-1].ravel(), DARCY.apply(interior, a).ravel(),
                               rtol=1e-12, atol=1e-12 * np.abs(op).max())


def test_reference_solution_residual_is_round_off_and_batches_agree():
    rng = np.random.default_rng(2)
    a = np.exp(rng.standard_normal((3, 33, 33)))
    f, g = rng.standard_normal((2, 3, 33, 33))
    u = DARCY.reference_solve(a, f, g)
    assert u.shape == a.shape
    assert DARCY.relative_residual(u, a, f, g).max() < 1e-12
    res = DARCY.residual(u, a, f, g)
    assert res.shape == a.shape
    ring = Grid(33).boundary_mask
    np.testing.assert_array_equal(res[:, ring], 0.0)
    np.testing.assert_array_equal(u[:, ring], g[:, ring])
    assert np.abs(res).max() < 1e-9 * np.abs(f).max() * a.max() * 33**2
    for b in range(3):
        np.testing.assert_allclose(DARCY.reference_solve(a[b], f[b], g[b]), u[b], rtol=0, atol=1e-13)
    # the ring of f and the interior of g are ignored
    f2, g2 = f.copy(), g.copy()
    f2[:, ring] += 1.0
    g2[:, ~ring] -= 1.0
    np.testing.assert_array_equal(DARCY.reference_solve(a, f2, g2), u)


def test_residual_terms_numpy_and_torch_agree():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    a = np.exp(rng.standard_normal((2, 17, 17)))
    f, g = rng.standard_normal((2, 2, 17, 17))
    g[:, 1:-1, 1:-1] = 0.0
    u = DARCY.reference_solve(a, f, g)
    r, b = DARCY.residual_terms(u, a, f, g)
    assert r.shape == b.shape == (2, 15, 15)
    assert np.abs(r).max() < 1e-10 * np.abs(b).max()
    np.testing.assert_allclose(b, DARCY.rhs(a, f, g), rtol=1e-14, atol=1e-12)
    v = rng.standard_normal(u.shape)
    tv = torch.tensor(v, requires_grad=True)
    rt, bt = DARCY.residual_terms(tv, *(torch.tensor(x) for x in (a, f, g)))
    rn, bn = DARCY.residual_terms(v, a, f, g)
    np.testing.assert_allclose(rt.detach().numpy(), rn, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(bt.numpy(), bn, rtol=1e-12, atol=1e-12)
    (rt**2).sum().backward()
    assert tv.grad is not None and torch.isfinite(tv.grad).all()
    np.testing.assert_allclose(DARCY.residual(v, a, f, g)[:, 1:-1, 1:-1], rn, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["cg", "amg"])
def test_iterative_solve_reaches_the_reference(method):
    rng = np.random.default_rng(4)
    n = 65
    a = np.where(rng.standard_normal((2, n, n)) > 0, 12.0, 3.0)  # piecewise-constant, contrast 4
    f, g = rng.normal(size=(2, 2, n, n))
    ref = DARCY.reference_solve(a, f, g)
    u, iters = DARCY.iterative_solve(np.zeros_like(ref), a, f, g, maxiter=5000, rtol=1e-10, method=method)
    np.testing.assert_allclose(u, ref, atol=1e-8 * np.abs(ref).max())
    assert iters.shape == (2,) and np.all(iters > 0)
    assert np.all(iters <= 25) if method == "amg" else np.all(iters >= 65)
    _, none = DARCY.iterative_solve(ref, a, f, g, maxiter=50, rtol=1e-8, method=method)
    _, three = DARCY.iterative_solve(np.zeros_like(ref), a, f, g, maxiter=3, rtol=0.0, method=method)
    assert np.all(none == 0) and np.all(three == 3)
    u1, it1 = DARCY.iterative_solve(np.zeros((n, n)), a[0], f[0], g[0], maxiter=5000, rtol=1e-10, method=method)
    assert it1.shape == () and np.abs(u1 - u[0]).max() < 1e-8 * np.abs(ref).max()


def test_amg_setup_is_a_separate_function():
    a = np.exp(np.random.default_rng(5).standard_normal((33, 33)))
    op = DARCY.operator(a)
    b = np.ones(op.shape[0])
    for kind in ("ruge_stuben", "smoothed_aggregation"):
        m = amg_preconditioner(op, kind)
        assert m.shape == op.shape and np.all(np.isfinite(m @ b))
    with pytest.raises(ValueError, match="kind='gmg'"):
        amg_preconditioner(op, "gmg")
    assert set(DARCY.iterative_methods) == {"cg", "amg"}
    with pytest.raises(ValueError, match=r"method='jacobi' is unknown; expected one of \['amg', 'cg'\]"):
        DARCY.iterative_solve(np.zeros((9, 9)), np.ones((9, 9)), method="jacobi")
    for kw, match in ((dict(maxiter=-1), r"maxiter=-1 is invalid"), (dict(rtol=-1.0), r"rtol=-1.0 is invalid")):
        with pytest.raises(ValueError, match=match):
            DARCY.iterative_solve(np.zeros((9, 9)), np.ones((9, 9)), **kw)


def _with(value, index=(4, 4), n=9):
    a = np.ones((n, n))
    a[index] = value
    return a


@pytest.mark.parametrize("solver", ["reference_solve", "operator", "residual", "iterative_solve"])
@pytest.mark.parametrize(
    "a, match",
    [
        (_with(0.0), r"a has minimum 0\.0; expected a > 0 at every node"),
        (_with(-2.5, (0, 3)), r"a has minimum -2\.5; expected a > 0 at every node"),
        (_with(np.nan), r"a contains 1 NaN or inf"),
        (_with(np.inf), r"a contains 1 NaN or inf"),
        (np.ones((8, 9)), r"a has shape \(8, 9\)"),
    ],
    ids=["zero", "negative_on_ring", "nan", "inf", "non_square"],
)
def test_bad_coefficient_raises_value_error_naming_a(solver, a, match):
    args = {"reference_solve": (a,), "operator": (a,), "residual": (np.zeros((9, 9)), a),
            "iterative_solve": (np.zeros((9, 9)), a)}[solver]
    with pytest.raises(ValueError, match=match):
        getattr(DARCY, solver)(*args)


@pytest.mark.parametrize(
    "f, g, match",
    [
        (np.zeros((11, 11)), None, r"f has shape \(11, 11\); expected \(9, 9\) to match a"),
        (np.full((9, 9), np.nan), None, "f contains"),
        (None, np.zeros((2, 9, 9)), r"g has shape \(2, 9, 9\); expected \(9, 9\) to match a"),
        (None, np.full((9, 9), np.inf), "g contains"),
    ],
)
def test_bad_source_or_boundary_data_raise(f, g, match):
    with pytest.raises(ValueError, match=match):
        DARCY.reference_solve(np.ones((9, 9)), f, g)


def test_problem_attributes():
    assert DARCY.name == "darcy"
    assert DARCY.condition_fields == ("a", "f", "g")
    assert DARCY.solution_field == "u" and DARCY.dirichlet_field == "g" and DARCY.coefficient_fields == ("a",)
    assert DARCY.source_fields == ("f",) and [f.degree for f in DARCY.fields] == [-1, 1, 1]
    assert DARCY.fast_solve is None
    assert DARCY.grid(17).n == 17


# ---------------------------------------------------------------------------- coefficient families


def _rngs(count, seed=0):
    return [np.random.default_rng([seed, k]) for k in range(count)]


def _sign_changes(a):
    return (np.count_nonzero(a[:, :, 1:] != a[:, :, :-1]) + np.count_nonzero(a[:, 1:, :] != a[:, :-1, :])) / len(a)


@pytest.mark.parametrize("name", sorted(COEFFICIENTS))
def test_coefficient_shapes_determinism_and_params(name):
    family = get_coefficient(name)
    grid = Grid(33)
    a = family.sample(grid, _rngs(4))
    assert a.shape == (4, 33, 33) and a.dtype == np.float64 and np.all(np.isfinite(a)) and a.min() > 0
    np.testing.assert_array_equal(family.sample(grid, _rngs(4)), a)
    np.testing.assert_array_equal(family(grid, np.random.default_rng([0, 2])), a[2])  # independent of the batch
    assert not np.array_equal(a[0], a[1])
    params = family.params()
    assert params["name"] == name and json.loads(json.dumps(params)) == params
    # the same generator gives the same continuous field at every N: nodes shared by N = 17 and 33
    np.testing.assert_allclose(family.sample(Grid(17), _rngs(4)), a[:, ::2, ::2], rtol=1e-12)
    DARCY.reference_solve(a[:2])  # a valid Darcy coefficient


def test_threshold_values_and_finer_structure_with_larger_tau():
    grid = Grid(65)
    a = ThresholdField().sample(grid, _rngs(64))
    assert set(np.unique(a)) == {3.0, 12.0}
    frac_high = np.mean(a == 12.0)
    assert 0.3 < frac_high < 0.7  # zero-mean field: both values, about equally often
    assert np.mean([(s == 12.0).any() and (s == 3.0).any() for s in a]) > 0.9
    fine = ThresholdField(tau=6.0).sample(grid, _rngs(64))
    assert set(np.unique(fine)) == {3.0, 12.0}
    assert _sign_changes(fine) > 1.3 * _sign_changes(a), (_sign_changes(fine), _sign_changes(a))
    custom = ThresholdField(high=5.0, low=0.5).sample(grid, _rngs(2))
    assert set(np.unique(custom)) <= {0.5, 5.0}


def test_lognormal_is_positive_with_unit_log_spread():
    a = LogNormalField().sample(Grid(65), _rngs(32))
    assert np.all(a > 0)
    log_a = np.log(a)
    assert 0.8 < np.sqrt(np.mean(log_a**2)) < 1.2  # sigma = 1 on average over samples and nodes
    assert 0.5 < log_a.std() < 1.5
    wide = LogNormalField(sigma=2.0).sample(Grid(65), _rngs(32))
    np.testing.assert_allclose(np.log(wide), 2.0 * log_a, rtol=1e-12, atol=1e-12)


def test_unknown_coefficient_family():
    with pytest.raises(ValueError, match=r"coefficient='gauss'.* is not a known coefficient; expected one of"):
        get_coefficient("gauss")


def test_broad_families_draw_a_law_per_sample():
    grid = Grid(33)
    a = get_coefficient("broad-threshold").sample(grid, _rngs(64))
    values = [np.unique(s) for s in a]
    assert all(1 <= len(v) <= 2 for v in values)  # two-valued (one where the level hides a value)
    ratio = np.array([v[-1] / v[0] for v in values if len(v) == 2])
    assert ratio.min() >= 1.5 - 1e-12 and ratio.max() <= 200 + 1e-9
    assert np.quantile(ratio, 0.2) < 6 and np.quantile(ratio, 0.8) > 30  # log-uniform contrast
    log_spread = np.log(get_coefficient("broad-lognormal").sample(grid, _rngs(64))).std(axis=(1, 2))
    assert log_spread.min() < 0.5 and log_spread.max() > 1.3  # sigma from 0.25 to 2 per sample


def test_broad_channels_draw_bands_at_any_angle_with_a_law_per_sample():
    grid = Grid(65)
    family = get_coefficient("broad-channels")
    a = family.sample(grid, _rngs(64))
    assert a.shape == (64, 65, 65) and np.all(a > 0)
    values = [np.unique(s) for s in a]
    assert all(len(v) == 2 for v in values)  # channel and background
    ratio = np.array([v[-1] / v[0] for v in values])
    assert ratio.min() >= 2 - 1e-12 and ratio.max() <= 100 + 1e-9
    # half the samples are barriers: the channel value is the low one, and channels are the minority
    low_inside = [np.mean(s == s.min()) < 0.5 for s in a]
    assert 0.25 < np.mean(low_inside) < 0.75
    from pdediff.physics.coefficients import ChannelField  # one point of the family: axis-aligned, a in {1, 10}

    axis = ChannelField().sample(grid, _rngs(16))
    assert set(np.unique(axis)) == {1.0, 10.0}
    np.testing.assert_array_equal(family.sample(grid, _rngs(3)), a[:3])  # each sample from its own generator
    coarse = family.sample(Grid(33), _rngs(2))
    np.testing.assert_array_equal(coarse, a[:2, ::2, ::2])  # the same continuous field at every N
