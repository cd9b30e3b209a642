"""Fields from observations: every method on the same draws and masks, against the Gaussian baseline.

    python -m benchmarks.posterior --blocks main --count 16 --samples 8
    python -m benchmarks.posterior --blocks share,nfe --count 16
    python -m benchmarks.posterior --blocks darcy --count 16

Truths are fresh draws of each law at N = 64 (``pdediff.physics.sources.draw``'s unseen stream; Darcy's
coefficients from ``pdediff.physics.coefficients``), solved exactly. Observed nodes are drawn at random
per sample (seeded), the same for every method: phi among all nodes (its ring then observes g,
which is not given), rho and a among the nodes where they act, u among the interior (Darcy's g
is the law's zero). Errors are the relative L2 of the posterior mean over the whole field,
averaged over samples; calibration is the share of unobserved nodes within 1 and 2 posterior
standard deviations of the truth (a Gaussian: 68 and 95 %).

Blocks (each writes ``posterior-<block>.md`` and ``.json`` to ``--out``, default
``benchmarks/results/posterior/``, and its command to ``COMMAND`` there; ``main`` also a gallery):

* ``main``: Poisson at 3 % of phi on blobs, point charges, disks and rectangles, grf, with zero
  and smooth g (not given), the whole rho -> phi; methods gaussian and diffusion (``--former``:
  also the former default, dps+residual, on blobs with zero g);
* ``share``: Poisson blobs (zero g; gaussian and diffusion) and Darcy u -> a and a -> u (its
  default, gaussian) at 1, 3, 10, 30 % observed;
* ``nfe``: Poisson blobs at 3 % of phi against the sampler's steps and the number of draws;
* ``darcy``: Darcy 3 % of a -> u and 3 % of u -> a on the threshold law (with the share of nodes
  in the right phase);
* ``calibration``: the share of unobserved nodes within k posterior standard deviations, k = 0.5
  ... 3, against a Gaussian's (Poisson at 3 % of phi; blobs, point charges and grf pooled).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from benchmarks import record_command, results_dir
from pdediff.data.atomic import write_text
from pdediff.tools.plotting import save_figure


#: Poisson tasks of the main block: (source law, boundary law, observed field, share).
POISSON_TASKS = [
    ("blobs", "zero", "phi", 0.03), ("blobs", "smooth", "phi", 0.03),
    ("point_charges", "zero", "phi", 0.03), ("point_charges", "smooth", "phi", 0.03),
    ("disks_rects", "zero", "phi", 0.03), ("disks_rects", "smooth", "phi", 0.03),
    ("grf", "zero", "phi", 0.03), ("grf", "smooth", "phi", 0.03),
    ("blobs,grf", "smooth", "rho", None),
]


def rel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-sample relative L2 error of a against b (B, N, N)."""
    num = np.linalg.norm((a - b).reshape(len(b), -1), axis=1)
    return num / np.maximum(np.linalg.norm(b.reshape(len(b), -1), axis=1), 1e-300)


def mask_of(count: int, n: int, share: float | None, where: np.ndarray, seed: int, salt: int) -> np.ndarray:
    """(count, n, n) observed nodes: ``share`` of the nodes ``where`` (all of them for None)."""
    if share is None:
        return np.broadcast_to(where, (count, n, n)).copy()
    pool = np.flatnonzero(where.ravel())
    k = max(1, int(round(share * n * n)))
    out = np.zeros((count, n * n), dtype=bool)
    for b in range(count):
        out[b, np.random.default_rng([seed, salt, b]).choice(pool, min(k, len(pool)), replace=False)] = True
    return out.reshape(count, n, n)


def poisson_truth(law: str, boundary: str, count: int, seed: int, n: int = 64):
    from pdediff.physics.problems import Poisson
    from pdediff.physics.sources import draw

    rho, g = draw(n, count, source=law, boundary=boundary, seed=seed)
    return {"rho": rho, "g": g, "phi": Poisson().fast_solve(rho, g)}


def darcy_truth(count: int, seed: int, n: int = 64, law: str = "threshold"):
    from pdediff.physics.coefficients import get_coefficient
    from pdediff.physics.problems import Darcy
    from pdediff.physics.problems.base import Grid

    a = get_coefficient(law).sample(Grid(n), [np.random.default_rng([seed, 9_999, k, 2]) for k in range(count)])
    return {"a": a, "u": Darcy().reference_solve(a)}


