"""The model shipped in pdediff/models: it loads with no argument and meets its measured figures.

The cases and their thresholds (the README's measured figures with a margin) are those of
``pdediff.data.cases.CASES``, which the demo and the benchmark loop over too; the samples are fresh
(a seed stream the generator's splits do not use), so a regression in the engine or the file
shows up here.
"""

import numpy as np
import pytest

import pdediff
from pdediff.physics import metrics
from pdediff.data.cases import CASES, grid_options
from pdediff.physics.problems import DEFAULT_PROBLEM

SHIPPED_CASES = CASES[DEFAULT_PROBLEM]  # the shipped model solves the default problem
CHECKED = [name for name, case in SHIPPED_CASES.items() if case.check]
POLISHED_REL_L2 = 1e-4  # issue 5's target; measured 1.4e-6 with 2 AMG-preconditioned CG iterations
SEED_SPREAD = 1e-3  # issues 5 and 23's target at the default, 2 NFE (measured 1e-5 over 2 seeds on 16 samples)
SEED_SPREAD_1NFE = 2e-3  # 1 NFE, the default before issue 23: measured 1.1e-3 over 2 seeds, 3e-2 on single-node charges


@pytest.fixture(scope="module")
def solver():
    return pdediff.load_solver()


def check_draw(solver, name, count=None, seed=None):
    """The fields of case ``name`` that its check draws (or ``count`` at ``seed``)."""
    case = SHIPPED_CASES[name]
    return case.draw(count or case.check.count, case.check.seed if seed is None else seed,
                     problem=solver.problem, n=solver.grid_size)


@pytest.fixture(scope="module")
def fresh(solver):
    """The test split's check: 8 fresh samples of the training families, (rho, g)."""
    fields = check_draw(solver, "test split")
    return fields["rho"], fields["g"]


def test_shipped_model_loads_with_its_card(solver):
    assert solver.grid_size == 64
    # fine-tuned on 16,000 pairs of the spectrum mixture (configs/default64-spectrum*.yaml), then grown to take
    # the operator guess and fine-tuned again (configs/poisson64-operator.yaml, then configs/poisson64-operator2.yaml)
    assert solver.card["problem"] == "poisson" == solver.problem.name == DEFAULT_PROBLEM
    assert solver.card["counts"]["train"] >= 16000
    assert solver.card["source"] == "blobs,grf,rough,plane_waves,point_charges,segments,cells"
    assert solver.config.name == "poisson64-operator2" and solver.config.model.operator_input
    assert solver.config.train.init == "pdediff/models/default.safetensors"  # the model it replaced there
    assert solver.config.train.relative_floor == 0.1
    assert solver.config.model.network == "unet" and solver.config.model.sampler == "euler"
    assert solver.config.model.precond == "x0" and solver.config.model.steps == 2  # 2 NFE: issue 23
    # the model it replaced stays shipped under a name
    smooth = pdediff.load_solver("poisson-smooth")
    assert smooth.card["source"] == "blobs,grf,rough" and smooth.config.model.steps == 2


def test_the_cases_are_those_the_readme_reports():
    assert list(SHIPPED_CASES) == ["test split", "point charges & dipoles", "disks & rectangles",
                                   "rough random fields", "line charges", "short waves (k 4-10)",
                                   "single-node charges", "checkerboards", "finer grid"]
    assert SHIPPED_CASES["finer grid"].title("finer grid", 64) == "N = 128 (trained at 64)"
    assert CHECKED == list(SHIPPED_CASES)  # every case has a check


@pytest.mark.parametrize("name", CHECKED)
def test_every_case_meets_its_check(solver, name):
    case = SHIPPED_CASES[name]
    fields = check_draw(solver, name)
    size = case.grid(solver.grid_size)
    assert fields["rho"].shape == (case.check.count, size, size)
    ref = solver.problem.reference_solve(fields["rho"], fields["g"])
    phi = solver.solve(**fields, **grid_options(solver, size))
    rep = metrics.report(solver.problem, phi, fields, ref)
    assert np.mean(rep["rel_l2"]) < case.check.max_rel_l2
    assert np.max(rep["boundary_err"]) <= 1e-6


def test_scale_equivariance_on_fresh_samples(solver, fresh):
    rho, g = fresh
    phi = solver.solve(rho, g)
    for c in (1e-3, 1e3):
        np.testing.assert_allclose(solver.solve(c * rho, c * g), c * phi, rtol=1e-5, atol=1e-5 * c * np.abs(phi).max())


