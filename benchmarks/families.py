"""Compare models across source families: mean / median relative L2 and two-seed spread.

    python -m benchmarks.families --checkpoints runs/default64/checkpoint.safetensors,shipped \\
        --data datasets/poisson64/test.h5

The cases are those of ``python -m benchmarks``, from ``pdediff.data.cases.CASES`` (a test split,
point charges and dipoles, disks and rectangles, rough random fields, a grid twice as fine),
each solved with every model's default sampling at seeds 0 and 1. ``shipped`` names the model
in ``pdediff/models``. Writes ``benchmarks/results/families/families.md`` (``--out``), with the
command in ``COMMAND`` beside it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks import record_command, results_dir
from benchmarks.surrogate import cases
from pdediff.physics import metrics
from pdediff.data.atomic import write_text
from pdediff.data.cases import grid_options



def solution_scale(solver, fields: dict, ref) -> np.ndarray:
    """RMS of phi in the network's units (per-sample scale s times the training RMS): about 1
    for the training data; small where the solution is small next to its source."""
    import torch

    from pdediff.learning.conditioning import sample_scale

    s = sample_scale(solver.problem, solver.norm, {k: torch.as_tensor(v) for k, v in fields.items()}).numpy()
    rms = np.sqrt(np.mean(ref**2, axis=(-2, -1)))
    return rms / np.where(s == 0, 1.0, np.abs(s)) / solver.norm.solution_rms


def family_errors(solver, case_list, seeds=(0, 1)) -> list[dict]:
    """One row per case: mean and median rel L2 of the first seed, mean two-seed spread."""
    rows = []
    for name, fields, ref in case_list:
        runs = np.stack([solver.solve(**fields, seed=s, **grid_options(solver)) for s in seeds])
        err = metrics.relative_l2(runs[0], ref)
        spread = metrics.seed_spread(runs, ref)
        rows.append({"case": name, "samples": len(ref), "rel_l2": float(err.mean()),
                     "phi_scale_p10": float(np.percentile(solution_scale(solver, fields, ref), 10)),
                     "rel_l2_median": float(np.median(err)), "seed_spread": float(spread.mean())})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", default="shipped", help="comma list of checkpoints ('shipped': the shipped model)")
    p.add_argument("--data", help="test split file (default: fresh samples of the training families)")
    p.add_argument("--samples", type=int, default=128, help="samples per case (a quarter on the finer grid)")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--out", default=str(results_dir("families") / "families.md"))
    args = p.parse_args(argv)
    import pdediff

    try:
        if args.samples < 1:
            raise ValueError(f"--samples={args.samples}; expected an integer >= 1")
        names = [c.strip() for c in args.checkpoints.split(",") if c.strip()]
        if not names:
            raise ValueError(f"--checkpoints={args.checkpoints!r}; expected a comma list of checkpoints")
        solvers = {name: pdediff.load_solver(None if name == "shipped" else name) for name in names}
        grids = {s.grid_size for s in solvers.values()}
        if len(grids) > 1:
            raise ValueError(f"--checkpoints mixes models trained on grids {sorted(grids)}; expected one grid")
        case_list = cases(next(iter(solvers.values())), args.data, args.samples, args.seed)
    except (ValueError, OSError) as exc:
        p.exit(2, f"benchmarks.families: error: {exc}\n")
    results = {}
    for name, solver in solvers.items():
        results[name] = family_errors(solver, case_list)
        for r in results[name]:
            print(f"{name}: {r['case']}: rel L2 {r['rel_l2']:.2e} (median {r['rel_l2_median']:.2e}), "
                  f"two-seed spread {r['seed_spread']:.1e}", flush=True)
    header = ("| case | samples | " + " | ".join(f"{n}: rel L2 (median), spread, phi scale" for n in names) + " |")
    lines = ["# Accuracy across source families", "",
             f"Command: `python -m benchmarks.families {' '.join(argv if argv is not None else __import__('sys').argv[1:])}`",
             "(each model's default sampling; rel L2 of seed 0 against SciPy's exact discrete solution; spread: "
             "mean over seeds 0 and 1 of ||phi_seed - mean|| / ||phi||; phi scale: 10th percentile over samples of the RMS of the exact phi in the "
             "model's normalised units, about 1 on its training data)", "", header,
             "| --- | ---: |" + " ---: |" * len(names)]
    for k, (case, *_) in enumerate(case_list):
        cells = [f"{results[n][k]['rel_l2']:.2e} ({results[n][k]['rel_l2_median']:.2e}), "
                 f"{results[n][k]['seed_spread']:.1e}, {results[n][k]['phi_scale_p10']:.2f}" for n in names]
        lines.append(f"| {case} | {results[names[0]][k]['samples']} | " + " | ".join(cells) + " |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, "\n".join(lines) + "\n")
    record_command(Path(args.out).parent, "families", argv, [Path(args.out).name])
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
