"""Error figures: exact values on constructed fields."""

import numpy as np
import pytest

from pdediff.physics import metrics


def test_seed_spread_of_a_symmetric_pair_is_the_half_difference():
    rng = np.random.default_rng(0)
    phi, d = rng.standard_normal((3, 8, 8)), 1e-3 * rng.standard_normal((3, 8, 8))
    runs = np.stack([phi + d, phi - d])
    expected = np.linalg.norm(d.reshape(3, -1), axis=1) / np.linalg.norm(phi.reshape(3, -1), axis=1)
    np.testing.assert_allclose(metrics.seed_spread(runs), expected, rtol=1e-12)
    ref = 2 * phi
    np.testing.assert_allclose(metrics.seed_spread(runs, ref), expected / 2, rtol=1e-12)
    assert np.all(metrics.seed_spread(np.stack([phi, phi, phi])) < 1e-15)
    with pytest.raises(ValueError, match="runs has shape"):
        metrics.seed_spread(phi)


def test_relative_and_max_error():
    ref = np.zeros((1, 4, 4))
    ref[0, 1, 1] = 2.0
    phi = ref.copy()
    phi[0, 2, 2] = 0.5
    assert metrics.relative_l2(phi, ref)[0] == pytest.approx(0.25)
    assert metrics.max_error(phi, ref)[0] == pytest.approx(0.25)


def test_auroc_is_the_share_of_pairs_ranked_right():
    from pdediff.physics.metrics import auroc

    assert auroc([3, 4], [1, 2]) == 1.0 and auroc([1, 2], [3, 4]) == 0.0
    assert auroc([1, 3], [2]) == 0.5 and auroc([2, 2], [2]) == 0.5
    assert auroc([2, 5, 1], [0, 3]) == 4 / 6
    with pytest.raises(ValueError, match="auroc"):
        auroc([], [1.0])
