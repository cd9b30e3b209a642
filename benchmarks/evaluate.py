"""A model's error on a data split at its default sampling, against the exact discrete solution.

    python -m benchmarks.evaluate --model helmholtz --data datasets/helmholtz64/test.h5 [--count 500]

Prints the mean, median and largest relative L2 error over the split's first ``--count`` samples
(all when omitted), and the mean of the solver's own error estimate beside them.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

from pdediff import AccuracyWarning
from pdediff.physics import metrics
from pdediff.data import load_arrays


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="shipped model name or checkpoint (default: the default model)")
    p.add_argument("--data", required=True, help="a pdediff split file or dataset card")
    p.add_argument("--count", type=int, default=None, help="the first COUNT samples (default: all)")
    args = p.parse_args(argv)
    if args.count is not None and args.count < 1:
        p.exit(2, f"{p.prog}: error: --count={args.count} is invalid; expected an integer >= 1\n")
    import pdediff

    try:
        solver = pdediff.load_solver(args.model)
        problem = solver.problem
        data = load_arrays(args.data, dtype=np.float64, limit=args.count)
    except ValueError as exc:
        p.exit(2, f"{p.prog}: error: {exc}\n")
    fields = {k: data[k] for k in problem.condition_fields if k in data}
    ref = problem.reference_solve(**fields)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AccuracyWarning)
        u, info = solver.solve(**fields, return_info=True)
    err = metrics.relative_l2(u, ref)
    print(f"{args.model or 'default'} on {args.data} ({len(err)} samples, {solver.config.model.sampler}, "
          f"{info.nfe} NFE): relative L2 mean {err.mean():.4f}, median {np.median(err):.4f}, "
          f"largest {err.max():.4f}; estimated mean {np.mean(info.error_estimate):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
