"""Trust scores: does a score tell the training law's fields from fields it never saw?

    python -m benchmarks.trust --count 8 --steps 16 \\
        --energy runs/poisson32-energy/checkpoint.safetensors

Pairs (condition, solution) from each model's test split are scored beside pairs from families no
training law names, the solution always the reference solver's (so every pair is exact), and each
score's AUROC says how often a test pair outranks an unseen one (1: always, 0.5: chance):

* likelihood: ``Solver.log_likelihood`` of the joint models (``poisson-joint``: rho and phi given
  g; ``darcy-joint``: a and u), bits per dimension shown;
* the error estimate of the forward models (``poisson``, ``darcy``): ``solve(...,
  return_info=True).error_estimate``, the trust score users already get (lower = trusted), with
  the forward model's true error beside it;
* energy (``--energy``, an energy-parameterised forward model): ``Solver.energy`` of the pair at
  ``sigma`` (lower = trusted), on that model's grid.

Unseen families: single-node charges, line charges and short waves (Poisson, smooth Dirichlet
data), log-normal coefficients (Darcy; its training law thresholds a Gaussian field). Writes
``trust.md``, ``trust.json``, ``trust.png`` and the command (``COMMAND``) to ``--out`` (default
``benchmarks/results/trust/``).
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

FAMILIES = ("deltas", "lines", "waves")


def test_pairs(path: str, count: int, fields) -> dict[str, np.ndarray]:
    import h5py

    with h5py.File(path, "r") as f:
        return {k: np.asarray(f[k][:count], dtype=np.float64) for k in fields}


def poisson_pairs(n: int, count: int, data: str) -> dict[str, dict[str, np.ndarray]]:
    from pdediff.physics.problems import get_problem
    from pdediff.physics.sources import draw

    problem = get_problem("poisson")
    pairs = {"test": test_pairs(data, count, ("rho", "g", "phi"))}
    for family in FAMILIES:
        rho, g = draw(n, count, source=family, boundary="smooth", seed=7)
        pairs[family] = {"rho": rho, "g": g, "phi": problem.reference_solve(rho, g)}
    return pairs


def darcy_pairs(n: int, count: int, data: str) -> dict[str, dict[str, np.ndarray]]:
    from pdediff.physics.coefficients import get_coefficient
    from pdediff.physics.problems import get_problem
    from pdediff.physics.problems.base import Grid

    problem = get_problem("darcy")
    pairs = {"test": test_pairs(data, count, ("a", "f", "g", "u"))}
    a = get_coefficient("lognormal").sample(Grid(n), [np.random.default_rng([7, k]) for k in range(count)])
    f, g = np.ones_like(a), np.zeros_like(a)
    pairs["lognormal"] = {"a": a, "f": f, "g": g, "u": problem.reference_solve(a, f, g)}
    return pairs


def forward_scores(solver, pairs: dict) -> dict[str, dict[str, list[float]]]:
    """The forward model's error estimate and true error on every family."""
    out = {}
    problem = solver.problem
    for family, fields in pairs.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AccuracyWarning)
            phi, info = solver.solve(**{k: fields[k] for k in problem.condition_fields}, return_info=True)
        out[family] = {"estimate": [float(e) for e in info.error_estimate],
                       "error": [float(e) for e in metrics.relative_l2(phi, fields[problem.solution_field])]}
    return out


def likelihood_scores(solver, pairs: dict, steps: int, probes: int) -> dict[str, dict]:
    """log p (nats) and bits per dimension of every pair under a joint model."""
    from pdediff.learning.conditioning import unknown_nodes

    joint = solver.config.model.joint
    names = [*joint, *(k for k in solver.problem.condition_fields if k not in joint)]
    out = {}
    for family, fields in pairs.items():
        n = fields[joint[0]].shape[-1]
        dims = sum(int(unknown_nodes(solver.problem, k, n).sum()) for k in joint)
        t0 = time.perf_counter()
        logp = solver.log_likelihood(probes=probes, steps=steps, **{k: fields[k] for k in names if k in fields})
        out[family] = {"logp": [float(v) for v in logp], "bpd": [float(-v / (dims * np.log(2))) for v in logp],
                       "seconds_per_sample": (time.perf_counter() - t0) / len(logp)}
        print(f"  {family:10s} bits/dim {np.mean(out[family]['bpd']):8.3f}  "
              f"({out[family]['seconds_per_sample']:.1f} s a sample)", flush=True)
    return out


def energy_scores(solver, pairs: dict, sigma: float) -> dict[str, dict]:
    problem = solver.problem
    names = (*problem.condition_fields, problem.solution_field)
    return {family: {"energy": [float(v) for v in solver.energy(sigma=sigma, **{k: f[k] for k in names})]}
            for family, f in pairs.items()}


def aurocs(scores: dict, key: str, sign: float) -> dict[str, float]:
    """AUROC of ``sign * score`` (higher = trusted) of the test pairs against each unseen family
    and against all of them."""
    test = sign * np.asarray(scores["test"][key])
    unseen = {k: sign * np.asarray(v[key]) for k, v in scores.items() if k != "test"}
    out = {k: metrics.auroc(test, v) for k, v in unseen.items()}
    out["all"] = metrics.auroc(test, np.concatenate(list(unseen.values())))
    return out


def table(title: str, families, columns) -> list[str]:
    lines = [f"### {title}", "", "| family | " + " | ".join(c for c, _ in columns) + " |",
             "| --- |" + " --- |" * len(columns)]
    for family in families:
        lines.append(f"| {family} | " + " | ".join(fmt(family) for _, fmt in columns) + " |")
    return lines + [""]


