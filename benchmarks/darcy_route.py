"""One Darcy model for every coefficient law: the Darcy models side by side, and
``load_solver("darcy")`` as shipped, which hands the samples whose estimated error exceeds 1 % to
its fallback model (if it has one) and keeps the better answer.

    python -m benchmarks.darcy_route [--count 64] [--models darcy,darcy-broad,runs/NAME/checkpoint.safetensors]

For each case of ``benchmarks.problems`` for Darcy (the classic thresholded law, finer inclusions,
log-normal, high contrast, rough log-normal, layered and channelised media; fresh draws, f = 1,
g = 0) and one with a random source and Dirichlet data: the mean relative L2 error of each model
of ``--models`` alone (shipped names or checkpoint paths), of the routed solver and the share of
samples it routed (only when ``load_solver("darcy")`` has a fallback), the operator's own guess
alone (one V-cycle-preconditioned CG step from zero, ``Problem.operator_guess``: the input of a
model with ``model.operator_input``), and the time a sample of each (network and error estimate, its AMG set-up included; batch of up to 64, one run). Writes
``benchmarks/results/darcy_route/darcy_route.md`` (``--out``) with the command in ``COMMAND``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks import load_models, results_dir, write_table
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
    p.add_argument("--models", default="darcy,darcy-broad",
                   help="comma list of Darcy models to solve alone: shipped names or checkpoint paths")
    p.add_argument("--out", default=str(results_dir("darcy_route") / "darcy_route.md"))
    args = p.parse_args(argv)
    if args.count < 1:
        p.error(f"--count={args.count}; expected an integer >= 1")
    alone = load_models(p, args.models, "darcy")
    names = list(alone)
    warnings.simplefilter("ignore", pdediff.AccuracyWarning)  # the table reports the errors
    routed = pdediff.load_solver("darcy")
    routed = routed if routed.fallback is not None else None
    problem, n = next(iter(alone.values())).problem, next(iter(alone.values())).grid_size
    solvers = list(alone.values()) + ([routed] if routed else [])
    titles = names + (["routed"] if routed else [])
    route_note = (" Routed: `load_solver(\"darcy\")`, which hands samples whose estimated error exceeds 1 % to "
                  f"`{routed.fallback.name}` and keeps the answer with the lower estimate." if routed else "")
    lines = [f"# One Darcy model for every law: `python -m benchmarks.darcy_route --count {args.count}"
             + (f" --models {args.models}" if argv and "--models" in argv else "") + "`", "",
             f"Mean relative L2 error against the sparse LU, {args.count} fresh samples a case at N = {n}, each "
             f"model's default sampling.{route_note} Time: ms a sample with the error estimate (batch of up to 64, "
             "one run, this machine).", "",
             "| case | " + " | ".join(titles) + (" | routed to the fallback" if routed else "")
             + " | operator guess alone | " + " | ".join(f"ms {t}" for t in titles) + " |",
             "| --- |" + " ---: |" * (2 * len(titles) + bool(routed) + 1)]
    print("\n".join(lines), flush=True)
    every = cases(problem, n, args.count)
    for solver in solvers:  # warm-up: the first call's one-off costs are not timed
        solver.solve(**{k: v[:2] for k, v in every["log-normal"].items()}, return_info=True)
    for name, fields in every.items():
        ref = problem.reference_solve(**fields)
        cells, times = [], []
        for solver in solvers:
            clear_amg_cache()  # each solve sets up its estimate's AMG hierarchies itself
            t0 = time.perf_counter()
            u, info = solver.solve(**fields, return_info=True)
            times.append(1e3 * (time.perf_counter() - t0) / len(ref))
            cells.append(f"{float(np.mean(metrics.relative_l2(u, ref))):.2%}")
        if routed:
            cells.append(f"{np.mean([m == routed.fallback.name for m in info.models]):.0%}")
        guess = problem.operator_guess(*(fields.get(k) for k in problem.condition_fields))
        cells.append(f"{float(np.mean(metrics.relative_l2(guess, ref))):.2%}")
        lines.append(f"| {name} | " + " | ".join(cells) + " | " + " | ".join(f"{t:.1f}" for t in times) + " |")
        print(lines[-1], flush=True)
    write_table(args.out, "darcy_route", argv, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
