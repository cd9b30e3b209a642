"""The Solver on an untrained (random) model: exact scale equivariance, exact boundary values,
batch independence, polish and guidance plumbing, clear errors; and the solve.py CLI."""

from pathlib import Path

import numpy as np
import pytest
import torch

from pdediff.physics import metrics
from pdediff.data.checkpoint import save_checkpoint, prefixed
from pdediff.learning.conditioning import fit_normalisation
from pdediff.learning.config import Config
from pdediff.learning.model import build_denoiser
from pdediff.physics.problems import PROBLEMS
from pdediff.solver import Solver, load_solver

POISSON = PROBLEMS["poisson"]
N = 16


def _data(b=4, seed=0):
    rng = np.random.default_rng(seed)
    rho = rng.normal(size=(b, N, N))
    g = np.zeros_like(rho)
    g[:, 0, :], g[:, :, -1] = rng.normal(size=(b, N)), rng.normal(size=(b, N))
    return rho, g, POISSON.reference_solve(rho, g)


@pytest.fixture(scope="module")
def solver():
    rho, g, phi = _data(8)
    norm = fit_normalisation(POISSON, {"rho": rho, "g": g, "phi": phi})
    c = Config()
    c.model.network_kwargs = {"model_channels": 8, "channel_mult": [1, 2], "attention_levels": []}
    torch.manual_seed(0)
    d = build_denoiser(c, POISSON, norm)
    with torch.no_grad():
        for p in d.parameters():  # a random, untrained network (zero-initialised layers too)
            p.normal_(0.0, 0.1)
    return Solver(d, c, norm, {"n": N})


@pytest.mark.parametrize("c", [1e-3, 1e3, -2.0])
def test_scale_equivariance(solver, c):
    rho, g, _ = _data()
    phi = solver.solve(rho, g, steps=4)
    phi_c = solver.solve(c * rho, c * g, steps=4)
    np.testing.assert_allclose(phi_c, c * phi, rtol=1e-5, atol=1e-5 * abs(c) * np.abs(phi).max())


def test_zero_input_gives_exactly_zero(solver):
    assert np.all(solver.solve(np.zeros((N, N)), steps=3) == 0.0)


@pytest.mark.parametrize("zero_g", [True, False])
def test_boundary_values_are_exact(solver, zero_g):
    rho, g, _ = _data()
    if zero_g:
        g = np.zeros_like(g)
    phi = solver.solve(rho, g, steps=3)
    ring = POISSON.grid(N).boundary_mask
    assert np.array_equal(phi[:, ring], g[:, ring])


@pytest.mark.parametrize("sampler", ["heun", "euler_maruyama", "pc"])
def test_results_do_not_depend_on_batching(solver, sampler):
    rho, g, _ = _data()
    batch = solver.solve(rho, g, sampler=sampler, steps=3, batch_size=4)
    one = solver.solve(rho[2], g[2], sampler=sampler, steps=3)
    assert one.shape == (N, N) and batch.shape == (4, N, N)
    small = solver.solve(rho, g, sampler=sampler, steps=3, batch_size=1)
    np.testing.assert_allclose(small, batch, rtol=1e-4, atol=1e-5 * np.abs(batch).max())
    np.testing.assert_array_equal(solver.solve(rho, g, sampler=sampler, steps=3, seed=5),
                                  solver.solve(rho, g, sampler=sampler, steps=3, seed=5))
    assert not np.array_equal(solver.solve(rho, g, sampler=sampler, steps=3, seed=6), batch)


def test_polish_converges_to_the_reference(solver):
    rho, g, ref = _data()
    phi, info = solver.solve(rho, g, steps=3, polish=400, return_info=True)
    np.testing.assert_allclose(phi, ref, atol=1e-9 * np.abs(ref).max())
    assert info.nfe == 5 and info.polish_iterations


