"""Sampling joint models from observations (pdediff.maths.observe, Solver.reconstruct).

Exact answers: for isotropic Gaussian data the posterior given noisy or exact observations of
some nodes is known in closed form (observed nodes: the precision-weighted mean of prior and
observation; the others: the prior), and with the exact prior denoiser the guided probability-
flow ODE must sample it: means and spreads of reconstruct's draws are checked against it.
"""

import numpy as np
import pytest
import torch

from pdediff.maths import observe
from pdediff.learning.conditioning import Normalisation
from pdediff.learning.config import Config, DataConfig, ModelConfig
from pdediff.physics.problems.base import boundary_mask
from pdediff.solver import Solver

N = 8
MU, S = 0.3, 0.7  # prior mean and standard deviation of every interior node (model units)


class GaussianOracle(torch.nn.Module):
    """The exact denoiser of rho, phi ~ N(MU, S^2) independently at interior nodes (rho = 0 and
    phi = g on the ring): D = MU + S^2 / (S^2 + sigma^2) (x - MU)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("sigma_data", torch.tensor(S, dtype=torch.float64))
        self.anchor = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))  # sets the solver's dtype
        self.calls = 0

    def forward(self, x, sigma, cond):
        self.calls += 1
        sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1, 1, 1)
        d = MU + S**2 / (S**2 + sigma**2) * (x - MU)
        ring = cond[:, -1:].bool()
        g = cond[:, :1]
        return torch.cat([torch.where(ring, 0.0, d[:, :1]), torch.where(ring, g, d[:, 1:])], dim=1) + 0 * self.anchor


def oracle_solver(steps=24):
    config = Config(data=DataConfig(problem="poisson"),
                    model=ModelConfig(joint=["rho", "phi"], sampler="heun", steps=steps, sigma_max=40.0,
                                      precond="edm"))
    norm = Normalisation({"rho": 1.0, "g": 1.0}, 1.0, S)
    return Solver(GaussianOracle(), config, norm, {"n": N})


def test_posterior_denoisers_are_exact_for_isotropic_gaussian_data():
    torch.manual_seed(0)
    x = torch.randn(3, 2, N, N, dtype=torch.float64) * 2
    y = torch.randn(3, 2, N, N, dtype=torch.float64)
    mask = (torch.rand(3, 2, N, N) < 0.3).double()
    prior = lambda x, sigma, cond: MU + S**2 / (S**2 + torch.as_tensor(sigma).reshape(-1, 1, 1, 1)**2) * (x - MU)  # noqa: E731
    for sigma in (0.05, 0.8, 12.0):
        for sigma_y in (0.0, 0.4):
            # Bayes: x0 | x ~ N(D, r^2), y = x0 + N(0, sigma_y^2) at observed nodes
            r2 = sigma**2 * S**2 / (sigma**2 + S**2)
            d = prior(x, torch.tensor(sigma, dtype=torch.float64), None)
            exact = d + mask * r2 / (r2 + sigma_y**2) * (y - d)
            for make in (observe.replacement, observe.observation_guided):
                got = make(prior, y, mask, S, sigma_y)(x, torch.full((3,), sigma, dtype=torch.float64), None)
                assert torch.allclose(got, exact, atol=1e-12), (make.__name__, sigma, sigma_y)


@pytest.mark.parametrize("method, cg_steps", [("dps", 0), ("replace", 0), ("dps", 2)])
def test_reconstruct_samples_the_gaussian_posterior(method, cg_steps):
    solver = oracle_solver()
    rng = np.random.default_rng(0)
    phi = np.full((N, N), np.nan)
    rho = np.full((N, N), np.nan)
    phi[2, 3], phi[5, 5] = 1.5, -0.4
    rho[3, 3] = 2.0
    sigma_y = 0.5
    draws = 3000
    ds = solver.reconstruct(samples=draws, seed=1, method=method, sigma_y=sigma_y, batch_size=1000,
                            rho=rho, phi=phi, return_samples=True, cg_steps=cg_steps)
    inside = ~boundary_mask(N)
    se = S / np.sqrt(draws)
    post_var = S**2 * sigma_y**2 / (S**2 + sigma_y**2)
    for name, obs in (("rho", rho), ("phi", phi)):
        seen = np.isfinite(obs) & inside
        mean_exact = np.where(seen, MU + S**2 / (S**2 + sigma_y**2) * (np.nan_to_num(obs) - MU), MU)
        std_exact = np.where(seen, np.sqrt(post_var), S)
        mean, std = ds[name].values, ds[f"{name}_std"].values
        assert np.all(np.abs(mean - mean_exact)[inside] < 4.5 * se), name
        assert np.all(np.abs(std / std_exact - 1)[inside] < 0.08), name
        assert ds[f"{name}_samples"].shape == (draws, N, N)
        assert np.array_equal(ds[f"{name}_observed"].values, seen)
    ring = boundary_mask(N)
    assert np.all(ds["phi"].values[ring] == 0) and np.all(ds["rho"].values[ring] == 0)
    assert ds.attrs["nfe"] == 2 * 24 - 1 and ds.attrs["method"] == method


def test_exact_observations_are_returned_exactly_and_draws_are_seeded():
    solver = oracle_solver(steps=8)
    phi = np.full((2, N, N), np.nan)
    phi[:, 4, 4] = [1.0, -2.0]
    g = np.zeros((2, N, N))
    g[:, 0, :] = 0.25
    ds = solver.reconstruct(samples=5, seed=3, phi=phi, g=g, batch_size=3)
    assert ds["phi"].dims == ("sample", "y", "x")
    assert np.array_equal(ds["phi"].values[:, 4, 4], [1.0, -2.0])
    assert np.all(ds["phi_std"].values[:, 4, 4] == 0)
    assert np.all(ds["phi"].values[:, 0, :] == 0.25)
    again = solver.reconstruct(samples=5, seed=3, phi=phi, g=g, batch_size=10)
    assert np.array_equal(again["rho"].values, ds["rho"].values)  # batching does not change the draws
    other = solver.reconstruct(samples=5, seed=4, phi=phi, g=g)
    assert not np.array_equal(other["rho"].values, ds["rho"].values)
    assert "residual" in ds and ds["residual_rel"].shape == (2,)


def test_reconstruct_bad_input_names_the_field():
    solver = oracle_solver(steps=4)
    phi = np.full((N, N), np.nan)
    phi[3, 3] = 1.0
    cases = [
        (dict(phi=np.zeros((N, N + 1))), "phi has shape"),
        (dict(phi=phi, rho=np.zeros((N + 1, N + 1))), "rho has shape"),
        (dict(phi=np.full((N, N), np.nan)), "phi has no observed node"),
        (dict(phi=np.stack([phi, np.full((N, N), np.nan)])), "sample 1 of the batch has no observed node"),
        (dict(phi=phi, samples=0), "samples=0"),
        (dict(phi=phi, g=np.full((N, N), np.nan)), "g is a condition"),
        (dict(phi=np.where(np.isnan(phi), np.nan, np.inf)), "phi contains inf"),
        (dict(psi=phi), "not fields of problem"),
        (dict(g=np.zeros((N, N))), "nothing of"),
        (dict(phi=phi, method="magic"), "method='magic'"),
        (dict(phi=phi, sigma_y=-1.0), "sigma_y=-1.0"),
        (dict(phi=phi, cg_steps=-1), "cg_steps=-1"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            solver.reconstruct(**kwargs)


def test_forward_model_refuses_to_reconstruct():
    import pdediff

    solver = pdediff.load_solver()
    with pytest.raises(ValueError, match="forward model.*joint model"):
        solver.reconstruct(phi=np.zeros((64, 64)))


# ------------------------------------------------------------------ joint models: training and loading
def joint_config(dataset, steps=30, observe=False, init=None):
    from pdediff.learning.config import Config

    c = Config(name="j")
    c.data.train = [str(dataset / "train.h5")]
    c.data.valid = [str(dataset / "valid.h5")]
    c.model.network_kwargs = {"model_channels": 8, "channel_mult": [1, 2], "attention_levels": []}
    c.model.joint = ["rho", "phi"]
    c.model.observe = observe
    c.model.steps = 4
    c.train.steps = steps
    c.train.batch_size = 8
    c.train.warmup_steps = 5
    c.train.log_every = 10
    c.train.valid_every = steps
    c.train.valid_samples = 8
    c.train.checkpoint_every = steps
    c.train.threads = 1
    c.train.init = init
    return c


def test_joint_model_trains_with_exact_ring_and_data_scales(tiny_dataset, tmp_path):
    import json

    from pdediff.data import load_arrays
    from pdediff.tools.training import Trainer

    trainer = Trainer(joint_config(tiny_dataset, steps=40).validate(), tmp_path / "run", progress=False)
    arrays = load_arrays(tiny_dataset / "train.h5", dtype=np.float64)
    # one scale per field from the data, never a per-sample one (a field may be unobserved)
    inside = ~boundary_mask(17)
    assert np.isclose(trainer.norm.field_rms["rho"], np.sqrt(np.mean(arrays["rho"][:, inside] ** 2)), rtol=1e-6)
    assert np.isclose(trainer.norm.solution_rms, np.sqrt(np.mean(arrays["phi"] ** 2)), rtol=1e-6)
    x0, cond = trainer._batch()
    assert x0.shape == (8, 2, 17, 17) and cond.shape == (8, 2, 17, 17)  # g and the ring mask
    ring = torch.as_tensor(boundary_mask(17))
    d = trainer.model(x0 + torch.randn_like(x0), torch.full((8,), 1.0), cond)
    assert torch.all(d[:, 0][:, ring] == 0) and torch.equal(d[:, 1][:, ring], cond[:, 0][:, ring])
    trainer.run()
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0 < record["valid_rel_l2_sigma0.05"] < record["valid_rel_l2_sigma5"]


def test_observation_inputs_start_as_the_joint_model_they_grow_from(tiny_dataset, tmp_path):
    from pdediff.learning.model import load_denoiser
    from pdediff.tools.training import Trainer, export_checkpoint

    base = Trainer(joint_config(tiny_dataset, steps=10), tmp_path / "base", progress=False)
    export_checkpoint(base.run(), tmp_path / "base.safetensors")
    grown = Trainer(joint_config(tiny_dataset, steps=10, observe=True, init=str(tmp_path / "base.safetensors")),
                    tmp_path / "grown", progress=False)
    source = load_denoiser(tmp_path / "base.safetensors").denoiser
    x0, cond = grown._batch()  # cond: g, mask, then rho and phi observations and masks
    assert cond.shape[1] == 2 + 4 and torch.any(cond[:, 2:] != 0)
    x = x0 + torch.randn_like(x0)
    with torch.no_grad():
        a = grown.model(x, torch.full((8,), 0.7), cond)
        b = source(x, torch.full((8,), 0.7), cond[:, :2])
    assert torch.allclose(a, b, atol=1e-6)  # zero weights on the new inputs: the same model
    grown.run()
    solver = Solver.from_checkpoint(tmp_path / "grown" / "checkpoint.safetensors")
    phi = np.full((17, 17), np.nan)
    phi[8, 8] = 0.1
    ds = solver.reconstruct(samples=2, phi=phi, steps=3)  # default: the network's own inputs
    assert ds.attrs["method"] == "none" and np.isfinite(ds["rho"]).all()
    with pytest.raises(ValueError, match="method='none' would ignore"):
        Solver.from_checkpoint(tmp_path / "base" / "checkpoint.safetensors").reconstruct(phi=phi, method="none")


def test_joint_config_errors_name_the_setting(tiny_dataset, tmp_path):
    from pdediff.tools.training import Trainer

    c = joint_config(tiny_dataset)
    c.model.joint = ["rho", "psi"]
    with pytest.raises(ValueError, match="model.joint=.*psi"):
        Trainer(c, tmp_path / "a", progress=False)
    c.model.joint = ["rho"]
    with pytest.raises(ValueError, match="lacks the solution field 'phi'"):
        Trainer(c, tmp_path / "b", progress=False)
    c.model.joint = ["g", "phi"]
    with pytest.raises(ValueError, match="Dirichlet data"):
        Trainer(c, tmp_path / "c", progress=False)
    c.model.joint = ["phi", "phi"]
    with pytest.raises(ValueError, match="names a field twice"):
        c.validate()
    c.model.joint, c.model.observe = [], True
    with pytest.raises(ValueError, match="model.observe=true needs model.joint"):
        c.validate()


def test_solve_cli_writes_the_posterior_to_netcdf(tiny_dataset, tmp_path, capsys):
    import xarray as xr

    import solve
    from pdediff.tools.training import Trainer, export_checkpoint

    export_checkpoint(Trainer(joint_config(tiny_dataset, steps=5), tmp_path / "run", progress=False).run(),
                      tmp_path / "joint.safetensors")
    phi = np.full((2, 17, 17), np.nan)
    phi[:, 5, 5] = [0.2, -0.1]
    np.save(tmp_path / "phi.npy", phi)
    out = tmp_path / "post.nc"
    assert solve.main(["--checkpoint", str(tmp_path / "joint.safetensors"), "--observe", f"phi={tmp_path / 'phi.npy'}",
                       "--samples", "3", "--steps", "3", "--out", str(out)]) == 0
    ds = xr.open_dataset(out)
    assert {"rho", "rho_std", "phi", "phi_std", "residual"} <= set(ds.data_vars) and ds["phi"].shape == (2, 17, 17)
    assert np.allclose(ds["phi"].values[:, 5, 5], [0.2, -0.1])
    for argv, message in ((["--observe", "psi=x.npy"], "not a field"), (["--observe", "phi"], "expected NAME=FILE")):
        with pytest.raises(SystemExit) as exc:
            solve.main(["--checkpoint", str(tmp_path / "joint.safetensors"), *argv, "--out", str(out)])
        assert exc.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        solve.main(["--checkpoint", str(tmp_path / "joint.safetensors"), "--observe", f"phi={tmp_path / 'phi.npy'}",
                    "--out", str(tmp_path / "post.npy")])
    assert exc.value.code == 2 and ".nc" in capsys.readouterr().err


def test_observations_far_from_the_training_scale_warn():
    from pdediff import AccuracyWarning

    solver = oracle_solver(steps=2)
    phi = np.full((N, N), np.nan)
    phi[3, 3] = 1e4
    with pytest.warns(AccuracyWarning, match="phi have 1e\\+04 times the size"):
        solver.reconstruct(samples=1, phi=phi)


def test_benchmark_observations_fall_where_a_field_is_unknown():
    from benchmarks.observe import observation
    from pdediff.learning.conditioning import unknown_nodes
    from pdediff.physics.problems import get_problem

    field = np.arange(2 * 16 * 16, dtype=float).reshape(2, 16, 16)
    where = unknown_nodes(get_problem("poisson"), "phi", 16)
    assert not where[boundary_mask(16)].any() and where[~boundary_mask(16)].all()
    seen = observation(field, 0.1, 0, where)
    kept = np.isfinite(seen)
    assert np.all(kept.sum(axis=(1, 2)) == round(0.1 * 256)) and not kept[:, boundary_mask(16)].any()
    assert np.array_equal(seen[kept], field[kept])
    assert np.array_equal(observation(field, 0.1, 0, where), seen, equal_nan=True)  # seeded
    assert np.array_equal(observation(field, None, 0, where), field)
