"""One Darcy model for every coefficient law: ``load_solver("darcy")`` hands the samples whose
estimated error exceeds 1 % to ``darcy-broad`` and keeps the better answer; this measures it.

    python -m benchmarks.darcy_route [--count 64]

For each case of ``benchmarks.problems`` for Darcy (the classic thresholded law, finer inclusions,
log-normal, high contrast, rough log-normal, layered and channelised media; fresh draws, f = 1,
g = 0) and one with a random source and Dirichlet data: the mean relative L2 error of ``darcy``
alone, ``darcy-broad`` alone and the routed solver, the share of samples routed, and the time a
sample of each (network and error estimate, its AMG set-up included; batch of up to 64, one run). Writes
``benchmarks/results/darcy_route/darcy_route.md`` (``--out``) with the command in ``COMMAND``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks import results_dir, write_table
from benchmarks.problems import darcy_cases
from pdediff.physics import metrics
from pdediff.physics.problems.darcy import clear_amg_cache


def cases(problem, n: int, count: int) -> dict[str, dict]:
    from pdediff.physics.sources import draw

    out = {k: v for k, v in darcy_cases(problem, n, count, None).items() if not k.startswith("N = ")}
    f, g = draw(n, count, source="blobs", boundary="smooth", seed=11)
    out["threshold with random f and g"] = {"a": out["test split (threshold, tau = 3)"]["a"], "f": f, "g": g}
    return out


def main(argv=None) -> int:
    import warnings

    import pdediff

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=64, help="samples a case")
    p.add_argument("--out", default=str(results_dir("darcy_route") / "darcy_route.md"))
    args = p.parse_args(argv)
    warnings.simplefilter("ignore", pdediff.AccuracyWarning)  # the table reports the errors
    routed = pdediff.load_solver("darcy")
    alone = {"darcy": pdediff.load_solver("darcy"), "darcy-broad": pdediff.load_solver("darcy-broad")}
    alone["darcy"].fallback = None
    problem, n = routed.problem, routed.grid_size
    lines = [f"# One Darcy model for every law: `python -m benchmarks.darcy_route --count {args.count}`", "",
             f"Mean relative L2 error against the sparse LU, {args.count} fresh samples a case at N = {n}, each "
             "model's default sampling; routed: `load_solver(\"darcy\")`, which hands samples whose estimated "
             "error exceeds 1 % to `darcy-broad` and keeps the answer with the lower estimate. Time: ms a "
             "sample with the error estimate (batch of up to 64, one run, this machine).", "",
             "| case | darcy | darcy-broad | routed | routed to darcy-broad | ms darcy | ms darcy-broad | ms routed |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    print("\n".join(lines), flush=True)
    every = cases(problem, n, args.count)
    for solver in (*alone.values(), routed):  # warm-up: the first call's one-off costs are not timed
        solver.solve(**{k: v[:2] for k, v in every["log-normal"].items()}, return_info=True)
    for name, fields in every.items():
        ref = problem.reference_solve(**fields)
        cells, times = [], []
        for solver in (alone["darcy"], alone["darcy-broad"], routed):
            clear_amg_cache()  # each solve sets up its estimate's AMG hierarchies itself
            t0 = time.perf_counter()
            u, info = solver.solve(**fields, return_info=True)
            times.append(1e3 * (time.perf_counter() - t0) / len(ref))
            cells.append(float(np.mean(metrics.relative_l2(u, ref))))
        share = np.mean([m == "darcy-broad" for m in info.models])
        lines.append(f"| {name} | {cells[0]:.2%} | {cells[1]:.2%} | {cells[2]:.2%} | {share:.0%} | "
                     + " | ".join(f"{t:.1f}" for t in times) + " |")
        print(lines[-1], flush=True)
    write_table(args.out, "darcy_route", argv, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