@pytest.mark.parametrize("method", ["amg", "cg"])
def test_polish_methods(solver, method):
    rho, g, ref = _data()
    phi, info = solver.solve(rho, g, steps=3, polish=10, polish_method=method, return_info=True)
    err = np.abs(phi - ref).max() / np.abs(ref).max()
    assert all(0 < k <= 10 for k in info.polish_iterations)
    # AMG-preconditioned CG converges in a few iterations on N = 16; plain CG has not yet
    assert err < 1e-8 if method == "amg" else err > 1e-8


def test_resample_solves_on_the_training_grid(solver):
    """On a finer grid, resample=True equals the training-grid solve of the restricted input
    (rho's ignored ring values dropped first), prolonged by the spline, with the ring set to g."""
    from pdediff.maths.regrid import prolong, restrict, transfer_ring

    rng = np.random.default_rng(7)
    n = 2 * N - 1
    rho = rng.normal(size=(3, n, n))
    g = np.zeros_like(rho)
    g[:, 0, :] = np.sin(np.linspace(0, 3, n))
    phi = solver.solve(rho, g, steps=3, resample=True)
    acting = np.where(POISSON.grid(n).boundary_mask, 0.0, rho)
    coarse = solver.solve(restrict(acting, N), transfer_ring(g, N), steps=3)
    expected = prolong(coarse, n)
    ring = POISSON.grid(n).boundary_mask
    assert np.array_equal(phi[:, ring], g[:, ring])
    # float32 rounding: the two calls scale their (different) inputs by different peak values
    tol = 1e-5 * np.abs(expected).max()
    np.testing.assert_allclose(phi[:, ~ring], expected[:, ~ring], rtol=1e-5, atol=tol)
    np.testing.assert_allclose(phi[:, ::2, ::2][:, 1:-1, 1:-1], coarse[:, 1:-1, 1:-1], rtol=1e-5, atol=tol)
    # a grid too small for the U-Net itself is fine: the network runs on its own grid
    assert solver.solve(rho[:, :6, :6], steps=3, resample=True).shape == (3, 6, 6)  # plain: refused, see test_bad_input
    # on the training grid, resample changes nothing
    np.testing.assert_array_equal(solver.solve(rho[:, ::2, ::2], steps=3, resample=True),
                                  solver.solve(rho[:, ::2, ::2], steps=3))


def test_solve_dataset(solver):
    rho, g, _ = _data(3)
    ds = solver.solve_dataset(rho, g, steps=3)
    assert ds["phi"].dims == ("sample", "y", "x") and ds["phi"].shape == (3, N, N)
    np.testing.assert_allclose(ds["x"].values, np.linspace(0, 1, N))
    np.testing.assert_array_equal(ds["phi"].values, solver.solve(rho, g, steps=3))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(rho=np.zeros((N, N + 1))), r"rho has shape \(16, 17\); expected a square"),
        (dict(rho=np.zeros((4, 4))), r"N >= 5"),
        (dict(rho=np.zeros((6, 6))), r"rho has shape \(6, 6\).*U-Net"),
        (dict(rho=np.full((N, N), np.nan)), r"rho contains 256 NaN"),
        (dict(rho=np.zeros((N, N)), g=np.zeros((N - 1, N - 1))), r"g has shape \(15, 15\); expected \(16, 16\)"),
        (dict(rho=np.zeros((N, N)), g=np.full((N, N), np.inf)), r"g contains"),
        (dict(rho=np.zeros((N, N)), sampler="rk4"), r"sampler='rk4'"),
        (dict(rho=np.zeros((N, N)), steps=0), r"steps=0"),
        (dict(rho=np.zeros((N, N)), kappa=1), r"'kappa' is not a field"),
        (dict(rho=np.zeros((N, N)), polish=2, polish_method="sor"), r"polish_method='sor' is unknown"),
        (dict(rho=np.zeros((N, N)), polish_method="sor"), r"polish_method='sor' is unknown"),
        (dict(rho=np.zeros((N, N)), resample="yes"), r"resample='yes' is invalid; expected True or False"),
        (dict(rho=np.zeros((N, N)), progress="no"), r"progress='no' is invalid; expected True or False"),
        (dict(rho=np.zeros((N, N)), return_info=1), r"return_info=1 is invalid; expected True or False"),
        (dict(rho=np.zeros((2 * N, 2 * N))), r"not resolution-free \(pass resample=True"),
    ],
)
def test_bad_input(solver, kwargs, match):
    with pytest.raises(ValueError, match=match):
        solver.solve(**kwargs)


