"""Every answer knows its error: the solver's error estimate against the true error, and the time
to reach a tolerance, by source family.

    python -m benchmarks.tolerance [--model poisson] [--count 32]

For each family (the test law and families the model never saw; fresh draws, zero or smooth
Dirichlet data): the network's answer, its ``info.error_estimate`` and its true relative L2
error against the exact discrete solution; the share of samples whose estimate is within a
factor of 3 of the truth and the smallest estimate/true ratio (an estimate must never read small
when the error is large). Then the time per sample to reach 1e-4 and 1e-6: ``solve(tol=)``
(network, estimate, polish of the samples that need it) against the classical methods from zero
(the same preconditioned iteration and stopping rule started from zero; the fast solve; SciPy's
sparse LU, factorised once and reused). And the cost of the estimate: solve with and without it.

Writes ``benchmarks/results/tolerance/`` (``--out``): ``tolerance.md`` and ``estimate_vs_true.png``
(every sample, every family), with the command in ``COMMAND``. Timings are measured in this run on
this machine.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

from benchmarks import record_command, results_dir
from benchmarks.problems import timed
from pdediff import AccuracyWarning
from pdediff.data import atomic
from pdediff.physics import metrics
from pdediff.data.cases import Case
from pdediff.solver import SolveInfo
from pdediff.solver.solve import estimate_error
from pdediff.tools.plotting import save_figure

FAMILIES = {  # name: source family (a comma list is a mixture)
    "test law (blobs, grf)": "blobs,grf",
    "point charges & dipoles": "point_dipoles",
    "line charges": "lines",
    "short waves (k 4-10)": "waves",
    "disks & rectangles": "disks_rects",
    "rough fields": "rough",
    "single-node charges": "deltas",
    "checkerboards": "checkerboard",
}
TOLS = (1e-4, 1e-6)


def run(model: str | None, count: int, seed: int = 2026):
    import pdediff

    solver = pdediff.load_solver(model)
    problem = solver.problem
    n = solver.grid_size or 64
    names = problem.condition_fields
    rows, scatter, times = [], {}, []
    warnings.simplefilter("ignore", AccuracyWarning)  # the estimates are the subject here
    for k, (label, source) in enumerate(FAMILIES.items()):
        fields = Case(source, "zero,smooth").draw(count, seed + k, problem=problem, n=n)
        ref = problem.reference_solve(**fields)
        solver.solve(**{f: v[:1] for f, v in fields.items()})  # warm-up
        (u, info), t_net = timed(lambda: solver.solve(**fields, return_info=True))
        true = metrics.relative_l2(u, ref)
        est = np.asarray(info.error_estimate)
        ratio = est / true
        scatter[label] = (true, est)
        rows.append((label, float(np.median(true)), float(np.mean((ratio >= 1 / 3) & (ratio <= 3))),
                     float(ratio.min()), float(ratio.max())))
        _, t_plain = timed(lambda: solver.solve(**fields, estimate=False))
        cells = {"family": label, "network": t_net / count, "estimate share": (t_net - t_plain) / t_plain}
        for tol in TOLS:
            (u_tol, info_tol), t = timed(lambda: solver.solve(**fields, tol=tol, return_info=True))
            cells[f"network + polish to {tol:g}"] = t / count
            cells[f"true error at {tol:g}"] = float(np.max(metrics.relative_l2(u_tol, ref)))
            cells[f"polish iterations to {tol:g}"] = float(np.mean(info_tol.polish_iterations))
            zero_info = SolveInfo()
            batch = {f: fields[f] for f in names}
            _, t = timed(lambda: estimate_error(solver, np.zeros_like(ref), batch, tol, zero_info))
            cells[f"classical from zero to {tol:g}"] = t / count
        if problem.fast_solve is not None:
            _, t = timed(lambda: problem.fast_solve(**fields))
            cells["fast solve"] = t / count
        problem.reference_solve(**fields)  # the factorisation is cached per N: time its reuse
        _, t = timed(lambda: problem.reference_solve(**fields))
        cells["LU (cached)"] = t / count
        times.append(cells)
        print(f"{label}: median true {rows[-1][1]:.2e}, within 3x {rows[-1][2]:.0%}, ratio "
              f"[{rows[-1][3]:.2f}, {rows[-1][4]:.2f}]", flush=True)
    return solver, rows, scatter, times


def figure(scatter: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5.5), constrained_layout=True)
    lo = min(min(t.min(), e.min()) for t, e in scatter.values()) / 2
    hi = max(max(t.max(), e.max()) for t, e in scatter.values()) * 2
    line = np.array([lo, hi])
    ax.fill_between(line, line / 3, line * 3, color="0.9", label="within a factor of 3")
    ax.plot(line, line, color="0.4", lw=1)
    for label, (true, est) in scatter.items():
        ax.scatter(true, est, s=14, label=label)
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), xlabel="true relative L2 error",
           ylabel="estimated error (info.error_estimate)", title="error estimate against true error")
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=90)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="shipped model name or checkpoint (default: the default model)")
    p.add_argument("--count", type=int, default=32, help="samples per family")
    p.add_argument("--out", default=str(results_dir("tolerance")))
    args = p.parse_args(argv)
    if args.count < 1:
        p.exit(2, f"{p.prog}: error: --count={args.count} is invalid; expected an integer >= 1\n")
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        solver, rows, scatter, times = run(args.model, args.count)
    except (ValueError, OSError) as exc:
        p.exit(2, f"{p.prog}: error: {exc}\n")
    command = " ".join(["python -m benchmarks.tolerance", *(argv if argv is not None else __import__("sys").argv[1:])])
    lines = [f"# Error estimates and time to tolerance: `{command}`", "",
             f"Model: {args.model or 'default'} ({solver.config.name}); {args.count} samples a family.", "",
             "| family | median true error | estimate within 3x | smallest estimate/true | largest |",
             "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r[0]} | {r[1]:.2e} | {r[2]:.0%} | {r[3]:.2f} | {r[4]:.2f} |" for r in rows]
    keys = [k for k in times[0] if k != "family"]
    lines += ["", "Time per sample in ms (estimate share: the estimate's cost over the network's); worst true "
              "error of the answers returned with tol:", "",
              "| family | " + " | ".join(keys) + " |", "| --- |" + " ---: |" * len(keys)]
    for cells in times:
        values = []
        for k in keys:
            v = cells[k]
            values.append(f"{v:.0%}" if k == "estimate share" else f"{v:.1e}" if k.startswith("true")
                          else f"{v:.1f}" if k.startswith("polish") else f"{1e3 * v:.2f}")
        lines.append(f"| {cells['family']} | " + " | ".join(values) + " |")
    atomic.write_text(out / "tolerance.md", "\n".join(lines) + "\n")
    figure(scatter, out / "estimate_vs_true.png")
    record_command(out, "tolerance", argv, ["tolerance.md", "estimate_vs_true.png"])
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
