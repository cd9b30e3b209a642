"""Tests of the EDM preconditioning wrapper against the formulas of Karras et al. (2022), Table 1."""

import math

import pytest
import torch
from torch import nn

from pdediff.maths.denoiser import Denoiser
from pdediff.learning.networks import build_network
from pdediff.learning.networks.layers import append_dims

B, N = 4, 8
RHO, G, MASK = 0, 1, 2  # condition channels as the Poisson caller builds them


class RecordingNet(nn.Module):
    """Returns a fixed field F and remembers what it was called with."""

    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, x, c_noise, cond):
        self.seen = (x, c_noise, cond)
        return self.f


class RandomNet(nn.Module):
    """A stand-in score network whose output depends on its inputs."""

    def forward(self, x, c_noise, cond):
        return torch.sin(3 * x) * append_dims(c_noise.exp(), 4) + cond.sum(1, keepdim=True)


def fields(seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 1, N, N, generator=gen, dtype=dtype) * 3
    sigma = torch.exp(torch.randn(B, generator=gen, dtype=dtype) * 2)
    cond = torch.randn(B, 3, N, N, generator=gen, dtype=dtype)
    mask = torch.zeros(N, N, dtype=dtype)
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = 1
    cond[:, MASK] = mask
    cond[:, G] *= mask
    return x, sigma, cond


