"""Seed agreement of a forward model: how its answer moves with the noise seed, by source family,
for four ways of spending one or two network evaluations (issue 23).

    python -m benchmarks.seeds [--model poisson] [--count 16]

For each case of ``pdediff.data.cases`` (fresh draws, zero or smooth g) and 1 and 2 noise levels
of the Euler sampler: the mean relative L2 error (seed 0) and the two-seed spread (seeds 0 and 1,
``pdediff.physics.metrics.seed_spread`` against the exact solution) of

* ``noise``: the sampler as shipped, from sigma_max times Gaussian noise;
* ``antithetic``: the mean of the answers from the noise and from its negative (twice the cost);
* ``zero``: from a zero state instead of noise (the answer cannot depend on the seed).

The start state is swapped in by patching the noise draw of ``pdediff.solver.solve``. Writes
``benchmarks/results/seeds/seeds.md`` (``--out``) with the command in ``COMMAND``.
"""

from __future__ import annotations

import argparse
import warnings
from unittest import mock

import numpy as np
import torch

from benchmarks import results_dir, write_table
from pdediff.data.cases import cases_for, grid_options
from pdediff.physics import metrics


def _answer(solver, fields, seed, steps, options, start):
    import pdediff.solver.solve as stage

    draw = stage.randn
    starts = {"noise": draw, "negative": lambda *a: -draw(*a),
              "zero": lambda shape, gens, device, dtype: torch.zeros(shape, device=device, dtype=dtype)}
    with mock.patch.object(stage, "randn", starts[start]):
        return solver.solve(**fields, seed=seed, steps=steps, estimate=False, **options)


def main(argv=None) -> int:
    import pdediff

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="poisson")
    p.add_argument("--count", type=int, default=16, help="samples a case")
    p.add_argument("--out", default=str(results_dir("seeds") / "seeds.md"))
    args = p.parse_args(argv)
    warnings.simplefilter("ignore", pdediff.AccuracyWarning)
    solver = pdediff.load_solver(args.model)
    solver.fallback = None
    problem = solver.problem
    lines = [f"# Seed agreement: `python -m benchmarks.seeds --model {args.model} --count {args.count}`", "",
             f"{args.count} fresh samples a case; Euler with 1 or 2 noise levels (NFE; antithetic: twice that); "
             "mean relative L2 error of seed 0 / two-seed spread against the exact solution.", "",
             "| case | noise, 1 NFE | antithetic, 1 NFE | zero start, 1 NFE | noise, 2 NFE | antithetic, 2 NFE "
             "| zero start, 2 NFE |", "| --- |" + " ---: |" * 6]
    print("\n".join(lines), flush=True)
    for name, case in cases_for(problem).items():
        n = case.grid(solver.grid_size)
        fields = case.draw(args.count, 1234, problem=problem, n=n)
        ref = problem.reference_solve(*(fields[k] for k in problem.condition_fields))
        options = grid_options(solver, n)
        cells = []
        for steps in (1, 2):
            run = {(s, start): _answer(solver, fields, s, steps, options, start)
                   for s in (0, 1) for start in ("noise", "negative")}
            zero = _answer(solver, fields, 0, steps, options, "zero")
            anti = [(run[s, "noise"] + run[s, "negative"]) / 2 for s in (0, 1)]
            for pair in ([run[0, "noise"], run[1, "noise"]], anti):
                err = float(np.mean(metrics.relative_l2(pair[0], ref)))
                cells.append(f"{err:.2%} / {np.mean(metrics.seed_spread(np.stack(pair), ref)):.1e}")
            cells.append(f"{float(np.mean(metrics.relative_l2(zero, ref))):.2%} / 0")
        lines.append(f"| {case.title(name, solver.grid_size)} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    write_table(args.out, "seeds", argv, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
