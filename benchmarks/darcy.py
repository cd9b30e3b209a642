"""Darcy flow: the diffusion surrogate against SciPy, on the training law and on laws it never saw.

    python -m benchmarks.darcy --model darcy --data datasets/darcy64/test.h5 --count 64

Cases (fresh draws except the test split; f = 1, u = 0 on the ring):
  * test split: the thresholded law of training (a in {3, 12}, alpha = 2, tau = 3);
  * finer inclusions: the thresholded law with tau = 6 (not in training);
  * log-normal: a = exp(smooth field), log a of standard deviation about 1 (not in training);
  * high contrast: the thresholded law with a in {1, 100} (not in training);
  * rough log-normal: a rougher field (alpha = 1.5) with log a of standard deviation about 2.

For each: relative L2 error of the model's default sampling (mean, median), two-seed spread,
and after 2 and 5 iterations of AMG-preconditioned CG polish. Timing per sample (batch of
``--count``), at N = 64 and at N = 128 (the surrogate resampled): the surrogate, SciPy's sparse LU
factorised per sample (no factorisation can be reused: the operator changes with a), and
AMG-preconditioned CG from zero to rtol 1e-8 with the AMG set-up per sample (set-up reported on
its own). Writes ``benchmarks/results/darcy.md``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import pdediff
from pdediff import atomic, metrics
from pdediff.coefficients import LogNormalField, ThresholdField
from pdediff.data import load_arrays
from pdediff.problems import Grid
from pdediff.problems.darcy import amg_preconditioner

RESULTS = Path(__file__).parent / "results"


def draw(family, n: int, count: int, seed: int) -> np.ndarray:
    return family.sample(Grid(n), [np.random.default_rng([seed, 7_777, k]) for k in range(count)])


def cases(data: str, count: int, n: int) -> dict[str, np.ndarray]:
    test = load_arrays(data, limit=count)["a"].astype(np.float64)
    return {
        "test split (threshold, tau = 3)": test,
        "finer inclusions (threshold, tau = 6)": draw(ThresholdField(tau=6.0), n, count, 1),
        "log-normal": draw(LogNormalField(), n, count, 2),
        "high contrast (threshold, a in {1, 100})": draw(ThresholdField(high=100.0, low=1.0), n, count, 4),
        "rough log-normal (alpha = 1.5, sigma = 2)": draw(LogNormalField(alpha=1.5, sigma=2.0), n, count, 5),
    }


def timed(fn, repeat: int = 1):
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="darcy", help="shipped model name or checkpoint path")
    p.add_argument("--data", default="datasets/darcy64/test.h5")
    p.add_argument("--count", type=int, default=64)
    p.add_argument("--out", default=str(RESULTS / "darcy.md"))
    args = p.parse_args(argv)
    solver = pdediff.load_solver(args.model)
    problem = solver.problem
    n = solver.grid_size or 64
    lines = [f"# Darcy flow: `python -m benchmarks.darcy --model {args.model} --data {args.data} --count {args.count}`",
             "", f"Model: {args.model} ({solver.config.name}, trained at N = {n}); {args.count} samples a case.", "",
             "| case | rel L2 mean | median | seed spread | +2 AMG-CG | +5 AMG-CG |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, a in cases(args.data, args.count, n).items():
        ref = problem.reference_solve(a)
        u0 = solver.solve(a)
        u1 = solver.solve(a, seed=1)
        err = metrics.relative_l2(u0, ref)
        spread = float(np.mean(metrics.seed_spread([u0, u1])))
        polished = [float(np.mean(metrics.relative_l2(solver.solve(a, polish=k), ref))) for k in (2, 5)]
        lines.append(f"| {name} | {np.mean(err):.2e} | {np.median(err):.2e} | {spread:.1e} | "
                     f"{polished[0]:.1e} | {polished[1]:.1e} |")
        print(lines[-1], flush=True)
    lines += ["", "Time per sample (CPU; batch of the case's samples; best of 2 runs):", "",
              "| N | surrogate | SciPy LU per sample | AMG-CG to 1e-8 (incl. set-up) | of which AMG set-up |",
              "| ---: | ---: | ---: | ---: | ---: |"]
    for size in (n, 2 * n):
        a = draw(ThresholdField(), size, min(args.count, 16), 3)
        count = len(a)
        resample = size != n
        solver.solve(a[:1], resample=resample)  # warm-up
        _, t_net = timed(lambda: solver.solve(a, resample=resample), 2)
        _, t_lu = timed(lambda: problem.reference_solve(a), 2)
        _, t_amg = timed(lambda: problem.iterative_solve(np.zeros_like(a), a, maxiter=1000, rtol=1e-8,
                                                          method="amg"), 2)
        _, t_setup = timed(lambda: [amg_preconditioner(problem.operator(size, a=a[k])) for k in range(count)], 2)
        lines.append(f"| {size} | {1e3 * t_net / count:.2f} ms{' (resampled)' if resample else ''} | "
                     f"{1e3 * t_lu / count:.2f} ms | {1e3 * t_amg / count:.2f} ms | {1e3 * t_setup / count:.2f} ms |")
        print(lines[-1], flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out, "\n".join(lines) + "\n")  # a crash never leaves half a table
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