def test_polish_reaches_the_exact_solution_faster_than_from_zero(solver, fresh):
    rho, g = fresh
    ref = solver.problem.reference_solve(rho, g)
    phi = solver.solve(rho, g, polish=2)  # AMG-preconditioned CG
    assert np.mean(metrics.relative_l2(phi, ref)) < POLISHED_REL_L2
    start = solver.solve(rho, g)
    for method in ("cg", "amg"):
        _, from_net = solver.problem.iterative_solve(start, rho, g, maxiter=5000, rtol=1e-8, method=method)
        _, from_zero = solver.problem.iterative_solve(np.zeros_like(rho), rho, g, maxiter=5000, rtol=1e-8,
                                                      method=method)
        assert np.mean(from_net) < np.mean(from_zero)


@pytest.mark.parametrize("steps, bound", [(None, SEED_SPREAD), (1, SEED_SPREAD_1NFE)])
def test_seeds_agree(solver, fresh, steps, bound):
    rho, g = fresh
    runs = np.stack([solver.solve(rho[:4], g[:4], seed=s, steps=steps) for s in range(4)])
    spread = np.linalg.norm(runs - runs.mean(0), axis=(2, 3)).mean(0) / np.linalg.norm(runs.mean(0), axis=(1, 2))
    assert np.mean(spread) < bound


@pytest.mark.parametrize("name", [n for n, case in SHIPPED_CASES.items() if case.grid_factor == 1])
def test_seeds_agree_on_every_family_at_the_default(solver, name):
    fields = check_draw(solver, name, count=4, seed=4_321)
    runs = np.stack([solver.solve(**fields, seed=s, estimate=False) for s in (0, 1)])
    ref = solver.problem.reference_solve(*(fields[k] for k in solver.problem.condition_fields))
    assert np.mean(metrics.seed_spread(runs, ref)) < SEED_SPREAD  # every family: checkerboards measured 3.5e-4


def test_the_unet_refuses_other_grids_unless_resampled(solver):
    with pytest.raises(ValueError, match=r"rho has shape \(128, 128\); this unet model was trained on \(64, 64\)"):
        solver.solve(np.zeros((128, 128)))
    assert grid_options(solver, 128) == {"resample": True} and grid_options(solver, 64) == {}


def test_demo_solves_and_draws_every_case(solver, tmp_path, capsys, record_plot_rows):
    from pdediff.tools import demo

    drawn = record_plot_rows(demo, draw=False)  # what it draws; plot_rows' PNG is checked in test_benchmarks
    png = tmp_path / "demo.png"
    assert demo.main(["--per-case", "1", "--png", str(png)]) == 0
    out = capsys.readouterr().out
    titles = [case.title(name, 64) for name, case in SHIPPED_CASES.items()]
    table = {}
    for line in out.splitlines():
        title = next((t for t in titles if line.startswith(t)), None)
        if title:
            method, figures = line[32:56].strip(), [float(v) for v in line[56:].split()]
            table[title, method] = dict(zip(("rel_l2", "max_err", "boundary_err", "residual", "ms"), figures))
    net = f"pdediff ({solver.config.model.steps} NFE)"  # Euler: one network evaluation a level
    methods = ["SciPy spsolve", "SciPy LU, cached", net, "pdediff + 2 AMG-CG", "2 AMG-CG from zero"]
    assert sorted(table) == sorted((t, m) for t in titles for m in methods)
    for title in titles:
        assert table[title, "SciPy spsolve"]["rel_l2"] == 0 and table[title, net]["boundary_err"] == 0
        # the network's start makes the 2 polishing iterations far more accurate than a zero start
        polished, from_zero = table[title, "pdediff + 2 AMG-CG"], table[title, "2 AMG-CG from zero"]
        assert polished["rel_l2"] < min(POLISHED_REL_L2, from_zero["rel_l2"] / 10)
    # one picture row per case, showing the sample whose error the table prints
    [(path, rows)] = drawn
    assert path == png and [r[0] for r in rows] == titles
    for (title, rho, phi, ref), case in zip(rows, SHIPPED_CASES.values()):
        size = case.grid(64)
        assert rho.shape == phi.shape == ref.shape == (size, size) and np.ptp(rho) > 0 and np.ptp(ref) > 0
        printed = table[title, net]["rel_l2"]
        assert float(metrics.relative_l2(phi, ref)[0]) == pytest.approx(printed, rel=6e-3)


@pytest.mark.slow
def test_test_split_accuracy_over_many_samples(solver):
    fields = check_draw(solver, "test split", count=256, seed=78)
    ref = solver.problem.reference_solve(fields["rho"], fields["g"])
    phi = solver.solve(**fields)
    assert np.mean(metrics.relative_l2(phi, ref)) < SHIPPED_CASES["test split"].check.max_rel_l2
