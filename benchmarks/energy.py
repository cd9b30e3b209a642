"""The energy-parameterised score against the direct one: accuracy and cost, measured in one run.

    python -m benchmarks.energy --direct runs/poisson32-cfg/checkpoint.safetensors \\
        --energy runs/poisson32-energy/checkpoint.safetensors --data datasets/poisson32/test.h5

The two checkpoints must differ only in ``model.energy`` (configs/experiments/poisson32-cfg.yaml and
configs/experiments/poisson32-energy.yaml: same data, network, steps and seed). Prints, for each: the
relative L2 of phi on the first ``--count`` test pairs at the model's own sampling and with Heun
at 10 levels, milliseconds a solve, and milliseconds a training step (loss and backward on one
batch of the config's size, fresh weights, the median of ``--repeats``), and the median error on
sources no training mixture names (single-node charges, line charges, short waves); then the
ratios.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np

from pdediff import AccuracyWarning
from pdediff.physics import metrics


def accuracy_and_time(path: str, data: dict) -> dict:
    import pdediff

    solver = pdediff.load_solver(path)
    out = {}
    for label, options in (("own", {}), ("heun10", {"sampler": "heun", "steps": 10})):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AccuracyWarning)
            solver.solve(data["rho"][:2], data["g"][:2], estimate=False, **options)  # warm-up
            t0 = time.perf_counter()
            phi = solver.solve(data["rho"], data["g"], estimate=False, **options)
            seconds = time.perf_counter() - t0
        out[label] = {"rel_l2": float(np.mean(metrics.relative_l2(phi, data["phi"]))),
                      "ms_per_solve": 1e3 * seconds / len(phi)}
    return out


def unseen_errors(path: str, count: int, data: str) -> dict[str, float]:
    """Median relative L2 of phi on sources no training mixture names (benchmarks.trust's
    families, smooth Dirichlet data), at the model's own sampling."""
    import pdediff
    from benchmarks.trust import poisson_pairs

    solver = pdediff.load_solver(path)
    out = {}
    for family, f in poisson_pairs(solver.grid_size, count, data).items():
        if family != "test":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", AccuracyWarning)
                phi = solver.solve(f["rho"], f["g"], estimate=False)
            out[family] = float(np.median(metrics.relative_l2(phi, f["phi"])))
    return out


def step_time(path: str, repeats: int) -> float:
    """Median milliseconds of one training step (loss, backward) at the run's batch size."""
    import torch

    from pdediff.learning.model import load_denoiser
    from pdediff.tools.training import build_loss

    loaded = load_denoiser(path)
    model = loaded.denoiser.train()
    loss_fn = build_loss(loaded.config, float(model.sigma_data))
    b, n = loaded.config.train.batch_size, loaded.card["n"]
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(b, 1, n, n, generator=gen)
    cond = torch.randn(b, len(loaded.problem.condition_fields) + 1, n, n, generator=gen)
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        model.zero_grad(set_to_none=True)
        loss_fn(model, x0, cond, generator=gen).mean().backward()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times[1:]))


def main(argv=None) -> int:
    import h5py

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--direct", required=True)
    ap.add_argument("--energy", required=True)
    ap.add_argument("--data", default="datasets/poisson32/test.h5")
    ap.add_argument("--count", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args(argv)
    with h5py.File(args.data, "r") as f:
        data = {k: np.asarray(f[k][: args.count], dtype=np.float64) for k in ("rho", "g", "phi")}
    rows = {}
    for label, path in (("direct", args.direct), ("energy", args.energy)):
        rows[label] = {**accuracy_and_time(path, data), "ms_per_step": step_time(path, args.repeats),
                       "unseen": unseen_errors(path, args.count, args.data)}
        r = rows[label]
        print(f"{label:7s} phi {100 * r['own']['rel_l2']:.2f} % ({r['own']['ms_per_solve']:.1f} ms a solve), "
              f"Heun 10: {100 * r['heun10']['rel_l2']:.2f} % ({r['heun10']['ms_per_solve']:.1f} ms); "
              f"training step {r['ms_per_step']:.0f} ms; unseen sources (median): "
              + ", ".join(f"{k} {100 * v:.1f} %" for k, v in r["unseen"].items()), flush=True)
    d, e = rows["direct"], rows["energy"]
    print(f"energy / direct: error {e['own']['rel_l2'] / d['own']['rel_l2']:.2f}x (Heun 10: "
          f"{e['heun10']['rel_l2'] / d['heun10']['rel_l2']:.2f}x), solve time {e['own']['ms_per_solve'] / d['own']['ms_per_solve']:.2f}x "
          f"(Heun 10: {e['heun10']['ms_per_solve'] / d['heun10']['ms_per_solve']:.2f}x), training step "
          f"{e['ms_per_step'] / d['ms_per_step']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