def test_bad_checkpoints(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_solver(tmp_path / "none.safetensors")
    empty = save_checkpoint(tmp_path / "empty.safetensors", {"x.w": torch.zeros(1)}, {"step": 0})
    with pytest.raises(ValueError, match="incomplete metadata"):
        load_solver(empty)


def test_solve_cli_check_and_plot(solver, tmp_path, monkeypatch, capsys, record_plot_rows, png_pixels):
    import pdediff.tools.cli
    import solve as solve_cli

    def run(*argv):
        """solve.py's ``main`` in this process: (exit status, stdout, stderr)."""
        try:
            code = solve_cli.main(list(argv))
        except SystemExit as exc:  # argparse's exit(): status 2 with a message
            code = exc.code
        out = capsys.readouterr()
        return code, out.out, out.err

    ckpt = save_checkpoint(tmp_path / "m.safetensors", prefixed("ema", solver.denoiser.state_dict()),
                           {"config": solver.config.to_dict(), "normalisation": solver.norm.to_dict(),
                            "card": {"n": N}})
    rho, g, ref = _data(3)
    np.save(tmp_path / "rho.npy", rho)
    np.savez(tmp_path / "g.npz", g=g)
    monkeypatch.chdir(tmp_path)
    plotted = record_plot_rows(pdediff.tools.cli)
    argv = ["--checkpoint", str(ckpt), "--rho", "rho.npy", "--g", "g.npz", "--out", "phi.npy", "--steps", "3",
            "--check", "--plot", "p.png"]
    code, out, err = run(*argv)
    assert code == 0, err
    phi = np.load(tmp_path / "phi.npy")
    np.testing.assert_array_equal(phi, solver.solve(rho, g, steps=3))  # the library's answer, written as is
    # the printed figures are those of the written answer against the reference
    figures = {line[:22].strip(): line[22:].split() for line in out.splitlines() if len(line) > 22}
    expected = metrics.report(POISSON, phi, {"rho": rho, "g": g}, ref)
    for name, values in expected.items():
        mean, worst = map(float, figures[name])
        assert mean == pytest.approx(np.mean(values), rel=2e-3, abs=1e-300)
        assert worst == pytest.approx(np.max(values), rel=2e-3, abs=1e-300)
    assert {"time pdediff [s]", "time reference [s]"} <= set(figures)
    # the plot: the first sample's rho, phi and reference, in a one-row gallery of that size
    [(path, rows)] = plotted
    assert path == Path("p.png") and len(rows) == 1
    np.testing.assert_array_equal(rows[0][1], rho[0])
    np.testing.assert_array_equal(rows[0][2], phi[0])
    np.testing.assert_allclose(rows[0][3], ref[0], rtol=1e-10, atol=1e-12)
    png_pixels(tmp_path / "p.png", 1350, 306)
    assert "estimated relative error: median" in out
    # --tol: polished until every estimate is below it
    code, out, err = run(*argv[:6], "--out", "tol.npy", "--steps", "3", "--tol", "1e-6")
    assert code == 0 and "tol met for 3 of 3 samples" in out, err
    assert np.all(metrics.relative_l2(np.load(tmp_path / "tol.npy"), ref) < 3e-6)
    code, _, err = run(*argv[:6], "--out", "tol.npy", "--tol", "-1")
    assert code == 2 and "tol=-1.0 is invalid" in err
    code, _, err = run(*argv[:2], "--rho", "missing.npy", "--out", "x.npy")
    assert code == 2 and "missing.npy" in err
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"junk")
    code, _, err = run("--checkpoint", str(junk), "--rho", "rho.npy", "--out", "x.npy")
    assert code == 2 and "junk.safetensors" in err
    assert not (tmp_path / "x.npy").exists()


