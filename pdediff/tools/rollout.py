"""Roll out a data-driven model on a card's data and plot it: ``python -m pdediff.tools.rollout MODEL CARD``.

Prints the relative L2 error per step (the model's output fields only), the correlation time
and the edge-band against interior error over the card's ``--split``, and writes a figure of
one trajectory (truth above, the rollout below, for each state at a few times) beside the error
curve. For a steady model it solves the split and plots one sample.

    python -m pdediff.tools.rollout model.safetensors card.yaml --steps 10 --out rollout.png
"""

from __future__ import annotations

import argparse
import sys
import warnings

import numpy as np


def plot_rollout(run, truth, evaluation, path, columns: int = 5) -> None:
    """Truth and rollout of each state at ``columns`` times, and the error against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pdediff.tools.plotting import save_figure

    states = [k for k in run.data_vars if k in truth]
    times = np.unique(np.linspace(0, run.sizes["time"] - 1, columns).round().astype(int))
    rows = 2 * len(states)
    fig, axes = plt.subplots(rows, len(times) + 1, figsize=(2.2 * (len(times) + 1), 2.1 * rows), squeeze=False)
    for r, s in enumerate(states):
        lo, hi = float(np.min(truth[s])), float(np.max(truth[s]))
        for c, k in enumerate(times):
            for row, (label, field) in enumerate((("truth", truth[s][k]), ("rollout", run[s].values[0, k]))):
                ax = axes[2 * r + row, c]
                ax.imshow(field, origin="lower", vmin=lo, vmax=hi, cmap="RdBu_r")
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0 and row == 0:
                    ax.set_title(f"t = {float(run['time'][k]):.3g}", fontsize=9)
                if c == 0:
                    ax.set_ylabel(f"{s} {label}", fontsize=9)
    gs = axes[0, -1].get_gridspec()
    for ax in axes[:, -1]:
        ax.remove()
    curve = fig.add_subplot(gs[:, -1])
    for s in evaluation["field"].values:
        curve.plot(evaluation["step"], evaluation["error"].sel(field=s) * 100, "-o", ms=3, label=str(s))
    curve.set(xlabel="step", ylabel="relative L2 error (%)", title="error (split mean)")
    curve.grid(alpha=0.3)
    curve.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def plot_solve(answer, data, path) -> None:
    """Truth, answer and error of each solution field of one sample."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pdediff.tools.plotting import save_figure

    fields = [k for k in answer.data_vars if k != "spread"]
    fig, axes = plt.subplots(len(fields), 3, figsize=(9, 2.8 * len(fields)), squeeze=False)
    for r, s in enumerate(fields):
        truth, got = np.asarray(data[s].values[0]), answer[s].values[0]
        for c, (label, field) in enumerate((("truth", truth), ("answer", got), ("error", got - truth))):
            im = axes[r, c].imshow(field, origin="lower", cmap="RdBu_r")
            axes[r, c].set_title(f"{s} {label}", fontsize=9)
            fig.colorbar(im, ax=axes[r, c], shrink=0.8)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pdediff.tools.rollout", description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a checkpoint written by python -m pdediff.tools.fit")
    parser.add_argument("card", help="the dataset card whose data to roll out on")
    parser.add_argument("--split", default="test", help="the card's split (default test)")
    parser.add_argument("--steps", type=int, default=None, help="rollout steps (default: as many as stored)")
    parser.add_argument("--samples", type=int, default=1, help="draws per trajectory (their spread warns on drift)")
    parser.add_argument("--sample", type=int, default=0, help="the trajectory (or sample) plotted")
    parser.add_argument("--out", default="rollout.png", help="the figure to write")
    args = parser.parse_args(argv)
    import pdediff
    from pdediff.data.external import read_fields
    from pdediff.solver.fields import FieldSolver

    try:
        solver = pdediff.load_solver(args.model)
        if not isinstance(solver, FieldSolver):
            raise ValueError(f"model={args.model!r} is a model of a built-in problem; expected one written by "
                             "python -m pdediff.tools.fit")
        data = read_fields(args.card, split=args.split)
        if not 0 <= args.sample < data.sizes["sample"]:
            raise ValueError(f"--sample={args.sample} is out of range; the split holds {data.sizes['sample']}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pdediff.AccuracyWarning)
            evaluation = solver.evaluate(data, steps=args.steps, samples=args.samples)
        one = data.isel(sample=[args.sample])
        if solver.task.dynamic:
            t = solver.task
            run = solver.rollout(one.isel(time=slice(0, t.history)), steps=int(evaluation["step"][-1]),
                                 samples=args.samples)
            idx = t.history - 1 + np.arange(run.sizes["time"]) * t.step
            plot_rollout(run, {s: np.asarray(one[s].values[0, idx]) for s in t.outputs}, evaluation, args.out)
        else:
            plot_solve(solver.solve({k: one[k].values for k in solver.task.conditions}), one, args.out)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    err = evaluation["error_mean"].values
    if solver.task.dynamic:
        print("step  " + "  ".join(f"{k:>6d}" for k in evaluation["step"].values))
        print("error " + "  ".join(f"{100 * e:5.2f}%" for e in err))
        print(f"correlation time {evaluation.attrs['correlation_time']:g}; ", end="")
    else:
        print(f"error {100 * float(err):.2f} % (mean over {data.sizes['sample']} samples); ", end="")
    print(f"edge band {100 * evaluation.attrs['band_error']:.2f} %, interior {100 * evaluation.attrs['interior_error']:.2f} %")
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