@pytest.mark.parametrize("sigma_data", [0.5, 1.3])
def test_preconditioning_matches_edm_table_1(sigma_data):
    den = Denoiser(RecordingNet(None), sigma_data=sigma_data).double()
    # The buffer is float32 (it must survive devices without float64), so compare against
    # the stored value.
    assert den.sigma_data.item() == pytest.approx(sigma_data, rel=1e-7)
    sigma_data = den.sigma_data.item()
    sigma = torch.tensor([0.002, 0.1, 0.5, 1.0, 80.0], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = den.preconditioning(sigma)
    for i, s in enumerate(sigma.tolist()):
        assert c_skip[i].item() == pytest.approx(sigma_data**2 / (s**2 + sigma_data**2), rel=1e-14)
        assert c_out[i].item() == pytest.approx(s * sigma_data / math.sqrt(s**2 + sigma_data**2), rel=1e-14)
        assert c_in[i].item() == pytest.approx(1 / math.sqrt(s**2 + sigma_data**2), rel=1e-14)
        assert c_noise[i].item() == pytest.approx(math.log(s) / 4, rel=1e-14, abs=1e-15)


def test_net_sees_preconditioned_input_and_output_is_combined():
    x, sigma, cond = fields()
    f = torch.randn_like(x)
    net = RecordingNet(f)
    den = Denoiser(net, sigma_data=0.7).double()
    d = den(x, sigma, cond)
    c_skip, c_out, c_in, c_noise = den.preconditioning(sigma)
    seen_x, seen_c_noise, seen_cond = net.seen
    torch.testing.assert_close(seen_x, append_dims(c_in, 4) * x, rtol=0, atol=0)
    torch.testing.assert_close(seen_c_noise, sigma.log() / 4, rtol=0, atol=0)
    assert seen_cond is cond
    torch.testing.assert_close(d, append_dims(c_skip, 4) * x + append_dims(c_out, 4) * f)


def test_zero_net_gives_c_skip_times_x_exactly():
    x, sigma, cond = fields()
    den = Denoiser(RecordingNet(torch.zeros_like(x)), sigma_data=0.5).double()
    d = den(x, sigma, cond)
    c_skip = 0.25 / (sigma**2 + 0.25)
    assert torch.equal(d, append_dims(c_skip, 4) * x)


def test_boundary_values_equal_g_exactly():
    x, sigma, cond = fields(seed=3)
    den = Denoiser(RandomNet(), sigma_data=0.5, dirichlet_channel=G, mask_channel=MASK).double()
    d = den(x, sigma, cond)
    ring = cond[:, MASK : MASK + 1].bool()
    assert torch.equal(d[ring], cond[:, G : G + 1][ring])
    # Inside the ring D is the plain preconditioned output.
    free = Denoiser(RandomNet(), sigma_data=0.5).double()(x, sigma, cond)
    assert torch.equal(d[~ring], free[~ring])


def test_boundary_exact_with_a_real_network_in_float32():
    torch.manual_seed(0)
    net = build_network("unet", 3, model_channels=8, channel_mult=(1, 2), attention_levels=())
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.normal_(0, 0.1)
    den = Denoiser(net, sigma_data=0.5, dirichlet_channel=G, mask_channel=MASK)
    x, sigma, cond = fields(seed=4, dtype=torch.float32)
    d = den(x, sigma, cond)
    ring = cond[:, MASK : MASK + 1].bool()
    assert torch.equal(d[ring], cond[:, G : G + 1][ring])
    d.square().mean().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_score_formula():
    x, sigma, cond = fields(seed=1)
    den = Denoiser(RandomNet(), sigma_data=0.5).double()
    torch.testing.assert_close(den.score(x, sigma, cond), (den(x, sigma, cond) - x) / append_dims(sigma, 4) ** 2)


def test_scalar_sigma_broadcasts():
    x, _, cond = fields(seed=2)
    den = Denoiser(RandomNet(), sigma_data=0.5).double()
    full = den(x, torch.full((B,), 0.3, dtype=torch.float64), cond)
    assert torch.equal(den(x, 0.3, cond), full)
    assert torch.equal(den(x, torch.tensor(0.3, dtype=torch.float64), cond), full)
    with pytest.raises(ValueError, match="sigma has shape"):
        den(x, torch.ones(B + 1), cond)


def test_sigma_data_is_a_stored_buffer():
    den = Denoiser(RandomNet(), sigma_data=0.37)
    state = den.state_dict()
    assert state["sigma_data"].item() == pytest.approx(0.37)
    other = Denoiser(RandomNet())
    other.load_state_dict(state)
    assert other.sigma_data.item() == pytest.approx(0.37)


def test_bad_arguments():
    with pytest.raises(ValueError, match="both"):
        Denoiser(RandomNet(), dirichlet_channel=G)
    with pytest.raises(ValueError, match="sigma_data"):
        Denoiser(RandomNet(), sigma_data=0.0)
    with pytest.raises(ValueError, match=r"precond='v' is unknown; expected one of \['edm', 'x0'\]"):
        Denoiser(RandomNet(), precond="v")
    from pdediff.learning.losses import EDMLoss

    with pytest.raises(ValueError, match=r"precond='v' is unknown"):
        EDMLoss(precond="v")


def test_x0_preconditioning_predicts_the_clean_field():
    """c_skip = 0 and c_out = sigma_data: the output is sigma_data F, whatever x is, so a network
    that ignores x gives an x-independent D (the exact denoiser of a spike posterior)."""
    x, sigma, cond = fields(seed=4)
    den = Denoiser(RecordingNet(torch.ones_like(x)), sigma_data=0.5, precond="x0").double()
    d = den(x, sigma, cond)
    assert torch.equal(d, torch.full_like(x, 0.5))
    assert torch.equal(den(3 * x + 1, sigma, cond), d)
    c_skip, c_out, c_in, c_noise = den.preconditioning(sigma)
    edm = Denoiser(RecordingNet(None), sigma_data=0.5).double().preconditioning(sigma)
    assert torch.all(c_skip == 0) and torch.all(c_out == 0.5)
    assert torch.equal(c_in, edm[2]) and torch.equal(c_noise, edm[3])


@pytest.mark.parametrize("precond", ["edm", "x0"])
def test_loss_weight_is_one_over_c_out_squared(precond):
    from pdediff.learning.losses import EDMLoss

    sigma = torch.tensor([0.01, 0.7, 30.0], dtype=torch.float64)
    loss = EDMLoss(sigma_data=0.8, precond=precond)
    _, c_out, _, _ = Denoiser(RecordingNet(None), sigma_data=0.8, precond=precond).double().preconditioning(sigma)
    torch.testing.assert_close(loss.weight(sigma), c_out.pow(-2), rtol=1e-6, atol=0)
    assert loss.weight(sigma.to("meta")).device.type == "meta"  # follows sigma (CUDA in training)
    if precond == "edm":  # Karras et al. Table 1
        torch.testing.assert_close(loss.weight(sigma), (sigma**2 + 0.64) / (0.64 * sigma**2), rtol=1e-6, atol=0)
