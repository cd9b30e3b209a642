"""The joint models on inputs no training mixture names: python -m benchmarks.observe_unseen

Poisson: single-node charges, line charges, short waves and rough fields (sources no training
mixture of poisson-joint names), the whole rho or 3 % of phi given; Darcy: log-normal
coefficients (darcy-joint saw the thresholded law only), 3 % of a or of u. Two samples each,
4 draws, the models' default sampling; prints the error of the posterior mean, the share of
unknown nodes within 2 std, and how many AccuracyWarnings the call raised. Prints only (no options).
"""
import argparse
import numpy as np, warnings, pdediff
from pdediff import AccuracyWarning
from pdediff.physics import metrics
from pdediff.physics.sources import draw
from pdediff.physics.coefficients import get_coefficient
from pdediff.physics.problems.base import Grid
from benchmarks.observe import observation
from pdediff.learning.conditioning import unknown_nodes

def run(label, solver, truth, observed, name, **kw):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always", AccuracyWarning)
        ds = solver.reconstruct(samples=4, **observed, **kw)
    err = metrics.relative_l2(ds[name].values, truth)
    z = np.abs(ds[name].values - truth) / np.maximum(ds[f"{name}_std"].values, 1e-300)
    inside = np.s_[:, 1:-1, 1:-1]
    print(f"{label:40s} {name} {100*err.mean():7.2f} %  within 2 std {100*np.mean(z[inside] <= 2):5.1f} %  warned {len(w)}", flush=True)


def main(argv=None) -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    p = pdediff.load_solver("poisson-joint")
    for src in ("deltas", "lines", "waves", "rough"):
        rho, g = draw(64, 2, source=src, boundary="smooth", seed=7)
        phi = p.problem.reference_solve(rho, g)
        run(f"poisson {src}: whole rho", p, phi, dict(rho=rho, g=g), "phi")
        run(f"poisson {src}: 3 % of phi", p, phi, dict(phi=observation(phi, 0.03, 0, unknown_nodes(p.problem, 'phi', 64)), g=g), "phi")
    d = pdediff.load_solver("darcy-joint")
    rngs = [np.random.default_rng([7, k]) for k in range(2)]
    a = get_coefficient("lognormal").sample(Grid(64), rngs)
    u = d.problem.reference_solve(a)
    run("darcy lognormal a: 3 % of a", d, u, dict(a=observation(a, 0.03, 0, unknown_nodes(d.problem, 'a', 64))), "u")
    run("darcy lognormal a: 3 % of u", d, a, dict(u=observation(u, 0.03, 0, unknown_nodes(d.problem, 'u', 64))), "a")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
