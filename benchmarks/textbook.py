"""Textbook inputs a physicist would try first, on Poisson models: the true error and the error
estimate of each answer.

    python -m benchmarks.textbook [--models poisson,poisson-smooth]

Ten hand-made (rho, g) pairs on the 64 x 64 grid, none drawn from a training family: a constant
charge; g = x^2 - y^2 and g = 1 with no charge (harmonic answers); the first sine mode and one
with 12 half-waves a side; a single-node charge one node from a corner; constant charge with
g = cos(2 pi x); a blob of charge 1e6; white noise; a step charge with a step in g. For each
model of ``--models`` (shipped names or checkpoint paths, each at its default sampling): the
relative L2 error against SciPy's LU and ``info.error_estimate``. Writes
``benchmarks/results/textbook/textbook.md`` (``--out``) with the command in ``COMMAND``.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

from benchmarks import load_models, results_dir, write_table
from pdediff.physics import metrics


def inputs(n: int = 64) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Name -> (rho, g) on n x n nodes of the unit square."""
    x = np.linspace(0.0, 1.0, n)
    X, Y = np.meshgrid(x, x, indexing="ij")
    zero, one = np.zeros((n, n)), np.ones((n, n))
    corner = zero.copy()
    corner[2, 2] = n * n
    return {
        "rho = 1, g = 0": (one, zero),
        "rho = 0, g = x^2 - y^2": (zero, X**2 - Y**2),
        "rho = 0, g = 1": (zero, one),
        "rho = 2 pi^2 sin(pi x) sin(pi y)": (2 * np.pi**2 * np.sin(np.pi * X) * np.sin(np.pi * Y), zero),
        "rho = sin(12 pi x) sin(12 pi y)": (np.sin(12 * np.pi * X) * np.sin(12 * np.pi * Y), zero),
        "single-node charge one node from a corner": (corner, zero),
        "rho = 1, g = cos(2 pi x)": (one, np.cos(2 * np.pi * X)),
        "a blob of charge 1e6": (1e6 * np.exp(-((X - 0.3) ** 2 + (Y - 0.6) ** 2) / 0.01), zero),
        "white-noise rho": (np.random.default_rng(0).standard_normal((n, n)), zero),
        "step rho, step g": (np.where(X > 0.5, 1.0, -1.0), np.where(Y > 0.5, 1.0, 0.0)),
    }


def main(argv=None) -> int:
    import pdediff

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="poisson,poisson-smooth",
                   help="comma list of Poisson models: shipped names or checkpoint paths")
    p.add_argument("--out", default=str(results_dir("textbook") / "textbook.md"))
    args = p.parse_args(argv)
    solvers = load_models(p, args.models, "poisson", n=64)
    names = list(solvers)
    warnings.simplefilter("ignore", pdediff.AccuracyWarning)  # the table reports the errors
    problem = next(iter(solvers.values())).problem
    lines = [f"# Textbook inputs: `python -m benchmarks.textbook --models {args.models}`", "",
             "Relative L2 error against SciPy's LU / the answer's own error estimate, each model at its "
             "default sampling, N = 64.", "",
             "| input | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
    print("\n".join(lines), flush=True)
    for title, (rho, g) in inputs().items():
        exact = problem.reference_solve(rho, g)
        cells = []
        for solver in solvers.values():
            phi, info = solver.solve(rho, g, return_info=True)
            true = float(np.ravel(metrics.relative_l2(phi, exact))[0])
            cells.append(f"{true:.2e} / {float(np.ravel(info.error_estimate)[0]):.2e}")
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    write_table(args.out, "textbook", argv, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
