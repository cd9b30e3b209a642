"""The peer baseline for Darcy: neuraloperator's own FNO, a plain regressor a -> u, trained as its
users train it, on the same pairs as the diffusion model and for the same wall-clock budget.

    python -m benchmarks.fno_peer --data datasets/darcy64/train.h5 --budget-s 4268 --threads 1 \\
        --out runs/fno-peer --export benchmarks/results/fno_peer/fno-peer.safetensors
    python -m benchmarks fno_peer [options]   # the same, --export into benchmarks/results/fno_peer/

As in neuraloperator's Darcy example: ``FNO(n_modes=(16, 16), hidden_channels=32)`` with the
library's defaults otherwise (4 layers, grid positional embedding), AdamW (lr 1e-3, weight decay
1e-4), batch 20, the H1 loss for training and relative L2 for evaluation. Two choices are ours:
the learning rate follows a cosine over the wall-clock budget (the budget, not an epoch count, is
what is fixed), and a and u are normalised by scalar means and standard deviations, so that the
model can be applied on any grid (a per-node normaliser would tie it to N = 64).

Training checkpoints every minute of training time to ``OUT/state.safetensors`` and resumes from it
when run again with the same arguments; only training time counts against the budget. The
exported file holds the weights (safetensors, no pickle) and, as JSON, the architecture, the
normalisation, the steps and the training time; :class:`FNOPeer` loads it for the benchmark
(:mod:`benchmarks.problems` reads ``benchmarks/results/fno_peer/fno-peer.safetensors`` by default), and
the command that made it goes to ``COMMAND`` beside it.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import record_command
from pdediff.data.checkpoint import group, load_checkpoint, save_checkpoint
from pdediff.data import load_arrays

ARCH = {"n_modes": [16, 16], "in_channels": 1, "out_channels": 1, "hidden_channels": 32}
RECIPE = {"lr": 1e-3, "weight_decay": 1e-4, "batch_size": 20, "loss": "h1"}


def build(arch: dict) -> torch.nn.Module:
    from neuralop.models import FNO

    return FNO(**{**arch, "n_modes": tuple(arch["n_modes"])})


class FNOPeer:
    """An exported peer model: :meth:`predict` maps coefficients ``a`` (B, N, N) to ``u`` on any N."""

    def __init__(self, path):
        tensors, meta = load_checkpoint(path)
        if meta.get("kind") != "fno-peer":
            raise ValueError(f"fno={str(path)!r} is not an exported FNO peer (kind={meta.get('kind')!r}); "
                             "expected the output of python -m benchmarks.fno_peer --export")
        self.meta = meta
        self.model = build(meta["arch"])
        _load_weights(self.model, tensors)
        self.model.eval()
        self.norm = meta["normalisation"]

    @torch.inference_mode()
    def predict(self, a: np.ndarray, batch_size: int = 64) -> np.ndarray:
        a = np.asarray(a, dtype=np.float32)
        if a.ndim == 2:
            return self.predict(a[None], batch_size)[0]
        out = []
        for i in range(0, len(a), batch_size):
            x = (torch.from_numpy(a[i:i + batch_size]) - self.norm["a_mean"]) / self.norm["a_std"]
            y = self.model(x[:, None])[:, 0]
            out.append((y * self.norm["u_std"] + self.norm["u_mean"]).double().numpy())
        return np.concatenate(out)


def _weights(model) -> dict:
    """The model's tensors (neuralop keeps its constructor arguments as a non-tensor ``_metadata``
    entry; ``meta["arch"]`` carries them instead)."""
    return {f"model.{k}": v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}


def _load_weights(model, tensors: dict) -> None:
    missing, unexpected = model.load_state_dict(group(tensors, "model"), strict=False)
    if unexpected or any(k != "_metadata" for k in missing):
        raise ValueError(f"FNO weights do not fit the architecture: missing {missing}, unexpected {unexpected}")


def _state(model, opt, meta: dict) -> tuple[dict, dict]:
    tensors = _weights(model)
    state = opt.state_dict()
    for i, s in state["state"].items():
        for key, v in s.items():
            tensors[f"opt.{i}.{key}"] = torch.as_tensor(v)
    return tensors, meta


def _restore(opt, tensors: dict) -> None:
    state = opt.state_dict()
    per = {}
    for k, v in group(tensors, "opt").items():
        i, key = k.split(".", 1)
        per.setdefault(int(i), {})[key] = v
    state["state"] = per
    opt.load_state_dict(state)


def train(data, out, budget_s: float, *, seed: int = 0, threads: int | None = None,
          progress: bool = True) -> Path:
    """Train for ``budget_s`` seconds of training time (resuming ``out/state.safetensors``); returns it."""
    from neuralop.losses import H1Loss
    from tqdm import tqdm

    if not budget_s > 0:
        raise ValueError(f"budget_s={budget_s!r} is invalid; expected a number of seconds > 0")
    if threads:
        torch.set_num_threads(threads)
    out = Path(out)
    pairs = load_arrays(data, ["a", "u"])
    a, u = torch.from_numpy(pairs["a"]), torch.from_numpy(pairs["u"])
    norm = {"a_mean": float(a.mean()), "a_std": float(a.std()), "u_mean": float(u.mean()), "u_std": float(u.std())}
    x, y = ((a - norm["a_mean"]) / norm["a_std"])[:, None], ((u - norm["u_mean"]) / norm["u_std"])[:, None]

    torch.manual_seed(seed)
    model = build(ARCH)
    opt = torch.optim.AdamW(model.parameters(), lr=RECIPE["lr"], weight_decay=RECIPE["weight_decay"])
    meta = {"kind": "fno-peer", "arch": ARCH, "recipe": RECIPE, "normalisation": norm, "data": str(data),
            "budget_s": budget_s, "seed": seed, "threads": torch.get_num_threads(), "step": 0, "elapsed_s": 0.0}
    state_path = out / "state.safetensors"
    if state_path.is_file():
        tensors, saved = load_checkpoint(state_path)
        _load_weights(model, tensors)
        _restore(opt, tensors)
        meta.update(step=saved["step"], elapsed_s=saved["elapsed_s"])
    loss_fn = H1Loss(d=2)
    batch, count = RECIPE["batch_size"], len(x)
    per_epoch = count // batch
    bar = tqdm(total=int(budget_s), initial=int(meta["elapsed_s"]), unit="s", desc="fno-peer", disable=not progress)
    last_save = meta["elapsed_s"]
    model.train()
    while meta["elapsed_s"] < budget_s:
        t0 = time.perf_counter()
        epoch, pos = divmod(meta["step"], per_epoch)
        order = np.random.default_rng([seed, epoch]).permutation(count)
        idx = torch.from_numpy(order[pos * batch:(pos + 1) * batch])
        for g in opt.param_groups:  # cosine over the wall-clock budget
            g["lr"] = RECIPE["lr"] * 0.5 * (1 + math.cos(math.pi * min(meta["elapsed_s"] / budget_s, 1.0)))
        loss = loss_fn(model(x[idx]), y[idx]) / len(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        meta["step"] += 1
        dt = time.perf_counter() - t0
        meta["elapsed_s"] += dt
        bar.update(int(meta["elapsed_s"]) - bar.n)
        bar.set_postfix(step=meta["step"], loss=f"{float(loss.detach()):.4f}", refresh=False)
        if meta["elapsed_s"] - last_save > 60 or meta["elapsed_s"] >= budget_s:
            save_checkpoint(state_path, *_state(model, opt, meta))
            last_save = meta["elapsed_s"]
    bar.close()
    return state_path


def export(state_path, dst) -> Path:
    """Keep the weights (float32) and the metadata of a training state."""
    tensors, meta = load_checkpoint(state_path)
    return save_checkpoint(dst, {f"model.{k}": v for k, v in group(tensors, "model").items()}, meta)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="datasets/darcy64/train.h5")
    p.add_argument("--budget-s", type=float, default=4268.0,
                   help="training time in seconds (default: the shipped Darcy model's, configs/darcy64.yaml)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/fno-peer")
    p.add_argument("--export", default=None, help="write the weights here when the budget is spent")
    args = p.parse_args(argv)
    try:
        state = train(args.data, args.out, args.budget_s, threads=args.threads)
        if args.export:
            path = export(state, args.export)
            record_command(path.parent, "fno_peer", argv, [path.name])
            print(f"wrote {path}")
    except ValueError as exc:
        p.exit(2, f"{p.prog}: error: {exc}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