def run_method(solver, method: str, observed: dict, samples: int, steps: int | None = None) -> tuple:
    """``(dataset, seconds, warnings)`` of one reconstruction."""
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = solver.reconstruct(samples=samples, method=method, steps=steps, **observed)
    return ds, time.perf_counter() - t0, sum(1 for w in caught if "AccuracyWarning" in type(w.message).__name__)


def score(ds, truth: dict, masks: dict, fields: tuple) -> dict:
    out = {}
    for k in fields:
        out[k] = float(rel(ds[k].values, truth[k]).mean())
        seen = masks.get(k, np.zeros_like(truth[k], dtype=bool))
        z = np.abs(ds[k].values - truth[k]) / np.maximum(ds[f"{k}_std"].values, 1e-300)
        free = ~seen
        out[f"{k}_within1"] = float(np.mean(z[free] <= 1))
        out[f"{k}_within2"] = float(np.mean(z[free] <= 2))
    out["heldout"] = float(ds.attrs["residual"]) if "residual" in ds.attrs else float("nan")
    out["pde_residual"] = float(np.max(ds["residual_rel"].values)) if "residual_rel" in ds else float("nan")
    out["nfe"] = int(ds.attrs.get("nfe", 0))
    return out


def poisson_case(solver, law, boundary, field, share, count, seed, samples, methods, steps=None):
    from pdediff.physics.problems.base import boundary_mask

    n = 64
    truth = poisson_truth(law, boundary, count, seed)
    where = np.ones((n, n), dtype=bool) if field == "phi" else ~boundary_mask(n)
    mask = mask_of(count, n, share, where, seed, 11)
    observed = {field: np.where(mask, truth[field], np.nan)}
    if share is None:
        observed["g"] = truth["g"]  # the whole-source task gives the data
    rows = {}
    for method in methods:
        ds, seconds, warned = run_method(solver, method, observed, samples, steps)
        rows[method] = {**score(ds, truth, {field: mask}, ("phi", "rho")), "seconds_per_sample": seconds / count,
                        "warned": warned}
        print(f"  {law}/{boundary} {field} {share} {method}: phi {rows[method]['phi']:.4f} rho "
              f"{rows[method]['rho']:.4f} ({seconds / count:.1f} s a sample)", flush=True)
    return rows, truth, observed


def block_main(args) -> dict:
    import pdediff

    solver = pdediff.load_solver("poisson-joint")
    results = {}
    gallery = None
    for law, boundary, field, share in POISSON_TASKS:
        methods = ["gaussian", "diffusion"] + (["dps+residual"] if args.former and (law, boundary) == ("blobs", "zero")
                                               else [])
        rows, truth, observed = poisson_case(solver, law, boundary, field, share, args.count, args.seed,
                                             args.samples, methods)
        results[f"{law}/{boundary}/{field}/{share}"] = rows
        if gallery is None:
            gallery = (truth, observed, {m: solver.reconstruct(samples=args.samples, method=m,
                                                               **{k: v[:1] for k, v in observed.items()})
                                         for m in ("gaussian", "diffusion")})
    return results, gallery


def block_share(args) -> dict:
    import pdediff

    results = {}
    solver = pdediff.load_solver("poisson-joint")
    for share in (0.01, 0.03, 0.1, 0.3):
        rows, _, _ = poisson_case(solver, "blobs", "zero", "phi", share, args.count, args.seed, args.samples,
                                  ["gaussian", "diffusion"])
        results[f"poisson blobs phi {share}"] = rows
    darcy = pdediff.load_solver("darcy-joint")
    for share in (0.01, 0.03, 0.1, 0.3):  # Darcy's default method (the diffusion's rows: block darcy)
        results[f"darcy u {share}"] = darcy_case(darcy, "u", share, args, methods=("gaussian",))
        results[f"darcy a {share}"] = darcy_case(darcy, "a", share, args, methods=("gaussian",))
    return results


