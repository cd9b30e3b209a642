import numpy as np
import pytest
import torch

from pdediff.learning.conditioning import (channel_names, decode_solution, dirichlet_channels, encode, sample_scale,
                                  encode_solution, fit_normalisation)
from pdediff.physics.problems import PROBLEMS

POISSON = PROBLEMS["poisson"]


def _fields(n=17, b=4, seed=0):
    rng = np.random.default_rng(seed)
    rho = rng.normal(size=(b, n, n))
    g = np.zeros_like(rho)
    g[:, 0, :], g[:, -1, :] = rng.normal(size=(b, n)), rng.normal(size=(b, n))
    g[:2] = 0.0  # two samples with zero boundary data
    phi = POISSON.reference_solve(rho, g)
    return {"rho": rho, "g": g, "phi": phi}


def test_channels_follow_the_problem():
    assert channel_names(POISSON) == ["rho", "g", "mask"]
    assert dirichlet_channels(POISSON) == (1, 2)


@pytest.mark.parametrize("c", [1e-3, -2.5, 1e3])
def test_encode_is_scale_invariant_and_scale_is_homogeneous(c):
    arrays = _fields()
    norm = fit_normalisation(POISSON, arrays)
    t = {k: torch.as_tensor(v) for k, v in arrays.items()}
    cond, s = encode(POISSON, norm, t)
    cond_c, s_c = encode(POISSON, norm, {k: c * v for k, v in t.items()})
    torch.testing.assert_close(cond_c, cond, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s_c, c * s, rtol=1e-12, atol=0)
    x0 = encode_solution(norm, t["phi"], s)
    torch.testing.assert_close(encode_solution(norm, c * t["phi"], s_c), x0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(decode_solution(norm, x0, s), t["phi"], rtol=1e-12, atol=1e-12)


def test_boundary_channel_holds_the_normalised_solution_on_the_ring():
    arrays = _fields()
    norm = fit_normalisation(POISSON, arrays)
    t = {k: torch.as_tensor(v) for k, v in arrays.items()}
    cond, s = encode(POISSON, norm, t)
    x0 = encode_solution(norm, t["phi"], s)
    ring = cond[:, 2].bool()
    torch.testing.assert_close(cond[:, 1][ring], x0[:, 0][ring])
    assert torch.all(cond[:, 1][~ring] == 0) and torch.all(cond[:, 0][ring] == 0)


def test_zero_fields_give_zero_scale_and_zero_solution():
    arrays = _fields()
    norm = fit_normalisation(POISSON, arrays)
    zero = {k: torch.zeros(2, 17, 17, dtype=torch.float64) for k in ("rho", "g")}
    cond, s = encode(POISSON, norm, zero)
    assert torch.all(s == 0) and torch.all(cond[:, :2] == 0)
    assert torch.all(decode_solution(norm, torch.randn(2, 1, 17, 17, dtype=torch.float64), s) == 0)


def test_normalisation_puts_the_data_at_unit_scale():
    arrays = _fields(b=16)
    norm = fit_normalisation(POISSON, arrays)
    t = {k: torch.as_tensor(v) for k, v in arrays.items()}
    _, s = encode(POISSON, norm, t)
    x0 = encode_solution(norm, t["phi"], s)
    assert abs(float(x0.pow(2).mean().sqrt()) - 1.0) < 1e-9
    assert 0.1 < norm.sigma_data <= 1.0 + 1e-9


def test_sign_is_odd_even_when_the_weighted_sum_vanishes():
    arrays = _fields()
    norm = fit_normalisation(POISSON, arrays)
    g = torch.zeros(1, 5, 5, dtype=torch.float64)
    g[0, 0, 2], g[0, 1, 0] = 1.0, -1.0  # weights 1 + x + 2y: 1.5 and 1.5 -> the weighted sum is 0
    fields = {"rho": torch.zeros_like(g), "g": g}
    s = sample_scale(POISSON, norm, fields)
    s_neg = sample_scale(POISSON, norm, {k: -v for k, v in fields.items()})
    assert float(s) != 0 and float(s_neg) == -float(s)
