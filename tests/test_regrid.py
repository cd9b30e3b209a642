"""Grid transfers: the orders of accuracy the module promises, exact edges, clear errors."""

import numpy as np
import pytest

from pdediff.maths.regrid import prolong, restrict, transfer_ring


def smooth(n):
    x = np.linspace(0.0, 1.0, n)
    X, Y = np.meshgrid(x, x)
    return np.sin(3 * X + 1) * np.cos(2 * Y) + X**2 * Y


def ring(n):
    m = np.zeros((n, n), bool)
    m[0] = m[-1] = m[:, 0] = m[:, -1] = True
    return m


def test_prolong_is_fourth_order_on_smooth_fields():
    errors = [np.abs(prolong(smooth(m), 4 * m - 3) - smooth(4 * m - 3)).max() for m in (9, 17, 33)]
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(orders > 3.7), (errors, orders)


def test_prolong_keeps_corners_and_is_exact_on_the_source_nodes():
    coarse = smooth(17)
    fine = prolong(coarse, 33)  # 33 = 2 * 17 - 1: every coarse node is a fine node
    np.testing.assert_allclose(fine[::2, ::2], coarse, atol=1e-12)


def test_restrict_is_second_order_and_low_passes_a_spike():
    errors = [np.abs(restrict(smooth(2 * m - 1), m) - smooth(m)).max() for m in (17, 33, 65)]
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(orders > 1.8), (errors, orders)
    spike = np.zeros((65, 65))
    spike[32, 33] = 1.0  # a node that is not a coarse node
    coarse = restrict(spike, 17)
    assert coarse.max() > 0  # point sampling would lose it
    assert restrict(smooth(9), 17).shape == (17, 17)  # up is bilinear


def test_restrict_on_grids_that_do_not_nest_is_first_order_and_small():
    errors = [np.abs(restrict(smooth(m), n) - smooth(n)).max() for m, n in ((100, 64), (200, 128), (401, 256))]
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(orders > 0.9) and errors[0] < 5e-3, (errors, orders)


def test_transfer_ring_uses_the_edges_alone():
    n, m = 33, 65
    field = smooth(n)
    field[~ring(n)] = 1e6  # interior values of Dirichlet data are ignored
    out = transfer_ring(field, m)
    target = smooth(m)
    assert np.abs(out[ring(m)] - target[ring(m)]).max() < 1e-5
    assert np.all(out[~ring(m)] == 0.0)


@pytest.mark.parametrize("fn", [restrict, prolong, transfer_ring])
@pytest.mark.parametrize("field, n, match", [
    (np.zeros((8, 9)), 8, r"shape \(8, 9\)"),
    (np.zeros(8), 8, r"shape \(8,\)"),
    (np.zeros((8, 8)), 2, r"n=2"),
    (np.zeros((8, 8)), 8.5, r"n=8.5"),
])
def test_bad_input(fn, field, n, match):
    with pytest.raises(ValueError, match=match):
        fn(field, n)