def block_nfe(args) -> dict:
    import pdediff

    solver = pdediff.load_solver("poisson-joint")
    results = {}
    for steps, samples in ((8, 8), (16, 8), (32, 8), (64, 8), (8, 32), (16, 16), (16, 32)):
        rows, _, _ = poisson_case(solver, "blobs", "zero", "phi", 0.03, args.count, args.seed, samples,
                                  ["diffusion"], steps=steps)
        results[f"steps {steps}, {samples} draws"] = rows
    return results


def darcy_case(solver, field: str, share: float, args, methods=("gaussian", "diffusion")) -> dict:
    from pdediff.physics.problems.base import boundary_mask

    n = 64
    truth = darcy_truth(args.count, args.seed)
    where = np.ones((n, n), dtype=bool) if field == "a" else ~boundary_mask(n)
    mask = mask_of(args.count, n, share, where, args.seed, 13)
    observed = {field: np.where(mask, truth[field], np.nan)}
    rows = {}
    threshold = np.sqrt(3.0 * 12.0)  # the law's two values 3 and 12: the phase boundary in log a
    for method in methods:
        ds, seconds, warned = run_method(solver, method, observed, args.samples)
        row = {**score(ds, truth, {field: mask}, ("a", "u")), "seconds_per_sample": seconds / args.count,
               "warned": warned}
        row["phase"] = float(np.mean((ds["a"].values > threshold) == (truth["a"] > threshold)))
        rows[method] = row
        print(f"  darcy {field} {share} {method}: a {row['a']:.4f} u {row['u']:.4f} phase {row['phase']:.3f} "
              f"({seconds / args.count:.1f} s a sample)", flush=True)
    return rows


def block_darcy(args) -> dict:
    import pdediff

    solver = pdediff.load_solver("darcy-joint")
    return {f"darcy {field} 0.03": darcy_case(solver, field, 0.03, args) for field in ("a", "u")}


#: Multiples of the posterior standard deviation of the calibration curve.
KS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)


def block_calibration(args) -> dict:
    """The share of unobserved nodes within k posterior standard deviations of the truth, against
    a Gaussian's, per method (Poisson at 3 % of phi, three laws pooled)."""
    from scipy.stats import norm

    import pdediff
    from pdediff.physics.problems.base import boundary_mask

    solver = pdediff.load_solver("poisson-joint")
    n = 64
    pooled = {m: {"phi": [], "rho": []} for m in ("gaussian", "diffusion")}
    for law in ("blobs", "point_charges", "grf"):
        truth = poisson_truth(law, "zero", args.count, args.seed)
        mask = mask_of(args.count, n, 0.03, np.ones((n, n), dtype=bool), args.seed, 11)
        for method in pooled:
            ds, _, _ = run_method(solver, method, {"phi": np.where(mask, truth["phi"], np.nan)}, args.samples)
            for k in ("phi", "rho"):
                z = np.abs(ds[k].values - truth[k]) / np.maximum(ds[f"{k}_std"].values, 1e-300)
                free = ~mask if k == "phi" else ~boundary_mask(n)[None].repeat(args.count, 0)
                pooled[method][k].append(z[free])
    curve = {"k": list(KS), "gaussian law": [float(2 * norm.cdf(k) - 1) for k in KS]}
    for method, fields in pooled.items():
        for k, parts in fields.items():
            z = np.concatenate(parts)
            curve[f"{method} {k}"] = [float(np.mean(z <= c)) for c in KS]
    return curve


BLOCKS = {"main": block_main, "share": block_share, "nfe": block_nfe, "darcy": block_darcy,
          "calibration": block_calibration}


def table(results: dict) -> list[str]:
    lines = ["| task | method | fields (rel. L2 of the mean) | within 1 / 2 std | held-out RMS z | NFE | s a sample | warned |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for task, rows in results.items():
        for method, r in rows.items():
            fields = [k for k in ("phi", "rho", "a", "u") if k in r]
            err = ", ".join(f"{k} {100 * r[k]:.2f} %" for k in fields)
            if "phase" in r:
                err += f", phase {100 * r['phase']:.1f} %"
            cover = ", ".join(f"{k} {100 * r[k + '_within1']:.0f} / {100 * r[k + '_within2']:.0f} %" for k in fields)
            lines.append(f"| {task} | {method} | {err} | {cover} | {r['heldout']:.2f} | {r['nfe']} | "
                         f"{r['seconds_per_sample']:.1f} | {r['warned']} |")
    return lines


def calibration_table(curve: dict) -> list[str]:
    keys = [k for k in curve if k != "k"]
    lines = ["| within k std | " + " | ".join(f"{k:g}" for k in curve["k"]) + " |",
             "| --- |" + " --- |" * len(curve["k"])]
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(f"{100 * v:.0f} %" for v in curve[key]) + " |")
    return lines


