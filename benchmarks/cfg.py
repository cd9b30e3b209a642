"""Classifier-free guidance: error against the guidance weight w, forward and from observations.

    python -m benchmarks.cfg --forward runs/poisson32-cfg/checkpoint.safetensors \\
        --energy runs/poisson32-energy/checkpoint.safetensors \\
        --joint runs/poisson32-joint-obs/checkpoint.safetensors --data datasets/poisson32/test.h5

D_w = (1 + w) D(x | c) - w D(x | null) with the models trained with a null condition
(``model.cond_dropout``). Forward task: ``solve(rho, g, cfg=w)`` on the first ``--count`` test
pairs, relative L2 of phi (the models' own sampling). From observations: ``reconstruct(cfg=w)``
of the observation-conditioned joint model (``method="none"``), given the whole rho or 3 % of phi's
interior nodes, ``--samples`` draws; relative L2 of the posterior means over the nodes where each
field is unknown (the interior) and the share of unobserved ones within 2 std. The energy model doubles as the direct model's twin: accuracy and seconds
per solve at w = 0 (energy against direct). Writes ``cfg.md``, ``cfg.json``, ``cfg.png`` and the command
(``COMMAND``) to ``--out`` (default ``benchmarks/results/cfg/``).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from pdediff import AccuracyWarning
from pdediff.physics import metrics
from pdediff.tools.plotting import save_figure
from benchmarks import record_command, results_dir, write_report

WEIGHTS = (-0.5, 0.0, 0.5, 1.0, 2.0, 4.0)


def load(path: str, count: int) -> dict[str, np.ndarray]:
    import h5py

    with h5py.File(path, "r") as f:
        return {k: np.asarray(f[k][:count], dtype=np.float64) for k in ("rho", "g", "phi")}


def forward(path: str, data: dict, weights) -> dict:
    import pdediff

    solver = pdediff.load_solver(path)
    out = {}
    for w in weights:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AccuracyWarning)
            phi = solver.solve(data["rho"], data["g"], cfg=w, estimate=False)
        seconds = time.perf_counter() - t0
        err = metrics.relative_l2(phi, data["phi"])
        out[w] = {"phi": float(np.mean(err)), "seconds_per_sample": seconds / len(phi)}
        print(f"  {path} w={w:g}: phi {100 * out[w]['phi']:.2f} % ({out[w]['seconds_per_sample'] * 1e3:.1f} ms a sample)",
              flush=True)
    return out


def observed(path: str, data: dict, weights, samples: int) -> dict:
    import pdediff
    from benchmarks.observe import observation
    from pdediff.learning.conditioning import unknown_nodes

    solver = pdediff.load_solver(path)
    n = data["phi"].shape[-1]
    inside = unknown_nodes(solver.problem, "phi", n)
    tasks = {"whole rho": dict(rho=data["rho"], g=data["g"]),
             "3 % of phi": dict(phi=observation(data["phi"], 0.03, 0, inside), g=data["g"])}
    out = {}
    for task, given in tasks.items():
        out[task] = {}
        for w in weights:
            ds = solver.reconstruct(samples=samples, method="none", cfg=w, **given)
            row = {}
            for k in ("rho", "phi"):
                if k == "rho" and "rho" in given:
                    continue  # given whole: returned exactly
                where = unknown_nodes(solver.problem, k, n)  # rho's ring is no unknown (zero)
                mean, truth = ds[k].values[:, where], data[k][:, where]
                err = np.linalg.norm(mean - truth, axis=1) / np.linalg.norm(truth, axis=1)
                row[k] = float(np.mean(err))
                row[f"{k}_median"] = float(np.median(err))  # the mean is led by samples of small norm
                z = np.abs(mean - truth) / np.maximum(ds[f"{k}_std"].values[:, where], 1e-300)
                seen = ds[f"{k}_observed"].values[:, where] if f"{k}_observed" in ds else np.zeros_like(z, bool)
                row[f"{k}_within_2std"] = float(np.mean(z[~seen] <= 2))
            out[task][w] = row
            print(f"  {task} w={w:g}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()), flush=True)
    return out


def figure(path: Path, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, rows in results.get("forward", {}).items():
        ws = sorted(rows, key=float)
        ax.plot([float(w) for w in ws], [100 * rows[w]["phi"] for w in ws], "o-", label=f"forward phi ({label})")
    for task, rows in results.get("observed", {}).items():
        ws = sorted(rows, key=float)
        for k in ("phi", "rho"):
            if k in rows[ws[0]]:  # the median: the mean is led by samples of small norm
                ax.plot([float(w) for w in ws], [100 * rows[w][f"{k}_median"] for w in ws], "s--",
                        label=f"{task}: {k} (median)")
    ax.set_xlabel("guidance weight w")
    ax.set_ylabel("relative L2 error [%]")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--forward", help="a forward checkpoint trained with model.cond_dropout")
    ap.add_argument("--energy", help="its energy-parameterised twin (model.energy)")
    ap.add_argument("--joint", help="an observation-conditioned joint checkpoint with model.cond_dropout")
    ap.add_argument("--data", default="datasets/poisson32/test.h5")
    ap.add_argument("--count", type=int, default=64, help="test pairs (forward)")
    ap.add_argument("--joint-count", type=int, default=16, help="test pairs (from observations)")
    ap.add_argument("--samples", type=int, default=4, help="posterior draws (from observations)")
    ap.add_argument("--weights", default=",".join(f"{w:g}" for w in WEIGHTS))
    ap.add_argument("--out", default=str(results_dir("cfg")))
    args = ap.parse_args(argv)
    weights = [float(w) for w in args.weights.split(",")]
    results = {"forward": {}, "observed": {}}
    data = load(args.data, max(args.count, args.joint_count))
    first = {k: v[: args.count] for k, v in data.items()}
    for label, path in (("direct", args.forward), ("energy", args.energy)):
        if path:
            results["forward"][label] = forward(path, first, weights)
    if args.joint:
        results["observed"] = observed(args.joint, {k: v[: args.joint_count] for k, v in data.items()}, weights,
                                       args.samples)
    lines = ["# Classifier-free guidance", "", "`python -m benchmarks.cfg " + " ".join(argv or sys.argv[1:]) + "`", ""]
    for label, rows in results["forward"].items():
        lines += [f"Forward ({label}, {args.count} test pairs): relative L2 of phi by w", "",
                  "| w | " + " | ".join(f"{w:g}" for w in weights) + " |", "| --- |" + " --- |" * len(weights),
                  "| phi | " + " | ".join(f"{100 * rows[w]['phi']:.2f} %" for w in weights) + " |",
                  "| ms a sample | " + " | ".join(f"{1e3 * rows[w]['seconds_per_sample']:.1f}" for w in weights) + " |", ""]
    for task, rows in results["observed"].items():
        keys = list(rows[weights[0]])
        lines += [f"From observations ({task}, {args.joint_count} test pairs, {args.samples} draws)", "",
                  "| w | " + " | ".join(f"{w:g}" for w in weights) + " |", "| --- |" + " --- |" * len(weights)]
        for k in keys:
            pct = "within" in k
            lines.append(f"| {k} | " + " | ".join(f"{100 * rows[w][k]:.{0 if pct else 1}f} %" for w in weights) + " |")
        lines.append("")
    write_report(args.out, "cfg", lines, results, lambda path: figure(path, results), "error against w")
    record_command(args.out, "cfg", argv, ["cfg.md", "cfg.json", "cfg.png"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
