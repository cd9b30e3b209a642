"""The FNO score model (``configs/experiments/fno64.yaml``) beside the U-Nets, on the law both were trained on.

    python -m benchmarks.fno64 --fno runs/fno64/checkpoint.safetensors [--samples 64]

Fresh samples of the test law (blobs, grf; zero or smooth g) at N = 64 and at N = 128: the FNO
solves on the finer grid as it is (it is resolution-free), the U-Nets on their own grid with
``resample=True``. Each model uses its default sampling; times are per sample (the network and
its grid transfers; no error estimate), best of two runs, interleaved in one run. Also the
unseen families of the shipped model's cases at N = 64. Writes ``benchmarks/results/fno64/fno64.md``
(``--out``), with the command in ``COMMAND`` beside it.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

from pdediff import AccuracyWarning
from pdediff.physics import metrics
from benchmarks import record_command, results_dir
from pdediff.data.atomic import write_text
from pdediff.data.cases import CASES, grid_options



def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fno", required=True, help="the FNO checkpoint")
    p.add_argument("--models", default="poisson,poisson-smooth", help="U-Nets to compare (shipped names or paths)")
    p.add_argument("--samples", type=int, default=64, help="samples a case (a quarter at N = 128)")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--out", default=str(results_dir("fno64") / "fno64.md"))
    args = p.parse_args(argv)
    import pdediff

    try:
        if args.samples < 4:
            raise ValueError(f"--samples={args.samples}; expected an integer >= 4")
        solvers = {name: pdediff.load_solver(name) for name in args.models.split(",") if name}
        solvers["FNO (configs/experiments/fno64.yaml)"] = pdediff.load_solver(args.fno)
    except (ValueError, OSError) as exc:
        p.exit(2, f"benchmarks.fno64: error: {exc}\n")
    warnings.simplefilter("ignore", AccuracyWarning)
    problem = next(iter(solvers.values())).problem
    cases = CASES[problem.name]
    draws = {}
    for name, case in cases.items():
        n = case.grid(64)
        fields = case.draw(args.samples if n == 64 else max(4, args.samples // 4), args.seed, problem=problem, n=64)
        draws[case.title(name, 64)] = (n, fields, problem.exact_solve(*(fields[k] for k in problem.condition_fields)))
    errors = {m: {} for m in solvers}
    times = {m: {} for m in solvers}
    for title, (n, fields, exact) in draws.items():
        for m, solver in solvers.items():
            opts = dict(estimate=False, **grid_options(solver, n))
            solver.solve(**{k: v[:1] for k, v in fields.items()}, **opts)  # warm-up
            best = np.inf
            for _ in range(2):
                t0 = time.perf_counter()
                out = solver.solve(**fields, **opts)
                best = min(best, time.perf_counter() - t0)
            errors[m][title] = float(metrics.relative_l2(out, exact).mean())
            times[m][title] = 1e3 * best / len(exact)
            print(f"{title}: {m}: rel L2 {errors[m][title]:.2e}, {times[m][title]:.2f} ms a sample", flush=True)
    names = list(solvers)
    lines = [f"# FNO beside the U-Nets: `python -m benchmarks.fno64 --fno {args.fno} --samples {args.samples}`", "",
             "Mean relative L2 against the exact discrete solution (ms per sample, batch 64, no estimate); "
             "each model's default sampling; at N = 128 the FNO runs on the grid, the U-Nets with resample=True.", "",
             "| case | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
    for title in draws:
        lines.append(f"| {title} | " + " | ".join(f"{errors[m][title]:.2e} ({times[m][title]:.1f} ms)" for m in names) + " |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, "\n".join(lines) + "\n")
    record_command(Path(args.out).parent, "fno64", argv, [Path(args.out).name])
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
