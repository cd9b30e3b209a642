"""The benchmark harness runs end to end on a tiny model and writes every output."""

import json

import numpy as np
import pytest
import xarray as xr

from benchmarks.surrogate import main, steps_for
from pdediff.data.checkpoint import load_checkpoint
from pdediff.data import load_arrays
from pdediff.learning.config import Config
from pdediff.tools.training import train


def tiny_checkpoint(dataset, out, precond="edm", valid=False):
    """A two-step U-Net on the tiny dataset: enough to run the harness end to end."""
    c = Config(name="b")
    c.data.train = [str(dataset / "train.h5")]
    if valid:
        c.data.valid = [str(dataset / "valid.h5")]
    c.model.network_kwargs = {"model_channels": 8, "channel_mult": [1, 2], "attention_levels": []}
    c.model.precond = precond
    c.train.steps, c.train.batch_size, c.train.valid_every, c.train.warmup_steps = 2, 4, 0, 1
    return train(c, out, progress=False)


def test_steps_for_nfe():
    assert [2 * steps_for("heun", n) - 1 for n in (2, 4, 8, 18, 35)] == [1, 3, 7, 17, 35]
    assert steps_for("euler", 8) == 8


def test_benchmark_writes_tables_netcdf_and_figures(tiny_dataset, tmp_path, record_plot_rows, png_pixels):
    import benchmarks.surrogate

    galleries = record_plot_rows(benchmarks.surrogate)
    ckpt = tiny_checkpoint(tiny_dataset, tmp_path / "run", valid=True)
    out = tmp_path / "results"
    rc = main(["--checkpoint", str(ckpt), "--data", str(tiny_dataset / "test.h5"), "--samples", "4",
               "--nfe", "2,4", "--sizes", "17", "--batches", "1,2", "--seeds", "2", "--polish", "4",
               "--guidance", "0.01", "--out", str(out)])
    assert rc == 0
    acc = xr.open_dataset(out / "accuracy.nc")
    assert {"rel_l2", "max_err", "boundary_err", "residual", "ms_per_sample"} <= set(acc.data_vars)
    assert "SciPy sparse LU" in acc["solver"].values
    assert float(acc["rel_l2"].sel(case="test split", solver="SciPy sparse LU", nfe=0)) < 1e-6
    timing = xr.open_dataset(out / "timing.nc")
    assert {"SciPy spsolve", "SciPy cached LU", "DST fast solver"} <= set(timing["solver"].values)
    table = (out / "results.md").read_text()
    assert "| test split | heun |" in table and "Time per sample" in table
    results = json.loads((out / "results.json").read_text())
    polish = results["polish"]
    assert polish["cg from zero"] > polish["amg from zero"] > 0
    # the classical method alone, from zero: AMG-preconditioned CG converges on N = 17
    assert float(acc["rel_l2"].sel(case="test split", solver="3 AMG from zero", nfe=0)) < 1e-3
    assert float(acc["rel_l2"].sel(case="test split", solver="heun + 3 AMG", nfe=17)) < 1e-3
    # figures of the size they are drawn at, not blank; the gallery shows each case's first
    # sample, the model's answer and the reference on the case's grid
    cases = list(dict.fromkeys(r["case"] for r in results["accuracy"]))
    assert cases == ["test split", "point charges & dipoles", "disks & rectangles", "rough random fields",
                     "line charges", "short waves (k 4-10)", "single-node charges", "checkerboards",
                     "N = 34 (trained at 17)"]
    png_pixels(out / "error_vs_nfe.png", round(420 * len(cases)), 360)
    png_pixels(out / "time_vs_n.png", 550, 400)
    png_pixels(out / "gallery.png", 1350, round(3.4 * 90 * len(cases)))
    [(path, rows)] = galleries
    assert path == out / "gallery.png" and [r[0] for r in rows] == cases
    test_split = load_arrays(tiny_dataset / "test.h5", dtype=np.float64)
    np.testing.assert_array_equal(rows[0][1], test_split["rho"][0])
    np.testing.assert_allclose(rows[0][3], test_split["phi"][0], atol=1e-5 * np.abs(rows[0][3]).max())
    for name, rho, phi, ref in rows:
        n = 34 if name.startswith("N = 34") else 17
        assert rho.shape == phi.shape == ref.shape == (n, n) and np.ptp(rho) > 0 and np.ptp(ref) > 0
        assert not np.array_equal(phi, ref)  # the network's answer, not the reference twice


