"""A forward network that also takes the problem's operator guess (``model.operator_input``):
the guess itself, its channel, the zero-initialised fine-tune from a model without it, and the
problems and models that refuse it."""

import numpy as np
import pytest
import torch

from pdediff.learning.conditioning import Normalisation, channel_names, encode, encode_solution
from pdediff.learning.config import Config
from pdediff.physics.problems import get_problem
from pdediff.physics.sources import draw
from pdediff.solver import Solver


def config(dataset, steps=6, operator_input=False, init=None):
    c = Config(name="op")
    c.data.train, c.data.valid = [str(dataset / "train.h5")], []
    c.model.network_kwargs = {"model_channels": 8, "channel_mult": [1, 2], "attention_levels": []}
    c.model.precond, c.model.sampler, c.model.steps = "x0", "euler", 2
    c.model.operator_input = operator_input
    c.train.steps, c.train.batch_size, c.train.valid_every, c.train.warmup_steps = steps, 8, 0, 1
    c.train.init = init
    return c


@pytest.mark.parametrize("name", ["poisson", "darcy"])
def test_the_guess_is_one_multigrid_step_toward_the_solution(name):
    problem = get_problem(name)
    n = 33
    if name == "poisson":
        rho, g = draw(n, 3, source="blobs", boundary="smooth", seed=4)
        fields = (rho, g)
    else:
        from pdediff.physics.coefficients import ThresholdField
        from pdediff.physics.problems import Grid

        a = ThresholdField().sample(Grid(n), [np.random.default_rng(k) for k in range(3)])
        fields = (a, np.ones_like(a), np.zeros_like(a))
    exact = problem.reference_solve(*fields)
    guess = problem.operator_guess(*fields)
    ring = problem.grid(n).boundary_mask
    np.testing.assert_array_equal(guess[:, ring], exact[:, ring])  # the Dirichlet data exactly
    err = np.linalg.norm((guess - exact).reshape(3, -1), axis=1) / np.linalg.norm(exact.reshape(3, -1), axis=1)
    assert np.all(err < 0.5)  # far from zero's 100 %: a multigrid step
    # linear in the data: twice the fields, twice the guess
    doubled = tuple(2 * f for f in fields) if name == "poisson" else (fields[0], 2 * fields[1], fields[2])
    np.testing.assert_allclose(problem.operator_guess(*doubled), 2 * guess, rtol=1e-10, atol=1e-12)


def test_the_guess_channel_is_in_the_units_of_the_normalised_solution():
    problem = get_problem("poisson")
    norm = Normalisation(solution_rms=0.3, field_rms={"rho": 2.0, "g": 0.5}, sigma_data=0.8)
    rho, g = draw(17, 2, source="blobs", boundary="smooth", seed=5)
    fields = {"rho": torch.as_tensor(rho), "g": torch.as_tensor(g)}
    plain, s = encode(problem, norm, fields)
    cond, s2 = encode(problem, norm, fields, operator_input=True)
    assert channel_names(problem, True) == ["rho", "g", "mask", "guess"] and cond.shape[1] == 4
    assert torch.equal(cond[:, :3], plain) and torch.equal(s, s2)
    want = encode_solution(norm, torch.as_tensor(problem.operator_guess(rho, g)), s)[:, 0]
    torch.testing.assert_close(cond[:, 3], want.to(cond.dtype))


def test_a_model_grown_to_take_the_guess_starts_as_the_one_it_came_from(tiny_dataset, tmp_path):
    from pdediff.learning.model import load_denoiser
    from pdediff.tools.training import Trainer, export_checkpoint

    base = Trainer(config(tiny_dataset), tmp_path / "base", progress=False)
    export_checkpoint(base.run(), tmp_path / "base.safetensors")
    grown = Trainer(config(tiny_dataset, operator_input=True, init=str(tmp_path / "base.safetensors")),
                    tmp_path / "grown", progress=False)
    source = load_denoiser(tmp_path / "base.safetensors").denoiser
    x0, cond = grown._batch()
    assert cond.shape[1] == 4 and torch.any(cond[:, 3] != 0)
    x = x0 + torch.randn_like(x0)
    with torch.no_grad():
        a = grown.model(x, torch.full((8,), 0.7), cond)
        b = source(x, torch.full((8,), 0.7), cond[:, :3])
    assert torch.allclose(a, b, atol=1e-6)  # zero weights on the new input: the same model
    grown.run()
    solver = Solver.from_checkpoint(tmp_path / "grown" / "checkpoint.safetensors")
    assert solver.config.model.operator_input
    rho, g = draw(17, 2, source="blobs", boundary="smooth", seed=6)
    phi = solver.solve(rho, g, estimate=False)
    assert phi.shape == (2, 17, 17) and np.isfinite(phi).all()
    ring = solver.problem.grid(17).boundary_mask
    np.testing.assert_array_equal(phi[:, ring], g[:, ring])
    with pytest.raises(ValueError, match="takes the operator guess as an input and this config does not"):
        Trainer(config(tiny_dataset, init=str(tmp_path / "grown" / "checkpoint.safetensors")), tmp_path / "back",
                progress=False)


def test_problems_without_a_guess_and_joint_models_refuse_it():
    from pdediff.learning.model import network_channels

    c = Config(name="x")
    c.model.operator_input = True
    with pytest.raises(ValueError, match="problem 'helmholtz'.*operator_input: false"):
        network_channels(c, get_problem("helmholtz"))
    c.model.joint = ["rho", "phi"]
    with pytest.raises(ValueError, match="a joint model"):
        network_channels(c, get_problem("poisson"))
    with pytest.raises(ValueError, match="offers no operator guess"):
        get_problem("helmholtz").operator_guess(np.zeros((17, 17)))
    c = Config(name="x")
    c.model.operator_input = True
    assert Config.from_dict(c.to_dict()).model.operator_input  # round-trips
