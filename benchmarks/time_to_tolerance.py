"""Time to a tolerance, every problem, N = 64, 128 and 256: the shipped forward model with its
polish (``solve(tol=)``) against the best classical methods started from zero.

    python -m benchmarks.time_to_tolerance [--count 64] [--sizes 64,128,256] [--problems poisson,darcy,helmholtz]

For each problem, on fresh draws of its shipped model's training law (Poisson and Helmholtz:
blobs and Gaussian random fields with zero or smooth g; Darcy: thresholded coefficients, f = 1),
one batch of ``--count`` samples a grid, the time per sample to reach a relative L2 error of
1e-4 and 1e-6, and the worst true error reached (against the exact discrete solution):

- ``network + polish``: ``load_solver(problem).solve(fields, tol=tol)``, with ``resample=True``
  where N is not the training grid (the network runs at 64, one step as ``tol`` sets it; the
  polish at N);
- ``network, V-cycle PCG`` (Darcy): the network's default answer (its 2 NFE, no estimate) as the
  start of the batched Galerkin V-cycle PCG (``Problem.polish_to_tolerance(method="vcycle")``);
- the classical methods from zero: the fast solve (DST: Poisson, Helmholtz; exact) and SciPy's
  sparse LU (Poisson: factorised once per N and reused; Darcy: one factorisation a sample),
  AMG-preconditioned CG with the set-up of every sample's hierarchy (Darcy), the batched
  V-cycle PCG (Poisson, Darcy; the same iteration and stopping rule as the polish, from zero),
  and MINRES preconditioned by the shifted-Laplacian AMG (Helmholtz; its residual tolerance
  is the first of tol, tol / 10, tol / 100 that gives a true error <= tol: the baseline is given
  the best setting).

The last columns: the fastest classical method and how many times faster than ``network +
polish`` it is (below 1: the network route wins). Writes ``time_to_tolerance.md`` in ``--out``
with the command in ``COMMAND``; every time is measured in this run on this machine (best of two
runs of each, batch ``--count``).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

from benchmarks import results_dir, write_table
from benchmarks.problems import timed
from pdediff import AccuracyWarning
from pdediff.data.cases import Case
from pdediff.physics import metrics

TOLS = (1e-4, 1e-6)
PROBLEM_NAMES = ("poisson", "darcy", "helmholtz")
#: The training law of each problem's shipped model (its test law here).
LAWS = {"poisson": Case("blobs,grf", "zero,smooth"), "darcy": Case("unit", "zero"),
        "helmholtz": Case("blobs,grf", "zero,smooth")}


def classical(problem, fields: dict, tol: float, ref: np.ndarray) -> dict[str, tuple]:
    """``{method: (seconds for the batch, worst true error)}`` of the classical methods from zero."""
    from pdediff.physics.problems.darcy import clear_amg_cache

    names = problem.condition_fields
    args = [fields[k] for k in names]
    zero = np.zeros_like(ref)
    out = {}

    def record(label, fn):
        u, t = timed(fn)
        out[label] = (t, float(np.max(metrics.relative_l2(u, ref))))

    if problem.fast_solve is not None:
        record("fast solve (DST)", lambda: problem.fast_solve(*args))
    if problem.name == "poisson":
        problem.reference_solve(*args)  # the factorisation is cached per N: time its reuse
        record("LU (cached)", lambda: problem.reference_solve(*args))
        record("V-cycle PCG", lambda: problem.polish_to_tolerance(zero, *args, tol=tol, maxiter=200)[0])
    if problem.name == "darcy":
        record("LU a sample", lambda: problem.reference_solve(*args))

        def amg_cg():
            clear_amg_cache()  # each sample's AMG set-up is part of the solve
            return problem.polish_to_tolerance(zero, *args, tol=tol, maxiter=200, method="amg")[0]

        record("AMG-CG with set-up", amg_cg)
        record("V-cycle PCG", lambda: problem.polish_to_tolerance(zero, *args, tol=tol, maxiter=200,
                                                                  method="vcycle")[0])
    if problem.name == "helmholtz":
        for rtol in (tol, tol / 10, tol / 100):
            u, t = timed(lambda: problem.iterative_solve(zero, *args, maxiter=2000, rtol=rtol, method="amg")[0])
            worst = float(np.max(metrics.relative_l2(u, ref)))
            if worst <= tol:
                break
        out[f"AMG-MINRES (residual {rtol:g})"] = (t, worst)
    return out


def network(solver, fields: dict, tol: float, ref: np.ndarray, options: dict) -> dict[str, tuple]:
    """``{route: (seconds for the batch, worst true error)}`` of the network's routes to tol."""
    problem = solver.problem
    out = {}
    (u, info), t = timed(lambda: solver.solve(**fields, tol=tol, return_info=True, **options))
    out["network + polish"] = (t, float(np.max(metrics.relative_l2(u, ref))), float(np.mean(info.polish_iterations)))
    if problem.name == "darcy":
        args = [fields[k] for k in problem.condition_fields]

        def warm():
            start = solver.solve(**fields, estimate=False, **options)
            return problem.polish_to_tolerance(start, *args, tol=tol, maxiter=200, method="vcycle")

        (u, _, iters), t = timed(warm)
        out["network, V-cycle PCG"] = (t, float(np.max(metrics.relative_l2(u, ref))), float(np.mean(iters)))
    return out