class _PoissonOracle(torch.nn.Module):
    """The oracle denoiser of the Poisson problem: whatever x and sigma, it returns the exact
    discrete solution for the condition it is given (in the normalised units of the solver)."""

    def __init__(self, solver):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))
        self.net = solver.denoiser.net
        self.solver = solver

    def forward(self, x, sigma, cond):
        norm = self.solver.norm
        rho = (cond[:, 0] * norm.field_rms["rho"]).double().numpy()
        g = (cond[:, 1] * norm.solution_rms).double().numpy()
        phi = POISSON.reference_solve(rho, g) / norm.solution_rms
        return torch.as_tensor(phi, dtype=x.dtype)[:, None]


@pytest.mark.parametrize("sampler, options", [
    ("euler", {}), ("heun", {}), ("adaptive", {"rtol": 1e-5, "atol": 1e-5}), ("euler_maruyama", {}),
    ("pc", {}), ("ald", {"n_steps_each": 2}),
])
def test_every_sampler_with_the_poisson_oracle_returns_the_reference(solver, sampler, options):
    rho, g, ref = _data(3, seed=4)
    oracle = Solver(_PoissonOracle(solver), solver.config, solver.norm, {"n": N})
    phi = oracle.solve(rho, g, sampler=sampler, steps=6, sampler_options=options)
    assert np.linalg.norm(phi - ref) / np.linalg.norm(ref) < 1e-5


class _PerturbedOracle(_PoissonOracle):
    """The oracle plus a fixed smooth error, independent of x (as a good denoiser nearly is)."""

    def forward(self, x, sigma, cond):
        out = super().forward(x, sigma, cond)
        yy, xx = torch.meshgrid(torch.linspace(0, 1, N), torch.linspace(0, 1, N), indexing="ij")
        err = torch.sin(3 * np.pi * xx) * torch.sin(2 * np.pi * yy) + torch.sin(np.pi * xx) * torch.sin(7 * np.pi * yy) * xx
        return out + 0.3 * err.to(out.dtype)[None, None] * (1 - cond[:, 2:3])


def test_guidance_lowers_the_residual_and_keeps_the_boundary(solver):
    rho, g, ref = _data(3, seed=4)
    guided = Solver(_PerturbedOracle(solver), solver.config, solver.norm, {"n": N})
    residuals = []
    for weight in (0.0, 0.5, 1.0):
        phi = guided.solve(rho, g, steps=6, guidance=weight)
        residuals.append(POISSON.relative_residual(phi, rho, g).mean())
        ring = POISSON.grid(N).boundary_mask
        assert np.array_equal(phi[:, ring], g[:, ring])
    assert residuals[0] > 0.15 and residuals[2] < 0.6 * residuals[0] and residuals[1] < residuals[0], residuals
    with pytest.raises(ValueError, match="guidance=2"):
        guided.solve(rho, g, guidance=2)


def test_denoiser_itself_returns_the_boundary_data(solver):
    """Before the solver's final copy of g onto the ring: the sampler's output already equals g."""
    from pdediff.learning.conditioning import encode
    from pdediff.maths.samplers import SAMPLERS, get_sigmas_karras

    rho, g, _ = _data(3)
    cond, s = encode(POISSON, solver.norm, {"rho": torch.as_tensor(rho, dtype=torch.float32),
                                            "g": torch.as_tensor(g, dtype=torch.float32)})
    sigmas = get_sigmas_karras(4, 0.002, 80.0)
    x = torch.randn(3, 1, N, N, generator=torch.Generator().manual_seed(0)) * sigmas[0]
    with torch.no_grad():
        out, _ = SAMPLERS["heun"](solver.denoiser, x, sigmas, cond)
    ring = cond[:, 2:3].bool()
    torch.testing.assert_close(out[ring], cond[:, 1:2][ring], rtol=1e-6, atol=1e-6)
