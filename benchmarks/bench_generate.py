"""Time dataset generation: samples/s for a full train split, and DST vs sparse-LU solves.

Run: python -m benchmarks.bench_generate [--n 64] [--count 10000] [--workers 1]
Writes into a temporary folder that is removed afterwards; prints only.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from pdediff.data.generate import Block, compute_block, generate_dataset, make_card
from pdediff.physics.problems import PROBLEMS


def time_solves(problem_name: str, n: int, batch: int = 64) -> dict[str, float]:
    """Seconds per sample of ``fast_solve`` (batched) and ``reference_solve`` on one batch."""
    problem = PROBLEMS[problem_name]
    rng = np.random.default_rng(0)
    rho, g = rng.standard_normal((2, batch, n, n))
    timings = {}
    for name in ("fast_solve", "reference_solve"):
        solve = getattr(problem, name)
        solve(rho[:1], g[:1])  # warm the per-N caches (factorisation, eigenvalues)
        start = time.perf_counter()
        solve(rho, g)
        timings[name] = (time.perf_counter() - start) / batch
    return timings


def time_block(n: int, source: str, boundary: str, size: int = 256) -> float:
    """Seconds per sample to draw and solve one block in memory (no file I/O)."""
    start = time.perf_counter()
    compute_block(Block("poisson", n, source, boundary, 0, 0, 0, size))
    return (time.perf_counter() - start) / size


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--source", default="blobs,grf")
    parser.add_argument("--boundary", default="zero")
    args = parser.parse_args(argv)

    card = make_card("poisson", args.n, args.count, source=args.source, boundary=args.boundary,
                     valid_count=0, test_count=0)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        generate_dataset(out, card, workers=args.workers)
        total = time.perf_counter() - start
    print(f"generate: {args.count} samples at N={args.n} ({args.source}, {args.boundary}, "
          f"workers={args.workers}): {total:.2f} s, {args.count / total:.0f} samples/s")
    per_sample = time_block(args.n, args.source, args.boundary)
    print(f"draw + solve in memory: {per_sample * 1e3:.3f} ms/sample")
    for name, seconds in time_solves("poisson", args.n).items():
        print(f"{name}: {seconds * 1e3:.3f} ms/sample")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
