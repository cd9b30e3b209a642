"""``make demo``: solve new charge distributions with the shipped model and compare with SciPy.

Solves fresh samples of every case of the model's problem in :data:`pdediff.data.cases.CASES` (the
cases of the benchmark and of the shipped model's tests) and prints a table of relative L2
error, maximum error, boundary error, PDE residual and wall time for pdediff (its default
probability-flow ODE sampling) with and without a multigrid polish (conjugate gradients
preconditioned by algebraic multigrid, started from the network's answer), against SciPy's
sparse direct solver and the same polish started from zero, and writes a picture of
rho / phi / reference / error.

Run ``python -m pdediff.tools.demo --help`` for the options.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from pdediff.physics import metrics
from pdediff.data.cases import cases_for, grid_options
from pdediff.tools.plotting import plot_rows

def make_cases(problem, n: int, per_case: int, seed: int):
    """(title, case, fields) for every case of ``problem`` (:data:`pdediff.data.cases.CASES`): fresh
    fields, from a random stream that the generator's splits never use."""
    return [(case.title(name, n), case, case.draw(per_case, seed, problem=problem, n=n))
            for name, case in cases_for(problem).items()]


def run(checkpoint=None, *, per_case: int = 4, sampler: str | None = None, steps: int | None = None,
        polish: int = 2, seed: int = 2026, png: str = "demo.png") -> list[dict]:
    """Solve the demo cases; print the comparison table; write the gallery. Returns the rows."""
    import scipy.sparse.linalg as spla

    import pdediff

    solver = pdediff.load_solver(checkpoint)
    sampler = sampler or solver.config.model.sampler
    steps = steps or solver.config.model.steps
    problem = solver.problem
    n = solver.grid_size or 64
    names = problem.condition_fields
    print(f"model: {checkpoint or 'shipped default'} ({solver.config.model.network}, trained at N = {n}); "
          f"{per_case} new samples per case; pdediff = probability-flow ODE, {sampler}, {steps} noise levels")
    rows, pictures = [], []
    header = f"{'case':<32}{'solver':<24}{'rel L2':>10}{'max err':>10}{'bdry err':>10}{'residual':>10}{'ms/sample':>11}"
    print(header)
    print("-" * len(header))
    for label, case, fields in make_cases(problem, n, per_case, seed):
        m = case.grid(n)
        grid = grid_options(solver, m)
        values = [fields.get(k) for k in names]
        first = [None if v is None else v[:1] for v in values]
        # warm-up on this grid: first-call costs (factorisation, AMG hierarchy, kernels) are not per sample
        solver.solve(*first, sampler=sampler, steps=steps, **grid)
        problem.reference_solve(*first)
        problem.iterative_solve(np.zeros_like(first[0]), *first, maxiter=1, method="amg")
        t0 = time.perf_counter()
        a, b = problem.operator(m), problem.rhs(*values).reshape(per_case, -1)
        [spla.spsolve(a, b[k]) for k in range(len(b))]
        t_spsolve = time.perf_counter() - t0
        t0 = time.perf_counter()
        ref = problem.reference_solve(*values)  # SciPy sparse LU, factorisation cached per N
        t_ref = time.perf_counter() - t0
        results = [("SciPy spsolve", ref, t_spsolve), ("SciPy LU, cached", ref, t_ref)]
        phi, info = solver.solve(*values, sampler=sampler, steps=steps, return_info=True, **grid)
        results.append((f"pdediff ({info.nfe} NFE)", phi, info.seconds))
        if polish:
            t0 = time.perf_counter()
            phi_p, _ = problem.iterative_solve(phi, *values, maxiter=polish, rtol=0.0, method="amg")
            results.append((f"pdediff + {polish} AMG-CG", phi_p, info.seconds + time.perf_counter() - t0))
            t0 = time.perf_counter()
            phi_z, _ = problem.iterative_solve(np.zeros_like(phi), *values, maxiter=polish, rtol=0.0, method="amg")
            results.append((f"{polish} AMG-CG from zero", phi_z, time.perf_counter() - t0))
        for method, p, secs in results:
            rep = metrics.report(problem, p, fields, ref)
            row = {"case": label, "solver": method, **{k: float(np.mean(v)) for k, v in rep.items()},
                   "ms_per_sample": 1e3 * secs / len(p)}
            rows.append(row)
            print(f"{label:<32}{method:<24}{row['rel_l2']:>10.2e}{row['max_err']:>10.2e}"
                  f"{row['boundary_err']:>10.2e}{row['residual']:>10.2e}{row['ms_per_sample']:>11.2f}")
        pictures.append((label, values[0][0], phi[0], ref[0]))
    plot_rows(png, pictures, f"pdediff vs SciPy, N = {n}, {sampler} with {steps} noise levels (no polish)")
    print("rel L2 / max err: against SciPy's exact discrete solution; bdry err: max |phi - g| on the ring "
          "/ max |phi|; residual: ||b - A phi|| / ||b||")
    print(f"picture: {png}")
    return rows


def generate_only(out: str = "datasets/demo64") -> None:
    """Without a trained model: generate a small dataset and say what was written."""
    from pdediff.data.generate import generate_dataset, make_card

    print("no shipped model yet: generating a small dataset instead")
    card = make_card(n=64, count=1000, source="blobs,grf", boundary="zero,smooth", seed=0)
    t0 = time.perf_counter()
    results = generate_dataset(out, card, overwrite=True)  # the demo's own scratch folder
    secs = time.perf_counter() - t0
    for split, res in results.items():
        print(f"  {split}: {res.count} samples in {res.path}")
    print(f"wrote {sum(card.counts.values())} samples at N = 64 to {out}/ in {secs:.2f} s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="model checkpoint (default: the shipped model)")
    p.add_argument("--per-case", type=int, default=4)
    p.add_argument("--sampler", help="sampler (default: the model's own)")
    p.add_argument("--steps", type=int, help="noise levels (default: the model's own)")
    p.add_argument("--polish", type=int, default=2, help="iterations of AMG-preconditioned CG")
    p.add_argument("--png", default="demo.png")
    args = p.parse_args(argv)
    try:
        if args.per_case < 1:
            raise ValueError(f"--per-case={args.per_case}; expected an integer >= 1")
        from pdediff.models import DEFAULT, FOLDER, MODELS

        if args.checkpoint is None and not (FOLDER / MODELS[DEFAULT]).is_file():
            generate_only()
            return 0
        run(args.checkpoint, per_case=args.per_case, sampler=args.sampler, steps=args.steps, polish=args.polish,
            png=args.png)
    except ValueError as exc:
        p.exit(2, f"demo: error: {exc}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
