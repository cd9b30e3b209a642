"""Reconstruction from observations with the joint models: error, coverage, methods, NFE.

    python -m benchmarks.observe --poisson poisson-joint --darcy darcy-joint \\
        --poisson-data datasets/poisson64/test.h5 --darcy-data datasets/darcy64/test.h5

Tasks (issue targets in brackets), on the first ``--count`` test samples, ``--samples`` posterior
draws each, relative L2 of the posterior mean against the truth:

* poisson-rho: the full rho given, phi inferred [phi <= 2 %];
* poisson-phi: a fraction of phi's nodes given, rho and phi inferred [phi <= 3 %, rho <= 20 %];
* darcy-a: a fraction of a's nodes given, u inferred [u <= 2.5 %];
* darcy-u: a fraction of u's nodes given, a inferred [a <= 5 %].

Observed nodes are drawn at random among the nodes where the field is unknown (the interior for
phi and u, whose ring is the Dirichlet data), per sample and seeded. Stages: every method at the
models' default sampling; then, with the method of lowest mean error relative to the targets,
the observed fraction (1, 3, 10, 30 %) and the number of noise levels; the x0-preconditioned
twin (``--poisson-x0``) on the Poisson tasks; calibration: the share of unobserved nodes within
k posterior standard deviations of the truth, against a Gaussian's. Writes ``observe.md`` and
``observe.json``, a gallery and a coverage figure (``observe-gallery.png``, ``observe-coverage.png``)
and the command (``COMMAND``) to ``--out`` (default ``benchmarks/results/observe/``).
"""

from __future__ import annotations

import argparse
import json
import sys
import math
import time
from pathlib import Path

import numpy as np

from benchmarks import record_command, results_dir
from pdediff.physics import metrics
from pdediff.learning.conditioning import unknown_nodes
from pdediff.data.atomic import write_text
from pdediff.tools.plotting import save_figure


#: task -> (model key, observed field, fraction observed (None: whole), targets {field: rel L2})
TASKS = {
    "poisson-rho": ("poisson", "rho", None, {"phi": 0.02}),
    "poisson-phi": ("poisson", "phi", 0.03, {"phi": 0.03, "rho": 0.20}),
    "darcy-a": ("darcy", "a", 0.03, {"u": 0.025}),
    "darcy-u": ("darcy", "u", 0.03, {"a": 0.05}),
}
KS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)


def observation(field: np.ndarray, fraction: float | None, seed: int, where: np.ndarray) -> np.ndarray:
    """``field`` (B, N, N) with NaN except at ``fraction`` of its nodes, drawn among the nodes
    ``where`` (N, N) per sample from (seed, sample); the whole field for None."""
    if fraction is None:
        return field.astype(np.float64)
    count, n = field.shape[0], field.shape[-1]
    out = np.full(field.shape, np.nan)
    nodes = np.arange(n * n).reshape(n, n)
    pool = nodes[where]  # row-major, as the draws were made
    k = max(1, round(fraction * n * n))
    for b in range(count):
        pick = np.random.default_rng([seed, b]).choice(pool, size=k, replace=False)
        out[b].flat[pick] = field[b].flat[pick]
    return out


def run_task(solver, arrays: dict, task: str, fraction, method: str, samples: int, steps=None, seed: int = 0,
             batch_size: int = 256) -> dict:
    """Reconstruct the task's unknown fields; errors, coverage, cost."""
    _, field, _, targets = TASKS[task]
    problem = solver.problem
    n = arrays[field].shape[-1]
    observed = {field: observation(arrays[field], fraction, seed, unknown_nodes(problem, field, n))}
    for k in problem.condition_fields:  # conditions of the joint model, given whole
        if k not in solver.config.model.joint:
            observed[k] = arrays[k].astype(np.float64)
    t0 = time.perf_counter()
    ds = solver.reconstruct(samples=samples, seed=seed, method=method, steps=steps, batch_size=batch_size,
                            **observed)
    seconds = time.perf_counter() - t0
    row = {"task": task, "fraction": fraction, "method": method, "steps": ds.attrs["steps"], "nfe": ds.attrs["nfe"],
           "seconds_per_sample": seconds / len(arrays[field]), "samples": samples}
    for k in solver.config.model.joint:
        # a source is compared where it acts (the PDE ignores its ring values), a solution whole
        acts = np.ones((n, n), bool) if k in problem.solution_fields else problem.support(k, n)
        err = metrics.relative_l2(np.where(acts, ds[k].values, 0.0), np.where(acts, arrays[k], 0.0))
        row[f"{k}_rel_l2"] = float(err.mean())
        # coverage over the nodes that were unknown and not observed
        unobserved = (~np.isfinite(observed[k]) if k in observed else np.ones(arrays[k].shape, bool)) & \
            unknown_nodes(problem, k, n)
        z = np.abs(ds[k].values - arrays[k]) / np.maximum(ds[f"{k}_std"].values, 1e-300)
        row[f"{k}_coverage"] = {str(c): float(np.mean(z[unobserved] <= c)) for c in KS}
    row["residual_rel"] = float(np.mean(ds["residual_rel"].values))
    row["targets"] = targets
    row["_ds"] = ds
    row["_observed"] = observed
    return row