def test_sampling_sweep_writes_its_table(tiny_dataset, tmp_path):
    from benchmarks.sampling import main as sampling_main

    ckpt = tiny_checkpoint(tiny_dataset, tmp_path / "run", precond="x0")
    out = tmp_path / "sampling.md"
    assert sampling_main(["--checkpoint", str(ckpt), "--data", str(tiny_dataset / "valid.h5"), "--samples", "3",
                          "--sigma-min", "0.002", "--out", str(out)]) == 0
    table = out.read_text()
    with pytest.raises(SystemExit) as bad:
        sampling_main(["--checkpoint", str(ckpt), "--data", str(tiny_dataset / "valid.h5"), "--sigma-min", "x"])
    assert bad.value.code == 2
    assert "| euler | 2 | 0.002 | 2 |" in table and "| heun | 10 | 0.002 | 19 |" in table


def test_families_compares_models_case_by_case(tiny_dataset, tmp_path):
    from benchmarks.families import main as families_main

    ckpt = str(tiny_checkpoint(tiny_dataset, tmp_path / "run", precond="x0"))
    out = tmp_path / "families.md"
    assert families_main(["--checkpoints", f"{ckpt},{ckpt}", "--data", str(tiny_dataset / "test.h5"),
                          "--samples", "2", "--out", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and "---" not in line]
    assert [r.split(" | ")[0] for r in rows[1:]] == ["| test split", "| point charges & dipoles", "| disks & rectangles",
                                                     "| rough random fields", "| line charges",
                                                     "| short waves (k 4-10)", "| single-node charges",
                                                     "| checkerboards", "| N = 34 (trained at 17)"]
    # the same model twice gives the same cells
    cells = rows[1].split(" | ")
    assert cells[2] == cells[3].rstrip(" |")
    with pytest.raises(SystemExit) as bad:
        families_main(["--checkpoints", ",", "--out", str(out)])
    assert bad.value.code == 2


def test_problem_block_with_the_fno_peer(tmp_path, png_pixels):
    """A Darcy block end to end: a two-step model, a two-second FNO peer (trained, resumed and
    exported by benchmarks.fno_peer), every case's row, and the timing table."""
    from benchmarks import fno_peer
    from benchmarks.problems import main as problems_main
    from pdediff.data.generate import generate_dataset, make_card
    from pdediff.physics.metrics import relative_l2

    data = tmp_path / "darcy17"
    generate_dataset(data, make_card("darcy", 17, 24, seed=2, valid_count=4, test_count=4))
    c = Config(name="d")
    c.data.train, c.data.problem = [str(data / "train.h5")], "darcy"
    c.model.network_kwargs = {"model_channels": 8, "channel_mult": [1, 2], "attention_levels": []}
    c.model.precond = "x0"
    c.train.steps, c.train.batch_size, c.train.valid_every, c.train.warmup_steps = 2, 4, 0, 1
    ckpt = train(c, tmp_path / "run", progress=False)
    state = fno_peer.train(data / "train.h5", tmp_path / "fno", 1.0, progress=False)
    steps = load_checkpoint(state)[1]["step"]
    fno_peer.train(data / "train.h5", tmp_path / "fno", 2.0, progress=False)  # resumes to the longer budget
    meta = load_checkpoint(state)[1]
    assert meta["step"] > steps and 2.0 <= meta["elapsed_s"] < 4.0
    peer = fno_peer.export(state, tmp_path / "peer.safetensors")

    out = tmp_path / "darcy.md"
    assert problems_main(["--problem", "darcy", "--model", str(ckpt), "--data", str(data / "test.h5"),
                          "--count", "2", "--timing-count", "2", "--fno", str(peer), "--out", str(out)]) == 0
    rows = [line.split(" | ") for line in out.read_text().splitlines() if line.startswith("| ") and "---" not in line]
    assert [r[0] for r in rows[1:9]] == ["| test split (threshold, tau = 3)", "| finer inclusions (threshold, tau = 6)",
                                         "| log-normal", "| high contrast (threshold, a in {1, 100})",
                                         "| rough log-normal (alpha = 1.5, sigma = 2)", "| layered (bands, a in {1, 20})",
                                         "| channelised (meanders, a in {1, 10})", "| N = 34, threshold (trained at 17)"]
    test = load_arrays(data / "test.h5", dtype=np.float64, limit=2)
    fno_err = np.mean(relative_l2(fno_peer.FNOPeer(peer).predict(test["a"]), test["u"]))
    assert float(rows[1][6].rstrip(" |")) == pytest.approx(fno_err, rel=1e-2, abs=1e-4)
    assert all(float(r[5]) < 1e-3 for r in rows[1:9])  # five polish iterations from any start
    assert [r[0] for r in rows[10:]] == ["| 17", "| 34"] and all(len(r) == 7 for r in rows[10:])
    png_pixels(tmp_path / "darcy_gallery.png", 1350, round(3.4 * 90 * 8))
    with pytest.raises(SystemExit) as bad:
        problems_main(["--problem", "darcy", "--model", str(ckpt), "--count", "0"])
    assert bad.value.code == 2


def test_benchmarks_runs_a_block_per_problem(monkeypatch, capsys):
    import benchmarks.__main__ as entry

    calls = []
    monkeypatch.setattr(entry.surrogate, "main", lambda argv: calls.append(("surrogate", argv)) or 0)
    monkeypatch.setattr(entry.problems, "main", lambda argv: calls.append(("problems", argv)) or 0)
    assert entry.main(["--problems", "poisson,darcy", "--samples", "3"]) == 0
    assert calls[0] == ("surrogate", ["--samples", "3"])
    assert calls[1][0] == "problems" and calls[1][1][:2] == ["--problem", "darcy"]
    assert "## poisson" in capsys.readouterr().out
    with pytest.raises(SystemExit) as bad:
        entry.main(["--problems", "heat"])
    assert bad.value.code == 2


def test_list_names_every_block_with_its_purpose_and_run_time(capsys):
    import benchmarks.__main__ as entry
    from benchmarks.blocks import BLOCKS

    assert entry.main(["--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [k for k, line in enumerate(lines) if line and not line[0].isspace() and line.split()[0] in BLOCKS]
    assert [lines[k].split()[0] for k in rows] == list(BLOCKS)
    for k, (name, block) in zip(rows, BLOCKS.items()):
        assert lines[k].split(None, 1)[1].startswith(block.runtime) and lines[k].endswith(block.purpose)
        # how the run time was found: measured (a named file or a run) or estimated (from what)
        assert lines[k + 1].startswith(("    run time measured: ", "    run time estimated", "    run time set by")), name


def test_an_unknown_block_exits_2_naming_it_and_the_choices(capsys):
    import benchmarks.__main__ as entry
    from benchmarks.blocks import BLOCKS

    with pytest.raises(SystemExit) as bad:
        entry.main(["heat", "--samples", "3"])
    assert bad.value.code == 2
    err = capsys.readouterr().err
    assert "'heat'" in err and all(name in err for name in BLOCKS)


def test_every_block_is_a_module_with_a_main_and_every_module_a_block():
    import importlib
    from pathlib import Path

    import benchmarks
    from benchmarks.blocks import BLOCKS

    for name, block in BLOCKS.items():
        assert block.module == f"benchmarks.{name}"
        assert callable(importlib.import_module(block.module).main), name
    modules = {p.stem for p in Path(benchmarks.__file__).parent.glob("*.py")}
    assert modules - {"__init__", "__main__", "blocks"} == set(BLOCKS)


def test_a_block_gets_its_default_args_before_the_given_ones(monkeypatch, tmp_path):
    import benchmarks
    import benchmarks.__main__ as entry
    import benchmarks.fno_peer
    import benchmarks.sampling

    calls = []
    monkeypatch.setattr(benchmarks, "RESULTS", tmp_path)
    monkeypatch.setattr(benchmarks.sampling, "main", lambda argv: calls.append(argv) or 0)
    monkeypatch.setattr(benchmarks.fno_peer, "main", lambda argv: calls.append(argv) or 3)
    assert entry.main(["sampling", "--samples", "3"]) == 0
    assert entry.main(["fno-peer", "--budget-s", "1"]) == 3  # '-' for '_'; the block's status comes back
    assert calls == [["--data", "datasets/poisson64/valid.h5", "--samples", "3"],
                     ["--export", str(tmp_path / "fno_peer" / "fno-peer.safetensors"), "--budget-s", "1"]]


def test_a_block_writes_into_its_folder_with_the_command(monkeypatch, tmp_path):
    """``python -m benchmarks speed`` end to end (2 samples, 1 round): the table lands in
    RESULTS/speed/ by default, beside a COMMAND file with the argv, the date and the commit."""
    import datetime
    import shlex

    import benchmarks
    import benchmarks.__main__ as entry

    monkeypatch.setattr(benchmarks, "RESULTS", tmp_path)
    assert entry.main(["speed", "--samples", "2", "--rounds", "1"]) == 0
    assert sorted(p.name for p in (tmp_path / "speed").iterdir()) == ["COMMAND", "speed.md"]  # no temporary left
    assert "| default: 2 NFE, channels-last, batched V-cycle estimate |" in (tmp_path / "speed" / "speed.md").read_text()
    [entry_] = benchmarks._entries((tmp_path / "speed" / "COMMAND").read_text())
    command, *meta = entry_["lines"]
    assert shlex.split(command) == ["python", "-m", "benchmarks.speed", "--samples", "2", "--rounds", "1"]
    meta = dict(line[2:].split(": ", 1) for line in meta)
    assert json.loads(meta["files"]) == ["speed.md"] and json.loads(meta["argv"]) == ["--samples", "2", "--rounds", "1"]
    assert datetime.datetime.fromisoformat(meta["date"]).tzinfo is not None
    assert meta["commit"].split()[0] == "unknown" or len(meta["commit"].split()[0]) == 40


def test_a_command_file_names_the_last_run_of_every_file(tmp_path):
    from benchmarks import COMMAND, _entries, record_command

    record_command(tmp_path, "problems", ["--problem", "darcy"], ["darcy.md", "darcy_gallery.png"])
    record_command(tmp_path, "problems", ["--problem", "helmholtz"], ["helmholtz.md", "helmholtz_gallery.png"])
    record_command(tmp_path, "problems", ["--problem", "darcy", "--count", "2"], ["darcy.md", "darcy_gallery.png"])
    record_command(tmp_path, "problems", ["--problem", "helmholtz", "--count", "2"], [tmp_path / "helmholtz.md"])
    entries = _entries((tmp_path / COMMAND).read_text())
    assert [(e["lines"][0], e["files"]) for e in entries] == [
        ("python -m benchmarks.problems --problem helmholtz", ["helmholtz_gallery.png"]),
        ("python -m benchmarks.problems --problem darcy --count 2", ["darcy.md", "darcy_gallery.png"]),
        ("python -m benchmarks.problems --problem helmholtz --count 2", ["helmholtz.md"])]
    assert sorted(p.name for p in tmp_path.iterdir()) == [COMMAND]


def test_every_committed_result_lies_in_its_blocks_folder_named_by_its_command(repo_root):
    from benchmarks import COMMAND, _entries
    from benchmarks.blocks import BLOCKS

    results = repo_root / "benchmarks" / "results"
    assert not [p.name for p in results.iterdir() if p.is_file()]
    for folder in (p for p in results.iterdir() if p.is_dir()):
        assert folder.name in BLOCKS
        named = [f for e in _entries((folder / COMMAND).read_text()) for f in e["files"]]
        assert sorted(named) == sorted(p.name for p in folder.iterdir() if p.name != COMMAND), folder.name


def test_tolerance_benchmark_reads_estimates_and_reaches_tolerances(tiny_dataset, tmp_path, png_pixels):
    from benchmarks.tolerance import FAMILIES, main as tolerance_main

    ckpt = tiny_checkpoint(tiny_dataset, tmp_path / "run", precond="x0")
    out = tmp_path / "tol"
    assert tolerance_main(["--model", str(ckpt), "--count", "2", "--out", str(out)]) == 0
    rows = [line.split(" | ") for line in (out / "tolerance.md").read_text().splitlines()
            if line.startswith("| ") and "---" not in line]
    accuracy, timing = rows[1:1 + len(FAMILIES)], rows[2 + len(FAMILIES):]
    assert [r[0][2:] for r in accuracy] == list(FAMILIES) == [r[0][2:] for r in timing]
    for r in accuracy:  # a two-step model is far off: the estimate must still read its error
        assert r[2] == "100%" and 0.8 < float(r[3]) <= float(r[4].rstrip(" |")) < 1.25
    head = rows[1 + len(FAMILIES)]
    for tol in ("0.0001", "1e-06"):
        column = head.index(f"true error at {tol}")
        assert all(float(r[column]) <= float(tol) for r in timing)
    png_pixels(out / "estimate_vs_true.png", 540, 495)


def test_time_to_tolerance_reaches_both_tolerances_on_every_route(tmp_path):
    from benchmarks.time_to_tolerance import main as ttt_main

    out = tmp_path / "ttt.md"
    assert ttt_main(["--count", "2", "--sizes", "64,48", "--out", str(out)]) == 0  # 48: resampled
    text = out.read_text()
    tables = [t for t in text.split("## ")[1:]]
    assert [t.split()[0] for t in tables] == ["poisson", "darcy", "helmholtz"]
    for table in tables:
        rows = [line.strip("| ").split(" | ") for line in table.splitlines() if line.startswith("| ") and "---" not in line]
        head, body = rows[0], rows[1:]
        assert [r[:2] for r in body] == [["64", "0.0001"], ["64", "1e-06"], ["48", "0.0001"], ["48", "1e-06"]]
        for r in body:
            for cell in r[3:-2]:  # every route and method: "ms (worst true error[, iterations])"
                worst = float(cell.split("(")[1].split(",")[0].rstrip(")"))
                assert worst <= float(r[1]), (head, r)
            assert r[-2] in head and float(r[-1].rstrip("x")) > 0
    with pytest.raises(SystemExit) as exc:
        ttt_main(["--problems", "heat", "--out", str(out)])
    assert exc.value.code == 2


def test_evaluate_prints_the_error_of_a_split(tiny_dataset, tmp_path, capsys):
    from benchmarks.evaluate import main as evaluate_main

    ckpt = tiny_checkpoint(tiny_dataset, tmp_path / "run", precond="x0")
    assert evaluate_main(["--model", str(ckpt), "--data", str(tiny_dataset / "test.h5"), "--count", "3"]) == 0
    out = capsys.readouterr().out
    assert "(3 samples" in out
    import re

    from pdediff.physics.metrics import relative_l2
    from pdediff.solver import load_solver

    solver = load_solver(str(ckpt))
    test = load_arrays(tiny_dataset / "test.h5", dtype=np.float64, limit=3)
    err = relative_l2(solver.solve(test["rho"], test["g"], estimate=False), test["phi"])
    mean = float(re.search(r"relative L2 mean ([0-9.]+)", out).group(1))
    assert mean == pytest.approx(err.mean(), abs=2e-4)
    with pytest.raises(SystemExit) as bad:
        evaluate_main(["--model", str(ckpt), "--data", str(tmp_path / "missing.h5")])
    assert bad.value.code == 2


def test_speed_benchmark_times_old_and_new_side_by_side(tmp_path):
    from benchmarks.speed import main as speed_main

    out = tmp_path / "speed.md"
    assert speed_main(["--samples", "2", "--rounds", "1", "--out", str(out)]) == 0
    rows = {r[0][2:]: r[1:] for r in (line.split(" | ") for line in out.read_text().splitlines())
            if r[0].startswith("| ") and "---" not in r[1]}
    old = rows["baseline: Euler 2 NFE, default layout, no estimate"]
    assert old[1] == "1.00x"
    new = rows["default: 2 NFE, channels-last, batched V-cycle estimate"]  # the shipped model's 2 NFE
    # the layout and the estimate change the cost, never the answer
    assert rows["1 NFE, channels-last, batched V-cycle estimate"][2] == rows["1 NFE, channels-last"][2] \
        == rows["1 NFE, default layout"][2]
    assert old[2] == rows["2 NFE, channels-last"][2] == new[2] == rows["default on 1 thread"][2]
    assert float(rows["the operator guess alone (one V-cycle CG step)"][0]) > 0
    assert float(rows["network, inference_mode"][0]) > 0
    with pytest.raises(SystemExit) as bad:
        speed_main(["--samples", "0"])
    assert bad.value.code == 2


def test_fno64_benchmark_refuses_a_missing_checkpoint(tmp_path):
    from benchmarks.fno64 import main as fno_main

    with pytest.raises(SystemExit) as bad:
        fno_main(["--fno", str(tmp_path / "missing.safetensors"), "--models", ""])
    assert bad.value.code == 2
    with pytest.raises(SystemExit) as bad:
        fno_main(["--fno", "poisson", "--samples", "2"])
    assert bad.value.code == 2


def test_an_fno_checkpoint_loads_its_complex_weights_whole(tiny_dataset, tmp_path):
    """The FNO's spectral weights are complex: loading must keep their imaginary parts (a
    .float() cast once dropped them, and a loaded FNO answered 26 % where it had trained to 4 %)."""
    import torch

    from pdediff.solver import load_solver
    from pdediff.tools.training import export_checkpoint, load_checkpoint

    c = Config(name="f")
    c.data.train = [str(tiny_dataset / "train.h5")]
    c.model.network = "fno"
    c.model.network_kwargs = {"hidden_channels": 8, "n_modes": [4, 4], "n_layers": 2}
    c.model.precond = "x0"
    c.train.steps, c.train.batch_size, c.train.valid_every, c.train.warmup_steps = 2, 4, 0, 1
    ckpt = train(c, tmp_path / "run", progress=False)
    exported = export_checkpoint(ckpt, tmp_path / "fno.safetensors")
    tensors, _ = load_checkpoint(exported)
    complex_weights = {k[len("ema."):]: v for k, v in tensors.items() if v.is_complex()}
    assert complex_weights and any(v.imag.abs().max() > 0 for v in complex_weights.values())
    state = load_solver(str(exported)).denoiser.state_dict()
    for k, v in complex_weights.items():
        assert torch.equal(state[k], v.to(state[k].dtype)), k


def test_cfg_benchmark_reports_the_unguided_error_at_w_zero(tiny_dataset, tmp_path, monkeypatch):
    import json

    from benchmarks import cfg
    from pdediff.physics import metrics
    from pdediff.data import load_arrays
    from pdediff.solver import Solver
    from pdediff.tools.training import train
    from test_training import tiny_config

    c = tiny_config(tiny_dataset, steps=4)
    c.model.cond_dropout = 0.2
    ckpt = train(c, tmp_path / "run", progress=False)
    assert cfg.main(["--forward", str(ckpt), "--data", str(tiny_dataset / "test.h5"), "--count", "4",
                     "--weights", "0,1", "--out", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / "cfg.json").read_text())["forward"]["direct"]
    test = load_arrays(tiny_dataset / "test.h5", limit=4, dtype=np.float64)
    phi = Solver.from_checkpoint(ckpt).solve(test["rho"], test["g"], estimate=False)
    assert np.isclose(results["0.0"]["phi"], np.mean(metrics.relative_l2(phi, test["phi"])), rtol=1e-12)
    assert results["1.0"]["phi"] != results["0.0"]["phi"]
    assert "| phi |" in (tmp_path / "out" / "cfg.md").read_text() and (tmp_path / "out" / "cfg.png").stat().st_size


def test_darcy_route_reports_each_model_and_the_routed_solver(tmp_path):
    import pdediff
    from benchmarks.darcy_route import main

    out = tmp_path / "darcy_route.md"
    assert main(["--count", "2", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    header = next(line for line in lines if line.startswith("| case"))
    rows = [line.strip("| ").split(" | ") for line in lines if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 8 and (tmp_path / "COMMAND").is_file()
    if pdediff.load_solver("darcy").fallback is None:  # one model for every law: no routed column
        assert "routed" not in header and all(len(row) == 6 for row in rows)
        return
    for row in rows:
        darcy, broad, routed, share, guess = (float(v.rstrip("%")) / 100 for v in row[1:6])
        assert 0 < guess < 1  # one V-cycle CG step from zero: part of the way
        # each sample keeps the answer with the lower estimate, and estimates read 0.9-1.0 of the truth
        assert routed <= 1.1 * max(darcy, broad) and 0 <= share <= 1
    assert float(rows[0][4].rstrip("%")) == 0  # the classic law stays with darcy


def test_darcy_route_refuses_bad_models_and_counts(capsys):
    from benchmarks.darcy_route import main

    for argv, words in ((["--models", "poisson"], "is a 'poisson' model at N = 64; expected darcy models"),
                        (["--models", "nope"], "--models='nope'"),
                        (["--models", ","], "names no model"),
                        (["--count", "0"], "--count=0")):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2 and words in capsys.readouterr().err


def test_seeds_block_reports_every_case_and_start(tmp_path):
    from benchmarks.seeds import main

    out = tmp_path / "seeds.md"
    assert main(["--count", "1", "--out", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 9 and all(row.count("/") == 6 for row in rows)
    assert all(cell.rstrip(" |").endswith("/ 0") for row in rows for cell in (row.split(" | ")[3], row.split(" | ")[6]))


def test_textbook_inputs_report_each_answer_and_its_estimate(tmp_path, capsys):
    from benchmarks.textbook import inputs, main

    assert len(inputs()) == 10
    out = tmp_path / "textbook.md"
    assert main(["--models", "poisson", "--out", str(out)]) == 0
    rows = [line.strip("| ").split(" | ") for line in out.read_text().splitlines()
            if line.startswith("| ") and "---" not in line][1:]
    assert [row[0] for row in rows] == list(inputs()) and (tmp_path / "COMMAND").is_file()
    for row in rows:
        true, estimate = (float(v) for v in row[1].split(" / "))
        assert 0 < true and true / 3 < estimate < 3 * true  # the estimate reads every answer's error
    smooth = {row[0]: float(row[1].split(" / ")[0]) for row in rows}
    assert smooth["rho = 0, g = 1"] < 0.02 and smooth["rho = 1, g = 0"] < 0.02  # smooth answers are good
    for argv, words in ((["--models", "darcy"], "expected poisson models trained at N = 64"), (["--models", ","], "names no model")):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2 and words in capsys.readouterr().err
