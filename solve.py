#!/usr/bin/env python
"""Solve for new condition fields with a trained model.

    python solve.py --checkpoint runs/tiny/checkpoint.safetensors --rho rho.npy --out phi.npy --check --plot solve.png
    python solve.py --checkpoint runs/darcy/checkpoint.safetensors --field a=a.npy --field f=f.npy --out u.npy

``--field NAME=FILE`` (repeatable; ``--rho``/``--g`` are aliases) reads .npy, .npz (first array, or
``FILE.npz:name``) or .h5 (``FILE.h5:dataset``, default the field's name); fields left out take the
problem's defaults. ``--checkpoint`` is a file or a shipped model's name. ``--check`` compares with
the problem's reference solver.

With a joint model, ``--observe NAME=FILE`` (repeatable) gives what is observed of a field (NaN at
the nodes not observed) and ``--samples K`` the posterior draws; the posterior means and standard
deviations of every field, with the residual, go to ``--out`` as netCDF (``.nc``):

    python solve.py --checkpoint poisson-joint --observe phi=sensors.npy --samples 16 --out posterior.nc
"""

import argparse
import sys

from pdediff.tools.cli import solve_main


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="checkpoint file or shipped model name (default: the shipped default)")
    p.add_argument("--field", action="append", metavar="NAME=FILE",
                   help="a condition field of the model's problem from FILE (repeatable), e.g. --field a=a.npy")
    p.add_argument("--rho", help="alias of --field FIRST=FILE for the problem's first condition field")
    p.add_argument("--g", help="alias of --field g=FILE: Dirichlet data (default: the problem's, zero)")
    p.add_argument("--out", required=True, help="output .npy, .npz or .h5 file (.nc with --observe)")
    p.add_argument("--observe", action="append", metavar="NAME=FILE",
                   help="joint models: what is observed of field NAME, NaN where not observed (repeatable)")
    p.add_argument("--samples", type=int, default=8, help="posterior draws per sample, with --observe")
    p.add_argument("--method", help="how observations enter, with --observe (default: the model's own)")
    p.add_argument("--sigma-y", type=float, default=0.0, help="observation noise standard deviation")
    p.add_argument("--sampler", help="a sampler of pdediff.maths.samplers.SAMPLERS (default: the model's own)")
    p.add_argument("--steps", type=int, help="noise levels (default: the model's own; with --tol, its sampler's fewest)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--guidance", type=float, default=0.0, help="residual guidance weight")
    p.add_argument("--cfg", type=float, default=0.0,
                   help="classifier-free guidance weight (a model trained with model.cond_dropout; 0: off)")
    p.add_argument("--polish", type=int, default=0, help="classical iterations from the network's answer")
    p.add_argument("--polish-method", default="amg", help="amg (multigrid-preconditioned CG) or cg")
    p.add_argument("--tol", type=float, default=None,
                   help="polish each sample until its estimated relative error is <= TOL (e.g. 1e-4)")
    p.add_argument("--resample", action="store_true",
                   help="on a grid other than the model's, solve on its grid and interpolate")
    p.add_argument("--limit", type=int, help="solve only the first LIMIT samples")
    p.add_argument("--device", default="cpu")
    p.add_argument("--plot", metavar="PNG", help="draw rho, phi, reference and error of the first sample")
    p.add_argument("--check", action="store_true", help="print errors against the reference solver")
    args = p.parse_args(argv)
    try:
        return solve_main(args)
    except ValueError as exc:
        p.exit(2, f"solve.py: error: {exc}\n")


if __name__ == "__main__":
    sys.exit(main())
