"""Two options of the score model: an energy parameterisation (model.energy) and a null
condition for classifier-free guidance (model.cond_dropout, solve/reconstruct cfg=)."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pdediff.maths.denoiser import Denoiser
from pdediff.maths.guidance import classifier_free
from pdediff.learning.networks import build_network
from pdediff.physics.problems.base import boundary_mask
from pdediff.solver import Solver
from pdediff.tools.training import Trainer, train

sys.path.insert(0, str(Path(__file__).parent))
from test_training import loss_before_and_after_training, tiny_config  # noqa: E402

N = 8


def tiny_denoiser(energy=False, null=None, precond="edm"):
    torch.manual_seed(0)
    net = build_network("unet", cond_channels=3 + (null is not None), model_channels=8, channel_mult=[1, 2],
                        attention_levels=[])
    with torch.no_grad():  # a network away from its initialisation (its output layer starts at zero)
        for w in net.parameters():
            w.add_(0.2 * torch.randn_like(w))
    return Denoiser(net, sigma_data=0.6, dirichlet_channel=1, mask_channel=2, precond=precond,
                    null_channels=null, energy=energy).double().eval()


def inputs(batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 1, N, N, generator=g, dtype=torch.float64)
    ring = torch.tensor(boundary_mask(N), dtype=torch.float64).expand(batch, N, N)
    cond = torch.stack([torch.randn(batch, N, N, generator=g, dtype=torch.float64),
                        torch.randn(batch, N, N, generator=g, dtype=torch.float64) * ring, ring], dim=1)
    return x, cond


def score_jacobian(denoiser, x, sigma, cond):
    """d score / d x at the interior nodes of one sample, (n, n)."""
    inside = torch.tensor(~boundary_mask(N)).flatten()

    def score(v):
        return denoiser.score(v.view(1, 1, N, N), sigma, cond[:1]).flatten()

    jac = torch.autograd.functional.jacobian(score, x[:1].flatten())
    return jac[inside][:, inside]


@pytest.mark.parametrize("precond", ["edm", "x0"])
def test_energy_score_is_curl_free_and_minus_the_energy_gradient(precond):
    energy, direct = tiny_denoiser(energy=True, precond=precond), tiny_denoiser(precond=precond)
    x, cond = inputs()
    sigma = 0.8
    jac = score_jacobian(energy, x, sigma, cond)
    assert torch.allclose(jac, jac.T, atol=1e-10 * float(jac.abs().max()))
    # the same network read directly has an asymmetric Jacobian: the check can fail
    jac_direct = score_jacobian(direct, x, sigma, cond)
    assert float((jac_direct - jac_direct.T).abs().max()) > 1e-3 * float(jac_direct.abs().max())
    # score = -grad E at the unknown (interior) nodes; the ring holds the data exactly
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(energy.energy_value(xg, sigma, cond).sum(), xg)
    inside = torch.tensor(~boundary_mask(N))
    with torch.no_grad():
        score = energy.score(x, sigma, cond)
        d = energy(x, sigma, cond)
    assert torch.allclose(score[..., inside], -grad[..., inside], atol=1e-12 * float(grad.abs().max()))
    assert torch.equal(d[:, 0][:, ~inside], cond[:, 1][:, ~inside])
    with pytest.raises(ValueError, match="model.energy"):
        direct.energy_value(x, sigma, cond)


def test_energy_model_trains_by_denoising_score_matching(tiny_dataset, tmp_path):
    # as tests/test_training.py's direct model: the loss on the same batches halves
    c = tiny_config(tiny_dataset, steps=150, lr=3e-3, batch_size=16)
    c.model.energy = True
    trainer = Trainer(c.validate(), tmp_path / "e", progress=False)
    before, after = loss_before_and_after_training(trainer)
    assert after < 0.5 * before, (before, after)
    solver = Solver.from_checkpoint(trainer.ckpt_path)
    assert solver.denoiser.energy
    rho = np.random.default_rng(0).standard_normal((2, 17, 17))
    g = np.random.default_rng(1).standard_normal((2, 17, 17))
    phi = solver.solve(rho, g, estimate=False)
    ring = boundary_mask(17)
    assert np.all(np.isfinite(phi)) and np.array_equal(phi[:, ring], g[:, ring])
    # the energy of a pair: per sample, and blind to the pair's scale (the PDE is linear)
    e = solver.energy(rho=rho, g=g, phi=phi)
    assert e.shape == (2,) and np.all(np.isfinite(e)) and np.all(e >= 0)
    for c in (-3.0, 1e-30, 1e30):
        assert np.allclose(solver.energy(rho=c * rho, g=c * g, phi=c * phi), e, rtol=1e-4)
    assert isinstance(solver.energy(rho=rho[0], g=g[0], phi=phi[0]), float)
    with pytest.raises(ValueError, match="phi is missing"):
        solver.energy(rho=rho, g=g)
    with pytest.raises(ValueError, match="sigma=0"):
        solver.energy(sigma=0, rho=rho, g=g, phi=phi)
    import pdediff

    with pytest.raises(ValueError, match="model.energy"):
        pdediff.load_solver().energy(rho=np.zeros((64, 64)), phi=np.zeros((64, 64)))


def test_null_condition_drops_sources_and_keeps_the_dirichlet_data():
    denoiser = tiny_denoiser(null=(0,))
    x, cond = inputs()
    other = cond.clone()
    other[:, 0] = 5.0  # another source
    with torch.no_grad():
        a = denoiser(x, 0.7, cond, null=True)
        b = denoiser(x, 0.7, other, null=True)
        c = denoiser(x, 0.7, cond)
        per_sample = denoiser(x, 0.7, other, null=torch.tensor([True, False]))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert torch.equal(per_sample[0], a[0]) and torch.equal(per_sample[1], denoiser(x, 0.7, other)[1].detach())
    ring = torch.tensor(boundary_mask(N))
    assert torch.equal(a[:, 0][:, ring], cond[:, 1][:, ring])  # the data stay exact under the null condition
    # classifier-free guidance: (1 + w) D(x | c) - w D(x | null); w = 0 is the denoiser itself
    w = 1.5
    with torch.no_grad():
        guided = classifier_free(denoiser, w)(x, 0.7, cond)
    assert torch.allclose(guided, (1 + w) * c - w * a, atol=1e-12)
    assert classifier_free(denoiser, 0.0) is denoiser
    with pytest.raises(ValueError, match="no null condition"):
        tiny_denoiser()(x, 0.7, cond, null=True)


def test_cfg_trains_with_dropout_and_solves(tiny_dataset, tmp_path):
    c = tiny_config(tiny_dataset, steps=10)
    c.model.cond_dropout = 0.5
    trainer = Trainer(c.validate(), tmp_path / "c", progress=False)
    wrapped = trainer._with_dropout(4000, "cpu")
    share = float(wrapped.keywords["null"].float().mean())
    assert abs(share - 0.5) < 0.03
    trainer.run()
    solver = Solver.from_checkpoint(trainer.ckpt_path)
    rho = np.random.default_rng(0).standard_normal((2, 17, 17))
    g = np.random.default_rng(1).standard_normal((2, 17, 17))
    plain, info = solver.solve(rho, g, estimate=False, return_info=True)
    assert np.array_equal(solver.solve(rho, g, estimate=False, cfg=0.0), plain)  # cfg = 0 is the unguided answer
    guided, guided_info = solver.solve(rho, g, estimate=False, cfg=2.0, return_info=True)
    ring = boundary_mask(17)
    assert not np.allclose(guided, plain) and np.array_equal(guided[:, ring], g[:, ring])
    assert guided_info.nfe == 2 * info.nfe
    with pytest.raises(ValueError, match="cfg=nan"):
        solver.solve(rho, g, cfg=float("nan"))


def test_cfg_and_dropout_bad_input_names_the_setting(tiny_dataset, tmp_path):
    import pdediff

    with pytest.raises(ValueError, match="cfg=1.0 needs a model trained with a null condition"):
        pdediff.load_solver().solve(np.zeros((64, 64)), cfg=1.0)
    c = tiny_config(tiny_dataset)
    c.model.cond_dropout = 1.0
    with pytest.raises(ValueError, match="model.cond_dropout=1.0"):
        c.validate()
    base = train(tiny_config(tiny_dataset, steps=2, checkpoint_every=2), tmp_path / "base", progress=False)
    c = tiny_config(tiny_dataset, init=str(base))
    c.model.cond_dropout = 0.1
    with pytest.raises(ValueError, match="cond_dropout"):
        Trainer(c.validate(), tmp_path / "grown", progress=False)


def test_reconstruct_with_cfg_on_an_observation_model(tiny_dataset, tmp_path):
    """The null condition of an observation-conditioned joint model drops the observations: cfg=0
    is the unguided posterior, and w != 0 moves it, with the observed values still exact."""
    from test_observe import joint_config

    c = joint_config(tiny_dataset, steps=10, observe=True)
    c.model.cond_dropout = 0.2
    trainer = Trainer(c.validate(), tmp_path / "j", progress=False)
    from pdediff.learning.model import condition_names

    names = condition_names(c, trainer.problem)  # g, the ring mask, then each field's values and mask
    assert [names[i] for i in trainer.model.null_channels] == ["rho_obs", "rho_seen", "phi_obs", "phi_seen"]
    trainer.run()
    solver = Solver.from_checkpoint(trainer.ckpt_path)
    phi = np.full((17, 17), np.nan)
    phi[4, 5], phi[10, 12] = 0.3, -0.2
    plain = solver.reconstruct(samples=2, phi=phi, method="none")
    same = solver.reconstruct(samples=2, phi=phi, method="none", cfg=0.0)
    guided = solver.reconstruct(samples=2, phi=phi, method="none", cfg=1.0)
    assert np.array_equal(plain["phi"].values, same["phi"].values)
    assert not np.allclose(plain["phi"].values, guided["phi"].values)
    assert guided["phi"].values[4, 5] == 0.3 and guided.attrs["nfe"] == 2 * plain.attrs["nfe"]


def test_observation_inputs_grow_before_the_null_flag(tiny_dataset, tmp_path):
    """A joint model with a null condition grown to take observations starts as that model: the
    new inputs enter between its conditions and its presence flag, with zero weights."""
    from test_observe import joint_config

    from pdediff.learning.model import load_denoiser
    from pdediff.tools.training import export_checkpoint

    c = joint_config(tiny_dataset, steps=4)
    c.model.cond_dropout = 0.2
    base = Trainer(c.validate(), tmp_path / "base", progress=False)
    export_checkpoint(base.run(), tmp_path / "base.safetensors")
    c = joint_config(tiny_dataset, steps=4, observe=True, init=str(tmp_path / "base.safetensors"))
    c.model.cond_dropout = 0.2
    grown = Trainer(c.validate(), tmp_path / "grown", progress=False)
    source = load_denoiser(tmp_path / "base.safetensors").denoiser
    x0, cond = grown._batch()
    x = x0 + torch.randn_like(x0)
    with torch.no_grad():
        for null in (False, True):
            a = grown.model(x, torch.full((8,), 0.7), cond, null=null)
            b = source(x, torch.full((8,), 0.7), cond[:, :2], null=null)
            assert torch.allclose(a, b, atol=1e-6)
    # this joint model's conditions are Dirichlet data only: its null condition drops nothing
    solver = Solver.from_checkpoint(tmp_path / "base" / "checkpoint.safetensors")
    phi = np.full((17, 17), np.nan)
    phi[8, 8] = 0.1
    with pytest.raises(ValueError, match="cfg=1.0 would guide nothing"):
        solver.reconstruct(samples=1, phi=phi, cfg=1.0)


def test_energy_model_refuses_inference_mode():
    energy = tiny_denoiser(energy=True)
    x, cond = inputs()
    with torch.inference_mode(), pytest.raises(ValueError, match="torch.no_grad"):
        energy(x, 0.5, cond)