def score(row: dict) -> float:
    """Mean error relative to the task's targets (lower is better)."""
    return float(np.mean([row[f"{k}_rel_l2"] / t for k, t in row["targets"].items()]))


def fmt(row: dict, fields=("rho", "phi", "a", "u")) -> str:
    errs = ", ".join(f"{k} {100 * row[f'{k}_rel_l2']:.2f} %" for k in fields if f"{k}_rel_l2" in row)
    return errs


def table(rows, title: str) -> list[str]:
    lines = [f"### {title}", "", "| task | observed | method | NFE | errors (rel L2 of the mean) | within 2 std | "
             "s a sample |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        frac = "all" if r["fraction"] is None else f"{100 * r['fraction']:g} %"
        inferred = [k for k in r["targets"]]
        cover = ", ".join(f"{k} {100 * r[f'{k}_coverage']['2.0']:.0f} %" for k in inferred)
        lines.append(f"| {r['task']} | {frac} | {r['method']}{r.get('model_note', '')} | {r['nfe']} | {fmt(r)} | "
                     f"{cover} | {r['seconds_per_sample']:.2f} |")
    return lines + [""]


def gallery(path, rows) -> None:
    """One row per task: truth, observations, posterior mean, std and error of the inferred field."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pdediff.data.atomic import atomic_path

    fig, axes = plt.subplots(len(rows), 5, figsize=(17, 3.3 * len(rows)), constrained_layout=True, squeeze=False)
    for r, row in enumerate(rows):
        ds, name = row["_ds"], next(iter(row["targets"]))
        field = TASKS[row["task"]][1]
        truth = row["_truth"][name][0]
        obs = row["_observed"][field][0]
        mean = ds[name].values[0]
        std = ds[f"{name}_std"].values[0]
        panels = [(truth, f"{name}, truth", "viridis"), (obs, f"{field}, observed", "viridis"),
                  (mean, f"{name}, posterior mean", "viridis"), (std, f"{name}, std", "magma"),
                  (mean - truth, f"{name}, error", "RdBu_r")]
        for ax, (a, title, cmap) in zip(axes[r], panels):
            if cmap == "RdBu_r":
                v = float(np.nanmax(np.abs(a))) or 1.0
                im = ax.imshow(a, origin="lower", extent=(0, 1, 0, 1), cmap=cmap, vmin=-v, vmax=v)
            else:
                im = ax.imshow(a, origin="lower", extent=(0, 1, 0, 1), cmap=cmap,
                               interpolation="nearest" if "observed" in title else None)
            ax.set_title(title, fontsize=10)
            ax.set_xticks([0, 1])
            ax.set_yticks([0, 1])
            fig.colorbar(im, ax=ax, shrink=0.85)
        axes[r, 0].set_ylabel(row["task"], fontsize=11)
    save_figure(fig, path, dpi=80)


def coverage_plot(path, rows) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pdediff.data.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(5.5, 4.2), constrained_layout=True)
    ks = np.linspace(0, 3.2, 50)
    ax.plot(ks, [math.erf(k / math.sqrt(2)) for k in ks], "k--", label="Gaussian, calibrated")
    for row in rows:
        for name in row["targets"]:
            cov = row[f"{name}_coverage"]
            ax.plot([0] + list(KS), [0] + [cov[str(k)] for k in KS], "o-", label=f"{row['task']}: {name}")
    ax.set_xlabel("k (posterior standard deviations)")
    ax.set_ylabel("share of unobserved nodes with |mean - truth| <= k std")
    ax.axhline(0.8, color="grey", lw=0.5)
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=90)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--poisson", default="poisson-joint", help="Poisson joint model (shipped name or file)")
    p.add_argument("--poisson-x0", help="the x0-preconditioned twin, to compare (optional)")
    p.add_argument("--darcy", default="darcy-joint", help="Darcy joint model (shipped name or file)")
    p.add_argument("--poisson-data", default="datasets/poisson64/test.h5")
    p.add_argument("--darcy-data", default="datasets/darcy64/test.h5")
    p.add_argument("--count", type=int, default=8, help="test samples per task")
    p.add_argument("--samples", type=int, default=16, help="posterior draws per test sample")
    p.add_argument("--methods", default="replace,dps,dps+residual")
    p.add_argument("--fractions", default="0.01,0.03,0.1,0.3")
    p.add_argument("--steps", default="10,32,100", help="noise levels of the NFE sweep (Heun: 2 * steps - 1 NFE)")
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--out", default=str(results_dir("observe")))
    args = p.parse_args(argv)
    import pdediff
    from pdediff.data import load_arrays

    for name in ("count", "samples", "batch_size"):
        if getattr(args, name) < 1:
            p.exit(2, f"observe: error: --{name.replace('_', '-')}={getattr(args, name)}; expected an integer >= 1\n")
    tasks = args.tasks.split(",")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        p.exit(2, f"observe: error: --tasks names {unknown}; expected some of {list(TASKS)}\n")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    solvers = {"poisson": pdediff.load_solver(args.poisson, device=args.device),
               "darcy": pdediff.load_solver(args.darcy, device=args.device)}
    data = {"poisson": load_arrays(args.poisson_data, split="test", dtype=np.float64, limit=args.count),
            "darcy": load_arrays(args.darcy_data, split="test", dtype=np.float64, limit=args.count)}
    report = {"settings": vars(args), "device": str(args.device), "stages": {}}
    lines = ["# Reconstruction from observations", "",
             "`python -m benchmarks.observe " + " ".join(sys.argv[1:] if argv is None else argv) + "`", "",
             f"{args.count} test samples a task, {args.samples} posterior draws each; errors are the mean over "
             "samples of the relative L2 error of the posterior mean; 'within 2 std': the share of unobserved "
             "nodes where |mean - truth| <= 2 posterior standard deviations (target >= 80 %).", ""]

    def go(task, fraction="default", method=None, steps=None, solver=None):
        key = TASKS[task][0]
        frac = TASKS[task][2] if fraction == "default" else fraction
        row = run_task(solver or solvers[key], data[key], task, frac, method, args.samples, steps,
                       batch_size=args.batch_size)
        row["_truth"] = data[key]
        print(f"{task:12s} {str(frac):5s} {method:18s} nfe {row['nfe']:4d}  {fmt(row)}  "
              f"{row['seconds_per_sample']:.2f} s/sample", flush=True)
        return row

    methods = args.methods.split(",")
    stage = [go(t, method=m) for t in tasks for m in methods]
    best = min(methods, key=lambda m: np.mean([score(r) for r in stage if r["method"] == m]))
    lines += table(stage, "Methods, at the models' default sampling") + [f"Chosen: `{best}` (lowest mean error "
                                                                         "relative to the targets).", ""]
    report["stages"]["methods"] = stage
    report["best_method"] = best
    chosen = [r for r in stage if r["method"] == best]
    gallery(out / "observe-gallery.png", chosen)
    coverage_plot(out / "observe-coverage.png", chosen)
    lines += ["### Calibration (chosen method): share of unobserved nodes within k std", "",
              "| task: field | " + " | ".join(f"k = {k:g}" for k in KS) + " |", "| --- |" + " --- |" * len(KS)]
    lines += [f"| {r['task']}: {k} | " + " | ".join(f"{100 * r[f'{k}_coverage'][str(c)]:.0f} %" for c in KS) + " |"
              for r in chosen for k in r["targets"]]
    lines += ["| Gaussian | " + " | ".join(f"{100 * math.erf(k / math.sqrt(2)):.0f} %" for k in KS) + " |", ""]
    partial = [t for t in tasks if TASKS[t][2] is not None]
    fractions = [float(f) for f in args.fractions.split(",") if f]
    stage = [go(t, fraction=f, method=best) for t in partial for f in fractions]
    lines += table(stage, f"Observed fraction ({best})")
    report["stages"]["fractions"] = stage
    stage = [go(t, method=best, steps=int(s)) for t in tasks for s in args.steps.split(",") if s]
    lines += table(stage, f"Noise levels ({best}; Heun: NFE = 2 levels - 1)")
    report["stages"]["steps"] = stage
    if args.poisson_x0:
        twin = pdediff.load_solver(args.poisson_x0, device=args.device)
        stage = []
        for t in (t for t in tasks if TASKS[t][0] == "poisson"):
            for s, note in ((solvers["poisson"], " (edm)"), (twin, " (x0)")):
                row = go(t, method=best, solver=s)
                row["model_note"] = note
                stage.append(row)
        lines += table(stage, "Preconditioning of the Poisson joint model: EDM against x0")
        report["stages"]["precond"] = stage
    for rows in report["stages"].values():
        for r in rows:
            for k in [k for k in r if k.startswith("_")]:
                del r[k]
    write_text(out / "observe.md", "\n".join(lines) + "\n")
    write_text(out / "observe.json", json.dumps(report, indent=1, default=str) + "\n")
    record_command(out, "observe", argv, ["observe.md", "observe.json", "observe-gallery.png", "observe-coverage.png"])
    print(f"wrote {out / 'observe.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
