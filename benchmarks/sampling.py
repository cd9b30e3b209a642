"""Choose a model's default sampling: error and seed spread against sampler, levels and sigma_min.

    python -m benchmarks.sampling --data datasets/poisson64/valid.h5 [--checkpoint PATH]

Run on the valid split (never the test split): the chosen setting goes into the model's config
(``model.sampler``, ``model.steps``). Writes ``benchmarks/results/sampling/sampling.md`` (``--out``),
with the command in ``COMMAND`` beside it.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

from pdediff.physics import metrics
from benchmarks import record_command, results_dir
from pdediff.data.atomic import write_text



def sweep(solver, rho, g, phi, settings, seeds=(0, 1)):
    """Rows (sampler, steps, sigma_min, nfe, mean and median rel L2 of seed 0, seed spread)."""
    model = solver.config.model
    default_min = model.sigma_min
    rows = []
    try:
        for sampler, steps, sigma_min in settings:
            model.sigma_min = sigma_min
            runs = [solver.solve(rho, g, sampler=sampler, steps=steps, seed=s, return_info=True) for s in seeds]
            err = metrics.relative_l2(runs[0][0], phi)
            stack = np.stack([r[0] for r in runs])
            spread = metrics.seed_spread(stack, phi)
            rows.append({"sampler": sampler, "steps": steps, "sigma_min": sigma_min, "nfe": runs[0][1].nfe,
                         "rel_l2": float(err.mean()), "rel_l2_median": float(np.median(err)),
                         "seed_spread": float(spread.mean())})
            r = rows[-1]
            print(f"{sampler:>6} levels {steps:>2} sigma_min {sigma_min:<6g} NFE {r['nfe']:>2}: "
                  f"rel L2 {r['rel_l2']:.2e} (median {r['rel_l2_median']:.2e}), seed spread {r['seed_spread']:.1e}",
                  flush=True)
    finally:
        model.sigma_min = default_min
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="model checkpoint (default: the shipped model)")
    p.add_argument("--data", required=True, help="a valid split file")
    p.add_argument("--samples", type=int, default=128)
    p.add_argument("--sigma-min", default="0.002,0.05,0.3,1.0", help="comma list of sigma_min values")
    p.add_argument("--out", default=str(results_dir("sampling") / "sampling.md"))
    args = p.parse_args(argv)
    import pdediff
    from pdediff.data import load_arrays

    try:
        if args.samples < 1:
            raise ValueError(f"--samples={args.samples}; expected an integer >= 1")
        try:
            sigma_mins = [float(v) for v in args.sigma_min.split(",")]
        except ValueError:
            raise ValueError(f"--sigma-min={args.sigma_min!r}; expected a comma list of numbers") from None
        solver = pdediff.load_solver(args.checkpoint)
        bad = [v for v in sigma_mins if not 0 < v < solver.config.model.sigma_max]
        if bad:
            raise ValueError(f"--sigma-min has {bad}; expected values in (0, sigma_max = {solver.config.model.sigma_max:g})")
        arrays = load_arrays(args.data, limit=args.samples, dtype=np.float64)
    except ValueError as exc:
        p.exit(2, f"benchmarks.sampling: error: {exc}\n")
    settings = [(s, n, m) for m in sigma_mins for s, n in itertools.chain([("euler", 2)],
                                                                         (("heun", k) for k in (2, 3, 5, 10)))]
    rows = sweep(solver, arrays["rho"], arrays["g"], arrays["phi"], settings)
    lines = ["# Sampling sweep", "", f"Command: `python -m benchmarks.sampling {' '.join(argv or __import__('sys').argv[1:])}`",
             f"({len(arrays['rho'])} samples, seeds 0 and 1; two-seed spread: mean over seeds of "
             "||phi_seed - mean|| / ||phi||, i.e. ||phi_0 - phi_1|| / (2 ||phi||))", "",
             "| sampler | levels | sigma_min | NFE | rel L2 | median | seed spread |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['sampler']} | {r['steps']} | {r['sigma_min']:g} | {r['nfe']} | {r['rel_l2']:.2e} | "
              f"{r['rel_l2_median']:.2e} | {r['seed_spread']:.1e} |" for r in rows]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, "\n".join(lines) + "\n")
    record_command(Path(args.out).parent, "sampling", argv, [Path(args.out).name])
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
