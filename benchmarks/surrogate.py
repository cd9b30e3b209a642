"""Benchmark the diffusion surrogate against classical solvers, all measured in one run.

    python -m benchmarks surrogate [--checkpoint PATH] [--data datasets/poisson64/test.h5] [--samples 64]
    python -m benchmarks [options as above]   # this block, then the other problems' (benchmarks.problems)

Measures, side by side:

* accuracy: relative L2 and max error, boundary error, PDE residual and seed-to-seed spread of
  the surrogate for each sampler and number of function evaluations (NFE), with and without
  residual guidance and classical polish (conjugate gradients, and CG preconditioned by
  algebraic multigrid), on the test split (in distribution), on source families never seen in
  training, and on a finer grid than the training one (a network that is not resolution-free
  solves on its own grid and is interpolated: ``Solver.solve(resample=True)``);
* speed: time per sample at batch 1 and batch 64 for the surrogate, SciPy's sparse direct
  solve (``spsolve``), a cached sparse LU reused across a batch and the DST fast solver (on the
  CPU, and on the GPU when there is one);
* scaling: time per sample against N for every solver;
* polish: iterations of CG and of AMG-preconditioned CG to a relative residual of 1e-8 from the
  network's answer and from zero.

Results go to ``benchmarks/results/surrogate/`` (``--out``): ``accuracy.nc`` / ``timing.nc`` (xarray,
netCDF), ``results.md`` / ``results.json`` (markdown tables, the rows) and figures (error against NFE,
time against N, a gallery), with the command in ``COMMAND``.
Timings are ratios measured in this run on this machine; nothing is copied from elsewhere.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import scipy.sparse.linalg as spla
import torch

from benchmarks import record_command, results_dir
from pdediff.physics import metrics
from pdediff.data.atomic import atomic_path, write_text
from pdediff.data.cases import cases_for, grid_options
from pdediff.tools.plotting import plot_rows, save_figure

NFES = (1, 2, 4, 8, 18, 35)


def steps_for(sampler: str, nfe: int) -> int:
    """Noise levels giving at most ``nfe`` evaluations (Heun: 2n - 1; Euler: n)."""
    return max(1, (nfe + 1) // 2) if sampler == "heun" else max(1, nfe)


def cases(solver, data: str | None, samples: int, seed: int):
    """(name, fields, ref) for each case of the solver's problem (``pdediff.data.cases.CASES``): the
    test split (``data``, or fresh draws of its families), source families never seen in
    training, rough fields (white noise to 1/f; in the shipped model's training mixture), a finer
    grid (a quarter of the samples)."""
    problem = solver.problem
    n = solver.grid_size or 64
    out = []
    for name, case in cases_for(problem).items():
        if case.test_split and data:
            from pdediff.data import load_arrays

            arrays = load_arrays(data, limit=samples, dtype=np.float64)
            fields = {k: arrays[k] for k in problem.condition_fields if k in arrays}
        else:
            count = samples if case.grid_factor == 1 else max(4, samples // 4)
            fields = case.draw(count, seed, problem=problem, n=n)
            name = f"{name} (fresh)" if case.test_split else case.title(name, n)
        out.append((name, fields))
    return [(name, fields, problem.reference_solve(*_ordered(problem, fields))) for name, fields in out]


def _ordered(problem, fields: dict) -> list:
    """The problem's positional arguments: its condition fields in order (None where absent)."""
    return [fields.get(k) for k in problem.condition_fields]


def settings(solver):
    """(label, sampler, steps) to measure in depth: Heun at 17 NFE and the model's own default."""
    out = [("heun", "heun", steps_for("heun", 18))]
    m = solver.config.model
    if (m.sampler, m.steps) != ("heun", steps_for("heun", 18)):
        out.append((f"{m.sampler}/{m.steps} (model default)", m.sampler, m.steps))
    return out


def timed(fn, *args, repeat: int = 1, **kw):
    best, out = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(*args, **kw)
        best = min(best, time.perf_counter() - t0)
    return out, best


def _take(fields: dict, rows) -> dict:
    """The samples ``rows`` (a slice) of every field."""
    return {k: v[rows] for k, v in fields.items()}


def accuracy(solver, case_list, *, samplers, nfes, guidance: float, polish: int, amg: int, seeds: int):
    """Rows of figures per (case, method)."""
    problem = solver.problem
    grid = grid_options(solver)
    rows = []
    for name, fields, ref in case_list:
        args = _ordered(problem, fields)
        count = len(ref)

        def add(method, phi, secs, nfe, extra=None, sub=slice(None)):
            rep = metrics.report(problem, phi, _take(fields, sub), ref[sub])
            rows.append({"case": name, "solver": method, "nfe": nfe, "ms_per_sample": 1e3 * secs / len(phi),
                         **{k: float(np.mean(v)) for k, v in rep.items()}, **(extra or {})})

        for sampler in samplers:
            for nfe in nfes:
                (phi, info), secs = timed(solver.solve, **fields, sampler=sampler, steps=steps_for(sampler, nfe),
                                          return_info=True, **grid)
                add(f"{sampler}", phi, secs, info.nfe)
        for label, sampler, steps in settings(solver):
            kw = dict(sampler=sampler, steps=steps, return_info=True, **grid)
            if guidance > 0:
                (phi, info), secs = timed(solver.solve, **fields, guidance=guidance, **kw)
                add(f"{label} + guidance {guidance:g}", phi, secs, info.nfe)
            for method, ks in (("cg", (polish // 4, polish) if polish else ()), ("amg", range(1, amg + 1))):
                for k in ks:
                    (phi, info), secs = timed(solver.solve, **fields, polish=k, polish_method=method, **kw)
                    add(f"{label} + {k} {method.upper()}", phi, secs, info.nfe)
            # seed-to-seed spread: ||phi_seed - mean|| / ||mean||, averaged over seeds and samples
            sub = slice(0, min(count, 16))
            runs = np.stack([solver.solve(**_take(fields, sub), sampler=sampler, steps=steps, seed=s, **grid)
                             for s in range(seeds)])
            spread = metrics.seed_spread(runs)
            nfe = solver.solve(**_take(fields, slice(1)), sampler=sampler, steps=steps, return_info=True,
                               **grid)[1].nfe
            add(f"{label}, {seeds} seeds (first {len(runs[0])} samples)", runs[0], np.nan, nfe,
                {"seed_spread": float(np.mean(spread))}, sub)
        _, secs = timed(problem.reference_solve, *args)
        add("SciPy sparse LU", ref, secs, 0)
        first = _ordered(problem, _take(fields, slice(1)))
        problem.iterative_solve(np.zeros_like(ref[:1]), *first, maxiter=1, method="amg")  # setup, once per N
        for k in range(1, amg + 1):  # the classical method alone, from zero
            phi, secs = timed(lambda: problem.iterative_solve(np.zeros_like(ref), *args, maxiter=k, rtol=0.0,
                                                              method="amg")[0], repeat=3)
            add(f"{k} AMG from zero", phi, secs, 0)
    return rows


def polish_savings(solver, fields: dict) -> dict:
    """Mean iterations to a relative residual of 1e-8 from zero and from the network's answer,
    for each classical method: ``{"cg from zero": 190.0, "cg from network (heun)": 181.0, ...}``."""
    problem = solver.problem
    args = _ordered(problem, fields)
    starts = {"zero": np.zeros_like(args[0])}
    for label, sampler, steps in settings(solver):
        starts[f"network ({label})"] = solver.solve(**fields, sampler=sampler, steps=steps, **grid_options(solver))
    out = {}
    for method in problem.iterative_methods:
        for name, start in starts.items():
            _, iters = problem.iterative_solve(start, *args, maxiter=10_000, rtol=1e-8, method=method)
            out[f"{method} from {name}"] = float(np.mean(iters))
    return out


def timing(solver, sizes, batches, seed: int):
    """Seconds per sample of every solver against N and batch size, on fresh draws of the
    training families (the test split's case)."""
    problem = solver.problem
    case = next(c for c in cases_for(problem).values() if c.test_split)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for n in sizes:
        for batch in batches:
            fields = case.draw(batch, seed, problem=problem, n=n)
            args, first = _ordered(problem, fields), _ordered(problem, _take(fields, slice(1)))
            a = problem.operator(n)
            b = problem.rhs(*args).reshape(batch, -1)

            def spsolve_each():
                return [spla.spsolve(a, b[k]) for k in range(batch)]

            problem.reference_solve(*first)  # factorise once (cached per N)
            problem.fast_solve(*first)
            for name, fn in (("SciPy spsolve", spsolve_each),
                             ("SciPy cached LU", lambda: problem.reference_solve(*args)),
                             ("DST fast solver", lambda: problem.fast_solve(*args))):
                _, secs = timed(fn, repeat=2 if n <= 128 else 1)
                rows.append({"solver": name, "device": "cpu", "N": n, "batch": batch, "s_per_sample": secs / batch})
            for device in devices:
                solver.denoiser.to(device)
                solver.device = torch.device(device)
                for label, sampler, steps in settings(solver):
                    kw = dict(sampler=sampler, steps=steps, **grid_options(solver))
                    solver.solve(**_take(fields, slice(1)), **kw)  # warm-up
                    _, secs = timed(solver.solve, **fields, batch_size=batch, repeat=2 if n <= 128 else 1, **kw)
                    nfe_used = solver.solve(**_take(fields, slice(1)), return_info=True, **kw)[1].nfe
                    rows.append({"solver": f"pdediff {label}, {nfe_used} NFE", "device": device,
                                 "N": n, "batch": batch, "s_per_sample": secs / batch})
            solver.denoiser.to("cpu")
            solver.device = torch.device("cpu")
    return rows


def to_markdown(acc_rows, time_rows, savings, meta) -> str:
    lines = ["# Benchmark: pdediff surrogate against SciPy", "",
             f"Command: `{meta['command']}`  ", f"Machine: {meta['machine']}; torch threads {meta['threads']}  ",
             f"Model: {meta['model']}", "", "## Accuracy (mean over samples)", "",
             "| case | solver | NFE | rel L2 | max err | boundary err | residual | seed spread | ms/sample |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in acc_rows:
        spread = f"{r['seed_spread']:.1e}" if "seed_spread" in r else ""
        ms = "" if np.isnan(r["ms_per_sample"]) else f"{r['ms_per_sample']:.2f}"
        lines.append(f"| {r['case']} | {r['solver']} | {r['nfe']} | {r['rel_l2']:.2e} | {r['max_err']:.2e} | "
                     f"{r['boundary_err']:.1e} | {r['residual']:.1e} | {spread} | {ms} |")
    lines += ["", "## Iterations to a relative residual of 1e-8 (CG; AMG: CG preconditioned by AMG)", "",
              "; ".join(f"{k}: {v:.1f}" for k, v in savings.items()) + ".", "",
              "## Time per sample [ms]", "", meta.get("grid_note", ""), "", "| solver | device | N | batch | ms/sample |",
              "| --- | --- | ---: | ---: | ---: |"]
    for r in time_rows:
        lines.append(f"| {r['solver']} | {r['device']} | {r['N']} | {r['batch']} | {1e3 * r['s_per_sample']:.3f} |")
    return "\n".join(lines) + "\n"


def save_xarray(rows, dims, path: Path) -> None:
    import pandas as pd
    import xarray as xr

    frame = pd.DataFrame(rows).set_index(list(dims))
    if frame.index.has_duplicates:
        raise ValueError(f"duplicate rows for {dims}: {frame.index[frame.index.duplicated()].tolist()}")
    with atomic_path(path, suffix=".nc") as tmp:
        xr.Dataset.from_dataframe(frame).to_netcdf(tmp)


def figures(acc_rows, time_rows, gallery, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases_ = list(dict.fromkeys(r["case"] for r in acc_rows))
    fig, axes = plt.subplots(1, len(cases_), figsize=(4.2 * len(cases_), 3.6), constrained_layout=True, squeeze=False)
    for ax, case in zip(axes[0], cases_):
        for sampler in sorted({r["solver"] for r in acc_rows if r["case"] == case and r["solver"] in ("euler", "heun")}):
            pts = sorted((r["nfe"], r["rel_l2"]) for r in acc_rows if r["case"] == case and r["solver"] == sampler)
            ax.loglog(*zip(*pts), "o-", label=sampler)
        ax.set_title(case, fontsize=10)
        ax.set_xlabel("NFE")
        ax.grid(True, which="both", alpha=0.3)
    axes[0, 0].set_ylabel("relative L2 error")
    axes[0, 0].legend()
    save_figure(fig, out / "error_vs_nfe.png", dpi=100)

    fig, ax = plt.subplots(figsize=(5.5, 4), constrained_layout=True)
    big = max(r["batch"] for r in time_rows)
    for (name, device) in dict.fromkeys((r["solver"], r["device"]) for r in time_rows):
        pts = sorted((r["N"], r["s_per_sample"]) for r in time_rows
                     if r["solver"] == name and r["device"] == device and r["batch"] == big)
        ax.loglog(*zip(*pts), "o-", label=f"{name} ({device})")
    ax.set_xlabel("N")
    ax.set_ylabel(f"seconds per sample (batch {big})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, out / "time_vs_n.png", dpi=100)

    plot_rows(out / "gallery.png", gallery, "pdediff (the model's default sampling) against SciPy")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="model checkpoint (default: the shipped model)")
    p.add_argument("--data", help="test split file (default: fresh samples of the training families)")
    p.add_argument("--samples", type=int, default=64, help="samples per accuracy case")
    p.add_argument("--samplers", default="euler,heun")
    p.add_argument("--nfe", default=",".join(map(str, NFES)))
    p.add_argument("--guidance", type=float, default=0.0, help="residual guidance weight (0: skip)")
    p.add_argument("--polish", type=int, default=40, help="CG iterations of polish (and a quarter of it)")
    p.add_argument("--amg", type=int, default=3, help="AMG-preconditioned CG polish: 1..AMG iterations")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--sizes", default="32,64,128,256")
    p.add_argument("--batches", default="1,64")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--out", default=str(results_dir("surrogate")))
    args = p.parse_args(argv)
    import pdediff

    try:
        solver = pdediff.load_solver(args.checkpoint)
        nfes = [int(v) for v in args.nfe.split(",")]
        sizes = [int(v) for v in args.sizes.split(",")]
        batches = [int(v) for v in args.batches.split(",")]
        if min(nfes + sizes + batches + [args.samples, args.seeds]) < 1 or args.polish < 0 or args.amg < 0 or args.guidance < 0:
            raise ValueError("--nfe, --sizes, --batches, --samples and --seeds take positive integers; "
                             "--polish, --amg and --guidance non-negative numbers")
        from pdediff.maths.samplers import SAMPLERS

        unknown = [s for s in args.samplers.split(",") if s not in SAMPLERS]
        if unknown:
            raise ValueError(f"--samplers has unknown {unknown}; expected some of {sorted(SAMPLERS)}")
        case_list = cases(solver, args.data, args.samples, args.seed)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
    except (ValueError, OSError) as exc:
        p.exit(2, f"benchmarks: error: {exc}\n")
    t0 = time.perf_counter()
    acc = accuracy(solver, case_list, samplers=args.samplers.split(","), nfes=nfes, guidance=args.guidance,
                   polish=args.polish, amg=args.amg, seeds=args.seeds)
    savings = polish_savings(solver, _take(case_list[0][1], slice(16)))
    times = timing(solver, sizes, batches, args.seed)
    first = solver.problem.condition_fields[0]
    gallery = [(name, fields[first][0], solver.solve(**_take(fields, slice(1)), **grid_options(solver))[0], ref[0])
               for name, fields, ref in case_list]
    meta = {"command": "python -m benchmarks " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
            "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores"
                       + (f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"),
            "threads": torch.get_num_threads(), "model": args.checkpoint or "shipped default",
            "seconds": time.perf_counter() - t0,
            "grid_note": ("" if not grid_options(solver) else
                          f"The {solver.config.model.network} is not resolution-free: on grids other than "
                          f"N = {solver.grid_size} it runs there and is interpolated (resample=True).")}
    save_xarray(acc, ("case", "solver", "nfe"), out / "accuracy.nc")
    save_xarray(times, ("solver", "device", "N", "batch"), out / "timing.nc")
    write_text(out / "results.md", to_markdown(acc, times, savings, meta))
    write_text(out / "results.json", json.dumps({"meta": meta, "accuracy": acc, "timing": times, "polish": savings},
                                                indent=1))
    figures(acc, times, gallery, out)
    record_command(out, "surrogate", argv, ["accuracy.nc", "timing.nc", "results.md", "results.json",
                                            "error_vs_nfe.png", "time_vs_n.png", "gallery.png"])
    print((out / "results.md").read_text())
    return 0
