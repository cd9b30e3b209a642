"""``make demo``: solve new charge distributions with the shipped model and compare with SciPy.

Prints a table of relative L2 error, maximum error, boundary error, PDE residual and wall time
for pdediff (probability-flow ODE, Heun) with and without conjugate-gradient polish, against
SciPy's sparse direct solver, and writes a picture of rho / phi / reference / error.

Run ``python -m pdediff.demo --help`` for the options.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from pdediff import metrics
from pdediff.sources import draw

CASES = (  # (label, source family, boundary family); none of these samples was seen in training
    ("blobs, g = 0", "blobs", "zero"),
    ("grf, smooth g", "grf", "smooth"),
    ("point charges/dipoles (unseen)", "point_dipoles", "zero"),
    ("disks/rectangles (unseen)", "disks_rects", "smooth"),
)


def make_cases(n: int, per_case: int, seed: int):
    """Fresh fields for each case, from a seed stream that the generator's splits never use."""
    return [(label, *draw(n, per_case, source=source, boundary=boundary, seed=seed, stream=9_999 + c))
            for c, (label, source, boundary) in enumerate(CASES)]


def gallery(path, rows, title: str) -> None:
    """One row per case: rho, pdediff phi, reference phi, error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 4, figsize=(14, 3.2 * len(rows)), constrained_layout=True, squeeze=False)
    for r, (label, rho, phi, ref) in enumerate(rows):
        panels = [(rho, "rho", "RdBu_r"), (phi, "phi, pdediff", "viridis"), (ref, "phi, SciPy", "viridis"),
                  (phi - ref, "error", "RdBu_r")]
        for ax, (a, name, cmap) in zip(axes[r], panels):
            sym = cmap == "RdBu_r"
            vmax = float(np.abs(a).max()) or 1.0
            im = ax.imshow(a, origin="lower", extent=(0, 1, 0, 1), cmap=cmap,
                           vmin=-vmax if sym else None, vmax=vmax if sym else None)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(name if r else name, fontsize=10)
            fig.colorbar(im, ax=ax, shrink=0.8, format="%.1e" if name == "error" else None)
        axes[r, 0].set_ylabel(label, fontsize=10)
    fig.suptitle(title)
    tmp = Path(str(path) + ".partial.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)


def run(checkpoint=None, *, per_case: int = 4, steps: int = 10, polish: int = 20, seed: int = 2026,
        png: str = "demo.png") -> list[dict]:
    """Solve the demo cases; print the comparison table; write the gallery. Returns the rows."""
    import pdediff

    solver = pdediff.load_solver(checkpoint)
    problem = solver.problem
    n = solver.grid_size or 64
    print(f"model: {checkpoint or 'shipped default'} ({solver.config.model.network}, trained at N = {n}); "
          f"{per_case} new samples per case, Heun with {steps} noise levels")
    rows, pictures = [], []
    header = f"{'case':<32}{'method':<22}{'rel L2':>10}{'max err':>10}{'bdry err':>10}{'residual':>10}{'ms/sample':>11}"
    print(header)
    print("-" * len(header))
    for label, rho, g in make_cases(n, per_case, seed):
        t0 = time.perf_counter()
        ref = problem.reference_solve(rho, g)  # SciPy sparse LU (factorisation cached per N)
        t_ref = time.perf_counter() - t0
        fields = {"rho": rho, "g": g}
        results = [("SciPy spsolve (LU)", ref, t_ref)]
        phi, info = solver.solve(rho, g, steps=steps, return_info=True)
        results.append((f"pdediff ({info.nfe} NFE)", phi, info.seconds))
        if polish:
            phi_p, info_p = solver.solve(rho, g, steps=steps, polish=polish, return_info=True)
            results.append((f"pdediff + {polish} CG", phi_p, info_p.seconds))
        for method, p, secs in results:
            rep = metrics.report(problem, p, fields, ref)
            row = {"case": label, "method": method, **{k: float(np.mean(v)) for k, v in rep.items()},
                   "ms_per_sample": 1e3 * secs / len(rho)}
            rows.append(row)
            print(f"{label:<32}{method:<22}{row['rel_l2']:>10.2e}{row['max_err']:>10.2e}"
                  f"{row['boundary_err']:>10.2e}{row['residual']:>10.2e}{row['ms_per_sample']:>11.2f}")
        pictures.append((label, rho[0], phi[0], ref[0]))
    gallery(png, pictures, f"pdediff vs SciPy, N = {n}, Heun {2 * steps - 1} NFE (no polish)")
    print(f"picture: {png}")
    return rows


def generate_only(out: str = "datasets/demo64") -> None:
    """Without a trained model: generate a small dataset and say what was written."""
    from pdediff.generate import generate_dataset, make_card

    print("no shipped model yet: generating a small dataset instead")
    card = make_card("poisson", 64, 1000, source="blobs,grf", boundary="zero,smooth", seed=0)
    t0 = time.perf_counter()
    results = generate_dataset(out, card, overwrite=True)
    secs = time.perf_counter() - t0
    for split, res in results.items():
        print(f"  {split}: {res.count} samples in {res.path}")
    print(f"wrote {sum(card.counts.values())} samples at N = 64 to {out}/ in {secs:.2f} s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="model checkpoint (default: the shipped model)")
    p.add_argument("--per-case", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--polish", type=int, default=20)
    p.add_argument("--png", default="demo.png")
    args = p.parse_args(argv)
    try:
        from pdediff.solver import DEFAULT_MODEL

        if args.checkpoint is None and not DEFAULT_MODEL.is_file():
            generate_only()
            return 0
        run(args.checkpoint, per_case=args.per_case, steps=args.steps, polish=args.polish, png=args.png)
    except ValueError as exc:
        p.exit(2, f"demo: error: {exc}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
