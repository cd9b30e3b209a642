"""Time-dependent data through a shipped card: the diffusion model's rollout error against steps,
beside the plain one-step regressor (the same network without diffusion) at equal training time.

Writes diffusion-reaction files in PDEBench's per-seed layout (``pdediff.data.examples``, real
FitzHugh-Nagumo solutions), reads them through ``datasets/cards/pdebench-diffusion-reaction.yaml``
with only ``files`` changed, trains both models for ``--seconds`` each (resumable: rerun the same
command), rolls out the test trajectories ``--steps`` steps, and reports relative L2 error per
step, correlation time and, on a periodic advection-diffusion set (The Well's layout), the error
on the 4 edge nodes against the interior.

    python -m benchmarks rollout [--seconds 420] [--steps 10] [--out benchmarks/results/rollout]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _dataset(layout: str, folder: Path, **sizes) -> Path:
    from pdediff.data.examples import EXAMPLES, example_card

    if (folder / EXAMPLES[layout][1]).is_file() and (folder / "card.yaml").is_file():
        return folder / "card.yaml"  # resumed: the same data
    return example_card(layout, folder, **sizes)


def _train_and_evaluate(card: Path, work: Path, seconds: float, steps: int, width: int, samples: int) -> dict:
    import pdediff
    from pdediff.data.external import read_fields
    from pdediff.tools.fit import fit

    test = read_fields(card, split="test")
    out = {}
    for mode in ("diffusion", "regression"):
        model = fit(card, work / f"{mode}.safetensors", resume=True, mode=mode, seconds=seconds, steps=10**6,
                    network_kwargs={"model_channels": width}, progress=False)
        solver = pdediff.load_solver(model)
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ev = solver.evaluate(test, steps=steps, samples=samples if mode == "diffusion" else 1)
        meta = solver.meta
        out[mode] = {"error": ev["error_mean"].values.tolist(), "correlation": ev["correlation"].values.tolist(),
                     "correlation_time": ev.attrs["correlation_time"], "band_error": ev.attrs["band_error"],
                     "interior_error": ev.attrs["interior_error"], "train_seconds": meta["elapsed"],
                     "train_steps": meta["step"], "pairs": meta["pairs"],
                     "rollout_seconds": time.perf_counter() - start, "warnings": len(caught),
                     "time": ev["time"].values.tolist()}
    out["trajectories"] = int(test.sizes["sample"])
    return out


def _figure(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pdediff.tools.plotting import save_figure

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.6), squeeze=False)
    for ax, (name, res) in zip(axes[0], results.items()):
        for mode, style in (("diffusion", "-o"), ("regression", "--s")):
            ax.plot(np.arange(len(res[mode]["error"])), np.asarray(res[mode]["error"]) * 100, style, ms=3,
                    label=f"{mode} ({res[mode]['train_steps']} steps, {res[mode]['train_seconds']:.0f} s)")
        ax.set(xlabel="rollout step", ylabel="relative L2 error (%)", title=name, yscale="log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks rollout", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=420.0, help="training time of each model")
    parser.add_argument("--steps", type=int, default=10, help="rollout steps")
    parser.add_argument("--width", type=int, default=16, help="U-Net width (model_channels)")
    parser.add_argument("--samples", type=int, default=4, help="diffusion draws per trajectory (spread)")
    parser.add_argument("--work", default="runs/rollout", help="data and checkpoints (resumable)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "rollout"))
    args = parser.parse_args(argv)
    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sets = {
        "diffusion-reaction (PDEBench layout)": ("pdebench-diffusion-reaction", {"count": 40, "times": 21},
                                                 args.seconds),
        "periodic advection-diffusion (The Well layout)": ("the-well", {"count": 16, "times": 21},
                                                           args.seconds),
    }
    results = {}
    for name, (layout, sizes, seconds) in sets.items():
        card = _dataset(layout, work / layout, **sizes)
        results[name] = _train_and_evaluate(card, work / layout, seconds, args.steps, args.width, args.samples)
        print(name, json.dumps({m: {k: v for k, v in r.items() if k not in ("correlation", "time")}
                                for m, r in results[name].items() if isinstance(r, dict)}), flush=True)
    from pdediff.data.atomic import write_text

    write_text(out / "results.json", json.dumps(results, indent=1) + "\n")
    lines = ["# Rollouts: diffusion model against the one-step regressor at equal training time", "",
             f"`python -m benchmarks rollout --seconds {args.seconds:g} --steps {args.steps} --width {args.width} "
             f"--samples {args.samples}` (2-core CPU). Relative L2 error over the test trajectories, mean of the "
             "state fields (solution fields only); the diffusion answer is the mean of its draws.", ""]
    for name, res in results.items():
        d, r = res["diffusion"], res["regression"]
        lines += [f"## {name}", "", f"{res['trajectories']} test trajectories; training pairs {d['pairs']}; "
                  f"diffusion {d['train_steps']} steps in {d['train_seconds']:.0f} s, regressor "
                  f"{r['train_steps']} steps in {r['train_seconds']:.0f} s.", "",
                  "| step | diffusion | regressor |", "|---:|---:|---:|"]
        for k in range(len(d["error"])):
            lines.append(f"| {k} | {d['error'][k] * 100:.2f} % | {r['error'][k] * 100:.2f} % |")
        lines += ["", f"Correlation time (correlation < 0.8): diffusion {d['correlation_time']:g}, regressor "
                  f"{r['correlation_time']:g}. Last step, 4 edge nodes / interior: diffusion "
                  f"{d['band_error'] * 100:.2f} % / {d['interior_error'] * 100:.2f} %, regressor "
                  f"{r['band_error'] * 100:.2f} % / {r['interior_error'] * 100:.2f} %. Rollout time: diffusion "
                  f"{d['rollout_seconds']:.1f} s, regressor {r['rollout_seconds']:.1f} s; AccuracyWarnings: "
                  f"{d['warnings']} / {r['warnings']}.", ""]
    write_text(out / "results.md", "\n".join(lines))
    _figure(results, out / "error_vs_steps.png")
    from benchmarks import record_command

    record_command(out, "rollout", argv, ["results.json", "results.md", "error_vs_steps.png"])
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
