"""Tests of the score networks: shapes, gradients, per-sample conditioning, grids, registry."""

import json

import pytest
import numpy as np
import torch

from pdediff.learning.networks import NETWORKS, FNOScore, UNet, build_network

COND_CHANNELS = 3

# Tiny set-ups so the whole file runs in seconds on a shared CPU.
TINY = {
    "unet": dict(model_channels=8, channel_mult=(1, 2), num_blocks=1, attention_levels=(1,)),
    "fno": dict(hidden_channels=8, n_modes=(6, 6), n_layers=2),
}


def make_net(name, seed=0, **overrides):
    torch.manual_seed(seed)
    return build_network(name, COND_CHANNELS, **{**TINY[name], **overrides})


def perturb_zero_params(net, seed=1):
    """Give the zero-initialised parameters random values, so every layer sees a gradient."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                noise = torch.randn(p.shape, generator=gen, dtype=torch.float32) * 0.1
                p.copy_(noise.to(p.dtype))
    return net


def inputs(b, n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 1, n, n, generator=gen)
    c_noise = torch.randn(b, generator=gen)
    cond = torch.randn(b, COND_CHANNELS, n, n, generator=gen)
    return x, c_noise, cond


@pytest.mark.parametrize("name", sorted(NETWORKS))
@pytest.mark.parametrize("n", [16, 17, 32])
def test_output_shape(name, n):
    net = perturb_zero_params(make_net(name))
    out = net(*inputs(2, n))
    assert out.shape == (2, 1, n, n)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_default_config_at_64_starts_at_zero(name):
    net = NETWORKS[name](COND_CHANNELS)
    x, c_noise, cond = inputs(1, 64)
    out = net(x, c_noise, cond)
    assert out.shape == (1, 1, 64, 64)
    # The output layer is zero-initialised: the untrained model outputs exactly 0.
    assert not out.any()
    out.sum().backward()
    last = net.output_conv.weight if name == "unet" else net.projection[-1].weight
    assert last.grad is not None and last.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_backward_reaches_every_parameter(name):
    net = perturb_zero_params(make_net(name))
    out = net(*inputs(2, 16))
    out.square().mean().backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(torch.view_as_real(p.grad) if p.is_complex() else p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", sorted(NETWORKS))
@pytest.mark.parametrize("what", ["c_noise", "cond"])
def test_conditioning_is_per_sample(name, what):
    net = perturb_zero_params(make_net(name)).eval()
    x, c_noise, cond = inputs(3, 16)
    with torch.no_grad():
        before = net(x, c_noise, cond)
        if what == "c_noise":
            c_noise = c_noise.clone()
            c_noise[1] += 0.5
        else:
            cond = cond.clone()
            cond[1] += torch.randn_like(cond[1])
        after = net(x, c_noise, cond)
    torch.testing.assert_close(after[[0, 2]], before[[0, 2]], rtol=0, atol=1e-6)
    assert (after[1] - before[1]).abs().max() > 1e-4


def test_fno_runs_at_other_resolutions_with_the_same_weights():
    net = perturb_zero_params(make_net("fno")).eval()
    with torch.no_grad():
        for n in (32, 64, 65):
            out = net(*inputs(2, n))
            assert out.shape == (2, 1, n, n)
            assert torch.isfinite(out).all()


def test_fno_is_consistent_across_resolutions():
    # Smooth inputs sampled on a 33-node and a 65-node grid (every other node of the finer grid
    # is a node of the coarser one) give nearly the same output on the shared nodes.
    import math

    net = perturb_zero_params(make_net("fno")).eval()

    def smooth_inputs(n):
        t = torch.linspace(0.0, 1.0, n)
        y, x = torch.meshgrid(t, t, indexing="ij")
        phi = torch.sin(math.pi * x) * torch.sin(2 * math.pi * y)
        cond = torch.stack([torch.cos(math.pi * x * y), x * y, x + y])
        return phi[None, None], torch.tensor([0.3]), cond[None]

    with torch.no_grad():
        coarse = net(*smooth_inputs(33))
        fine = net(*smooth_inputs(65))[..., ::2, ::2]
    assert (coarse - fine).norm() / coarse.norm() < 0.15

    # grids that share no nodes, odd and even (N = 63 was padded to an odd FFT length before the
    # fix, 130 % away from N = 65); compared by interpolation at common points. What is left (up to
    # 5 %) is the padded box, whose length in physical units can only be matched to a node
    from scipy.interpolate import RegularGridInterpolator

    q = np.linspace(0.05, 0.95, 30)
    points = np.stack(np.meshgrid(q, q, indexing="ij"), -1)
    values = {}
    with torch.no_grad():
        for n in (63, 64, 65, 128):
            out = net(*smooth_inputs(n))[0, 0].numpy()
            t = np.linspace(0.0, 1.0, n)
            values[n] = RegularGridInterpolator((t, t), out)(points)
    for n in (63, 64, 128):
        assert np.linalg.norm(values[n] - values[65]) / np.linalg.norm(values[65]) < 0.06, n


def test_unet_pads_grids_that_are_not_a_multiple():
    # 2^k + 1 node grids are common; the U-Net pads them internally and crops the output.
    net = perturb_zero_params(make_net("unet", channel_mult=(1, 2, 2), attention_levels=()))
    assert net.grid_multiple == 4
    for n in (33, 34, 35):
        net.check_grid(n, n)
        assert net(*inputs(1, n)).shape == (1, 1, n, n)


@pytest.mark.parametrize("name,shape", [("unet", (4, 4)), ("unet", (64, 6)), ("fno", (3, 64))])
def test_bad_grid_raises_naming_the_shape(name, shape):
    net = make_net(name, **({"channel_mult": (1, 2, 2), "attention_levels": ()} if name == "unet" else {}))
    with pytest.raises(ValueError, match=rf"\({shape[0]}, {shape[1]}\)"):
        net.check_grid(*shape)
    x = torch.zeros(1, 1, *shape)
    with pytest.raises(ValueError, match=rf"\({shape[0]}, {shape[1]}\)"):
        net(x, torch.zeros(1), torch.zeros(1, COND_CHANNELS, *shape))


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_mismatched_inputs_raise(name):
    net = make_net(name)
    x, c_noise, cond = inputs(2, 16)
    with pytest.raises(ValueError, match="cond has shape"):
        net(x, c_noise, cond[:, :2])
    with pytest.raises(ValueError, match="c_noise has shape"):
        net(x, c_noise[:1], cond)
    with pytest.raises(ValueError, match="x has shape"):
        net(x[:, 0], c_noise, cond)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_config_round_trips_through_json(name):
    net = make_net(name, embed="positional")
    config = json.loads(json.dumps(net.config))
    clone = NETWORKS[name](**config)
    clone.load_state_dict(net.state_dict())
    x, c_noise, cond = inputs(1, 16)
    perturb_zero_params(net)
    clone.load_state_dict(net.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(clone(x, c_noise, cond), net(x, c_noise, cond))


def test_state_dict_saves_as_safetensors(tmp_path):
    # The FNO's spectral weights are complex; safetensors must carry them.
    from safetensors.torch import load_file, save_file

    net = make_net("fno")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp_path / "w.safetensors")
    clone = make_net("fno", seed=5)
    clone.load_state_dict(load_file(tmp_path / "w.safetensors"))
    for (k, a), b in zip(net.state_dict().items(), clone.state_dict().values()):
        assert torch.equal(a, b), k


def test_registry_builds_what_it_names_and_bad_options():
    # every registered network has a tiny set-up here, so every parametrized test covers it
    assert set(TINY) == set(NETWORKS)
    for name, cls in NETWORKS.items():
        net = build_network(name, COND_CHANNELS, **TINY[name])
        assert type(net) is cls and net.config["cond_channels"] == COND_CHANNELS
        assert {k: v for k, v in net.config.items() if k in TINY[name]} == json.loads(json.dumps(TINY[name]))
        # the solver reads this to choose between solving natively and resampling (pdediff.data.cases.grid_options)
        assert isinstance(cls.resolution_free, bool)
    assert NETWORKS["fno"].resolution_free and not NETWORKS["unet"].resolution_free
    with pytest.raises(ValueError, match=r"'transformer' is not known; choose one of \['fno', 'unet'\]"):
        build_network("transformer", COND_CHANNELS)
    with pytest.raises(ValueError, match="network_kwargs=.*do not fit network 'fno'"):
        build_network("fno", COND_CHANNELS, model_channels=8)
    with pytest.raises(ValueError, match="embed"):
        UNet(COND_CHANNELS, embed="learned")
    with pytest.raises(ValueError, match="attention_levels"):
        UNet(COND_CHANNELS, channel_mult=(1, 2), attention_levels=(2,))
    with pytest.raises(ValueError, match="n_modes"):
        FNOScore(COND_CHANNELS, n_modes=(8,))