def figure(path: Path, groups: dict) -> None:
    """One panel per score: its values by family, test pairs first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.6))
    for ax, (title, (values, label)) in zip(np.atleast_1d(axes), groups.items()):
        for i, (family, v) in enumerate(values.items()):
            jitter = np.random.default_rng(i).uniform(-0.15, 0.15, len(v))
            ax.scatter(i + jitter, v, s=14, color="tab:blue" if family == "test" else "tab:red")
        ax.set_xticks(range(len(values)), list(values), rotation=30)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(label)
        if label.startswith("error") or label.startswith("energy"):
            ax.set_yscale("log")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def main(argv=None) -> int:
    import pdediff

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=8, help="pairs per family")
    ap.add_argument("--steps", type=int, default=16, help="Runge-Kutta intervals of the likelihood ODE")
    ap.add_argument("--probes", type=int, default=1, help="Hutchinson probes")
    ap.add_argument("--poisson-data", default="datasets/poisson64/test.h5")
    ap.add_argument("--darcy-data", default="datasets/darcy64/test.h5")
    ap.add_argument("--energy", help="an energy-parameterised forward Poisson checkpoint (model.energy)")
    ap.add_argument("--energy-data", default="datasets/poisson32/test.h5")
    ap.add_argument("--sigma", type=float, default=0.05, help="noise level the energy is read at")
    ap.add_argument("--out", default=str(results_dir("trust")))
    args = ap.parse_args(argv)
    out = Path(args.out)
    results, lines = {}, ["# Trust scores: test pairs against unseen families", "",
                          f"`python -m benchmarks.trust --count {args.count} --steps {args.steps} --probes "
                          f"{args.probes}" + (f" --energy {args.energy}" if args.energy else "") + "`; "
                          "AUROC: how often a test pair outranks an unseen one (1: always, 0.5: chance).", ""]
    groups = {}
    for name, pairs_of, fields in (("poisson", poisson_pairs, args.poisson_data), ("darcy", darcy_pairs, args.darcy_data)):
        print(f"{name}: pairs", flush=True)
        pairs = pairs_of(64, args.count, fields)
        families = list(pairs)
        print(f"{name}-joint: log-likelihood", flush=True)
        joint = likelihood_scores(pdediff.load_solver(f"{name}-joint"), pairs, args.steps, args.probes)
        forward = forward_scores(pdediff.load_solver(name), pairs)
        results[name] = {"likelihood": joint, "forward": forward,
                         "auroc": {"likelihood": aurocs(joint, "logp", 1.0), "estimate": aurocs(forward, "estimate", -1.0)}}
        a = results[name]["auroc"]
        lines += table(f"{name}: {name}-joint's log-likelihood and {name}'s error estimate", families, [
            ("bits/dim (mean)", lambda f: f"{np.mean(joint[f]['bpd']):.3f}"),
            ("log p, nats (min / max)", lambda f: f"{min(joint[f]['logp']):.4g} / {max(joint[f]['logp']):.4g}"),
            ("AUROC likelihood", lambda f: "" if f == "test" else f"{a['likelihood'][f]:.3f}"),
            ("error estimate (median)", lambda f: f"{np.median(forward[f]['estimate']):.2e}"),
            ("AUROC estimate", lambda f: "" if f == "test" else f"{a['estimate'][f]:.3f}"),
            ("true error (median)", lambda f: f"{np.median(forward[f]['error']):.2e}"),
        ])
        lines += [f"All unseen families together: AUROC likelihood **{a['likelihood']['all']:.3f}**, error estimate "
                  f"**{a['estimate']['all']:.3f}**; {np.mean([v['seconds_per_sample'] for v in joint.values()]):.1f} s a "
                  f"sample for the likelihood ({args.steps} intervals, {4 * args.steps} network evaluations, "
                  f"{args.probes} probe).", ""]
        groups[f"{name}-joint log-likelihood"] = ({f: v["bpd"] for f, v in joint.items()}, "bits per dimension")
        groups[f"{name} error estimate"] = ({f: v["estimate"] for f, v in forward.items()}, "error estimate")
    if args.energy:
        solver = pdediff.load_solver(args.energy)
        n = solver.grid_size
        pairs = poisson_pairs(n, args.count, args.energy_data)
        energy = energy_scores(solver, pairs, args.sigma)
        forward = forward_scores(solver, pairs)
        a = {"energy": aurocs(energy, "energy", -1.0), "estimate": aurocs(forward, "estimate", -1.0)}
        results["energy"] = {"checkpoint": args.energy, "sigma": args.sigma, "n": n, "energy": energy,
                             "forward": forward, "auroc": a}
        lines += table(f"energy of {args.energy} (N = {n}, sigma = {args.sigma:g})", list(pairs), [
            ("energy (median)", lambda f: f"{np.median(energy[f]['energy']):.3g}"),
            ("AUROC energy", lambda f: "" if f == "test" else f"{a['energy'][f]:.3f}"),
            ("error estimate (median)", lambda f: f"{np.median(forward[f]['estimate']):.2e}"),
            ("AUROC estimate", lambda f: "" if f == "test" else f"{a['estimate'][f]:.3f}"),
            ("true error (median)", lambda f: f"{np.median(forward[f]['error']):.2e}"),
        ])
        lines += [f"All unseen families together: AUROC energy **{a['energy']['all']:.3f}**, error estimate "
                  f"**{a['estimate']['all']:.3f}**.", ""]
        groups["energy (N = %d)" % n] = ({f: v["energy"] for f, v in energy.items()}, "energy")
    write_report(out, "trust", lines, results, lambda path: figure(path, groups), "scores by family")
    record_command(out, "trust", argv, ["trust.md", "trust.json", "trust.png"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