def run(problem_name: str, sizes, count: int, seed: int = 2027) -> list[str]:
    import pdediff

    solver = pdediff.load_solver(problem_name)
    problem = solver.problem
    trained = solver.grid_size or 64
    rows = []
    for k, n in enumerate(sizes):
        fields = LAWS[problem_name].draw(count, seed + k, problem=problem, n=n)
        fields = {f: v for f, v in fields.items() if f in problem.condition_fields}
        ref = problem.exact_solve(*(fields[f] for f in problem.condition_fields))
        options = {} if n == trained else {"resample": True}
        solver.solve(**{f: v[:2] for f, v in fields.items()}, **options)  # warm-up
        _, t_net = timed(lambda: solver.solve(**fields, estimate=False, **options))
        for tol in TOLS:
            routes = network(solver, fields, tol, ref, options)
            base = classical(problem, fields, tol, ref)
            best = min(base, key=lambda m: base[m][0])
            polish = routes["network + polish"]
            cells = [f"{n}", f"{tol:g}", f"{1e3 * t_net / count:.2f}"]
            cells += [f"{1e3 * r[0] / count:.2f} ({r[1]:.0e}, {r[2]:.1f} it)" for r in routes.values()]
            cells += [f"{1e3 * v[0] / count:.2f} ({v[1]:.0e})" for v in base.values()]
            cells += [best, f"{polish[0] / base[best][0]:.1f}x"]
            rows.append((list(routes) + list(base), cells))
            print(f"{problem_name} N={n} tol={tol:g}: " + " | ".join(cells), flush=True)
    header = ["N", "tol", "network alone"] + rows[0][0] + ["fastest classical", "network + polish / fastest"]
    lines = [f"## {problem_name} (model `{solver.name or problem_name}`, trained at N = {trained})", "",
             "| " + " | ".join(header) + " |", "| ---: | ---: |" + " ---: |" * (len(header) - 2)]
    lines += ["| " + " | ".join(cells) + " |" for _, cells in rows]
    return lines + [""]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=64, help="samples a batch (one batch a grid)")
    p.add_argument("--sizes", default="64,128,256", help="comma list of grid sizes N")
    p.add_argument("--problems", default=",".join(PROBLEM_NAMES), help=f"comma list of {list(PROBLEM_NAMES)}")
    p.add_argument("--out", default=str(results_dir("time_to_tolerance") / "time_to_tolerance.md"))
    args = p.parse_args(argv)
    if args.count < 1:
        p.exit(2, f"{p.prog}: error: --count={args.count} is invalid; expected an integer >= 1\n")
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        p.exit(2, f"{p.prog}: error: --sizes={args.sizes!r} is invalid; expected a comma list of integers\n")
    names = [s.strip() for s in args.problems.split(",")]
    if not set(names) <= set(PROBLEM_NAMES):
        p.exit(2, f"{p.prog}: error: --problems={args.problems!r} is invalid; expected some of "
                  f"{list(PROBLEM_NAMES)}\n")
    command = " ".join(["python -m benchmarks.time_to_tolerance", *(argv if argv is not None else
                                                                   __import__("sys").argv[1:])])
    lines = [f"# Time to tolerance: `{command}`", "",
             f"ms a sample (batch {args.count}), in brackets the worst true relative L2 error reached and, for "
             "the network's routes, the mean polish iterations; the network routes run the network at its "
             "training grid and resample where N differs.", ""]
    warnings.simplefilter("ignore", AccuracyWarning)
    try:
        for name in names:
            lines += run(name, sizes, args.count)
    except (ValueError, OSError) as exc:
        p.exit(2, f"{p.prog}: error: {exc}\n")
    write_table(Path(args.out), "time_to_tolerance", argv, lines)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