def draw_calibration(path: Path, curve: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for key, values in curve.items():
        if key == "k":
            continue
        style = dict(color="black", lw=2, ls="--") if key == "gaussian law" else {}
        ax.plot(curve["k"], values, marker="o" if key != "gaussian law" else None, label=key, **style)
    ax.set_xlabel("k (posterior standard deviations)")
    ax.set_ylabel("share of unobserved nodes within k std")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def draw_gallery(path: Path, gallery) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    truth, observed, posts = gallery
    methods = list(posts)
    fig, axes = plt.subplots(2 * len(methods), 5, figsize=(14, 5.6 * len(methods)))
    for r, method in enumerate(methods):
        ds = posts[method]
        for f, name in enumerate(("phi", "rho")):
            row = axes[2 * r + f]
            t = truth[name][0]
            obs = observed.get(name)
            mean = np.asarray(ds[name].values).reshape(t.shape)
            std = np.asarray(ds[f"{name}_std"].values).reshape(t.shape)
            panels = [(t, f"{name} truth"),
                      (np.where(np.isfinite(obs[0]), obs[0], np.nan) if obs is not None else np.full_like(t, np.nan),
                       f"{name} observed"),
                      (mean, f"{method}: mean"), (std, f"{method}: std"), (np.abs(mean - t), f"{method}: |error|")]
            for ax, (img, title) in zip(row, panels):
                im = ax.imshow(img, origin="lower", cmap="viridis")
                ax.set_title(title, fontsize=9)
                ax.set_xticks([])
                ax.set_yticks([])
                fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    save_figure(fig, path, dpi=80)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--blocks", default="main", help=f"comma list of {list(BLOCKS)}")
    p.add_argument("--count", type=int, default=16, help="samples per task")
    p.add_argument("--samples", type=int, default=8, help="posterior draws per sample")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--former", action="store_true", help="main: also the former default, dps+residual, on blobs")
    p.add_argument("--out", default=str(results_dir("posterior")))
    args = p.parse_args(argv)
    blocks = [b.strip() for b in args.blocks.split(",")]
    bad = [b for b in blocks if b not in BLOCKS]
    if bad:
        p.exit(2, f"benchmarks.posterior: error: --blocks has {bad}; expected some of {list(BLOCKS)}\n")
    if args.count < 1 or args.samples < 1:
        p.exit(2, "benchmarks.posterior: error: --count and --samples must be >= 1\n")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.posterior " + " ".join(argv if argv is not None else sys.argv[1:])
    for block in blocks:
        print(f"## {block}", flush=True)
        t0 = time.perf_counter()
        results = BLOCKS[block](args)
        gallery = None
        if block == "main":
            results, gallery = results
        head = [f"# Observations: {block}", "", f"`{command}` ({args.count} samples a task, {args.samples} draws; "
                f"{time.perf_counter() - t0:.0f} s on this machine)", ""]
        if block == "calibration":
            lines = head + calibration_table(results) + ["", "![calibration](posterior-calibration.png)", ""]
            draw_calibration(out / "posterior-calibration.png", results)
        else:
            lines = head + table(results) + [""]
        if gallery is not None:
            lines += ["![truth, observations, mean, std and error of each method](posterior-gallery.png)", ""]
        write_text(out / f"posterior-{block}.md", "\n".join(lines))
        write_text(out / f"posterior-{block}.json", json.dumps({"command": command, "results": results}, indent=1))
        if gallery is not None:
            draw_gallery(out / "posterior-gallery.png", gallery)
        figures = ["posterior-calibration.png"] * (block == "calibration") + \
            ["posterior-gallery.png"] * (gallery is not None)
        record_command(out, "posterior", argv, [f"posterior-{block}.md", f"posterior-{block}.json", *figures])
        print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
