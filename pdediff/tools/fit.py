"""Train a data-driven model on any dataset card: ``python -m pdediff.tools.fit CARD --out MODEL``.

For cards that no built-in problem describes (time-dependent data, several solution fields,
rectangular or periodic grids, other people's layouts; see :mod:`pdediff.data.external`). The
model is a network of :data:`pdediff.learning.networks.NETWORKS` over the card's fields
(:class:`pdediff.learning.fields.FieldTask`), trained as a conditional diffusion model in
PDE-Refiner's form (the default, ``--mode diffusion``: a one-step prediction and a few
refinements at small noise), as a plain EDM diffusion model (``--mode edm``), or as the plain
one-step regressor of the same network (``--mode regression``), so that they can be compared at
equal training time (``--seconds``).

The checkpoint is one safetensors file written atomically every ``--save-every`` steps and at the
end; ``--resume`` continues from it exactly (weights, EMA, optimiser moments, random state, step).
Load it with ``pdediff.load_solver(MODEL)``: a :class:`pdediff.solver.fields.FieldSolver`.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pdediff.data.checkpoint import group, load_checkpoint, prefixed, save_checkpoint
from pdediff.learning.fields import MODES, FieldTask, build_field_network, regress
from pdediff.learning.losses import EDMLoss, RefinerLoss
from pdediff.learning.networks import NETWORKS
from pdediff.maths.denoiser import Denoiser
from pdediff.maths.samplers import get_sigmas_refiner

KIND = "fields"  # the checkpoint metadata's "kind" of a data-driven model


@dataclass
class FitConfig:
    """Everything a data-driven training run depends on (round-trips through JSON)."""

    card: str
    network: str = "unet"
    network_kwargs: dict = field(default_factory=dict)
    mode: str = "diffusion"
    steps: int = 2000
    seconds: float | None = None  # stop at this wall time (the budget of a fair comparison)
    batch: int = 16
    lr: float = 2e-4
    ema_decay: float = 0.999
    seed: int = 0
    step: int | None = None  # time-dependent: stored times per step (None: the card's)
    history: int | None = None
    limit: int | None = None  # samples read per file
    refine: int = 3  # diffusion: refinement steps (PDE-Refiner's K; K + 1 evaluations a step)
    sigma_min: float = 1e-4  # diffusion: the smallest refinement noise (levels sigma_min ** (k / K))
    levels: int = 5  # edm: sampler noise levels at inference (heun: 2 * levels - 1 evaluations)

    def check(self) -> "FitConfig":
        if self.network not in NETWORKS:
            raise ValueError(f"network={self.network!r} is not known; expected one of {sorted(NETWORKS)}")
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r} is not known; expected one of {list(MODES)}")
        for name in ("steps", "batch", "levels", "refine"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} is invalid; expected an integer >= 1")
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < 1):
            raise ValueError(f"lr={self.lr!r} is invalid; expected a learning rate in (0, 1)")
        if not (isinstance(self.sigma_min, (int, float)) and 0 < self.sigma_min < 1):
            raise ValueError(f"sigma_min={self.sigma_min!r} is invalid; expected a noise level in (0, 1)")
        if self.seconds is not None and not (isinstance(self.seconds, (int, float)) and self.seconds > 0):
            raise ValueError(f"seconds={self.seconds!r} is invalid; expected None or a time > 0")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FitConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"fit config has unknown key(s) {unknown}; expected keys among {sorted(known)}")
        return cls(**d).check()


def _loss(cfg: FitConfig, net, denoiser, cond, target, generator) -> torch.Tensor:
    if cfg.mode == "regression":
        return ((regress(net, cond) - target) ** 2).mean()
    if cfg.mode == "diffusion":
        sigmas = tuple(get_sigmas_refiner(cfg.refine, cfg.sigma_min).tolist())
        return RefinerLoss(sigmas)(denoiser, target, cond, generator=generator).mean()
    return EDMLoss(sigma_data=1.0)(denoiser, target, cond, generator=generator).mean()


def fit(card, out, *, resume: bool = False, progress: bool = True, until: int | None = None, **options) -> Path:
    """Train a data-driven model on ``card`` (a card file or :class:`~pdediff.data.cards.ExternalCard`
    with a path) and write it to ``out`` (``.safetensors``).

    Args:
        card: the dataset card.
        out: the checkpoint to write.
        resume: continue the run in ``out`` (its config wins; ``steps`` / ``seconds`` may grow).
        progress: show a progress bar (tqdm) on stderr.
        until: stop this call after this many steps in all (the run's schedule is still that of
            ``steps``; resume it later to go on).
        options: fields of :class:`FitConfig` (``network``, ``mode``, ``steps``, ``seconds``,
            ``batch``, ``lr``, ``seed``, ``step``, ``history``, ``limit``, ``network_kwargs``, ``levels``).

    Returns:
        The checkpoint path.

    Raises:
        ValueError: a bad option (naming it), a card that does not fit its files, a time axis
            shorter than the step, a resumed checkpoint of another card or kind.
    """
    from pdediff.data.cards import ExternalCard
    from pdediff.data.external import read_fields

    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"out={str(out)!r} is invalid; expected a .safetensors path")
    card_obj = card if isinstance(card, ExternalCard) else ExternalCard.load(card)
    cfg = FitConfig(card=str(card_obj.path or card_obj.name), **options).check()
    tensors, meta = {}, {}
    if resume and out.is_file():
        tensors, meta = load_checkpoint(out)
        if meta.get("kind") != KIND:
            raise ValueError(f"resume: {out} is not a data-driven model (kind {meta.get('kind')!r}); expected one "
                             "written by python -m pdediff.tools.fit")
        saved = FitConfig.from_dict(meta["fit"])
        cfg = dataclasses.replace(saved, steps=max(options.get("steps", saved.steps), saved.steps),
                                  seconds=options.get("seconds", saved.seconds))
    data = read_fields(card_obj, split="train", limit=cfg.limit)
    task = FieldTask.from_data(data, step=cfg.step, history=cfg.history)
    if meta:
        saved_task = FieldTask.from_dict(meta["task"])
        missing = [c for c in saved_task.inputs() + saved_task.outputs if c not in task.inputs() + task.outputs]
        if missing or saved_task.shape != task.shape:
            raise ValueError(f"{task.card_name}: fields: the card's fields {task.inputs() + task.outputs} on a "
                             f"{task.shape} grid do not cover the model's channels {missing or ''} "
                             f"{saved_task.shape}; expected the card the model in {out} was trained on")
        task = saved_task
    cond_all, target_all = (torch.from_numpy(a) for a in task.pairs(data))
    torch.manual_seed(cfg.seed)
    net = build_field_network(task, cfg.network, cfg.network_kwargs)
    denoiser = Denoiser(net, sigma_data=1.0)
    ema = copy.deepcopy(denoiser).requires_grad_(False)
    opt = torch.optim.AdamW(denoiser.parameters(), lr=cfg.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(cfg.seed)
    step, elapsed, losses = 0, 0.0, []
    if meta:
        from pdediff.tools.training import _load_optimizer

        denoiser.load_state_dict(group(tensors, "model"))
        ema.load_state_dict(group(tensors, "ema"))
        _load_optimizer(opt, group(tensors, "optim"), meta["optim"])
        generator.set_state(tensors["rng.generator"])
        step, elapsed, losses = int(meta["step"]), float(meta["elapsed"]), list(meta["losses"])
    if step >= cfg.steps or (cfg.seconds is not None and elapsed >= cfg.seconds):
        return out

    def save():
        from pdediff.tools.training import _optimizer_tensors

        optim_tensors, optim_meta = _optimizer_tensors(opt)
        save_checkpoint(out, {**prefixed("model", denoiser.state_dict()), **prefixed("ema", ema.state_dict()),
                              **prefixed("optim", optim_tensors), "rng.generator": generator.get_state()},
                        {"kind": KIND, "fit": cfg.to_dict(), "task": task.to_dict(), "step": step,
                         "elapsed": elapsed, "losses": losses, "pairs": int(cond_all.shape[0]), "optim": optim_meta})

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=step, desc=f"fit {cfg.mode}", unit="step", file=sys.stderr,
                   mininterval=1.0)
    save_every = max(50, cfg.steps // 10)
    running, last_save = [], time.perf_counter()
    try:
        stop = cfg.steps if until is None else min(int(until), cfg.steps)
        while step < stop and (cfg.seconds is None or elapsed < cfg.seconds):
            start = time.perf_counter()
            idx = torch.randint(0, cond_all.shape[0], (cfg.batch,), generator=generator)
            cond, target = cond_all[idx], target_all[idx]
            if task.periodic:  # a random shift of the torus: the same physics, more pairs
                shifts = [int(torch.randint(0, n, (1,), generator=generator)) if a in task.periodic else 0
                          for a, n in zip(("y", "x"), task.shape)]
                cond, target = (torch.roll(t, shifts, dims=(-2, -1)) for t in (cond, target))
            lr = cfg.lr * min(1.0, (step + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / cfg.steps)))
            for g in opt.param_groups:
                g["lr"] = lr
            loss = _loss(cfg, net, denoiser, cond, target, generator)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(denoiser.parameters(), 1.0)
            opt.step()
            decay = min(cfg.ema_decay, (1.0 + step) / (10.0 + step))
            with torch.no_grad():
                torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in denoiser.parameters()], 1.0 - decay)
            step += 1
            elapsed += time.perf_counter() - start
            running.append(loss.item())
            if len(running) == 25 or step == cfg.steps:
                losses.append([step, round(elapsed, 3), float(np.mean(running))])
                running = []
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{running[-1] if running else losses[-1][2]:.4f}", refresh=False)
            if step % save_every == 0 or time.perf_counter() - last_save > 120:  # resumable within minutes
                save()
                last_save = time.perf_counter()
    finally:
        if bar is not None:
            bar.close()
    save()
    return out


def main(argv=None) -> int:
    d = FitConfig(card="")
    parser = argparse.ArgumentParser(prog="python -m pdediff.tools.fit", description=__doc__.split("\n")[0])
    parser.add_argument("card", help="the dataset card (.yaml / .json)")
    parser.add_argument("--out", required=True, help="the checkpoint to write (.safetensors)")
    parser.add_argument("--network", choices=sorted(NETWORKS), help=f"default {d.network}")
    parser.add_argument("--mode", choices=MODES, help=f"default {d.mode}")
    parser.add_argument("--steps", type=int, help=f"training steps (default {d.steps})")
    parser.add_argument("--seconds", type=float, help="stop at this training wall time")
    parser.add_argument("--batch", type=int, help=f"default {d.batch}")
    parser.add_argument("--lr", type=float, help=f"default {d.lr}")
    parser.add_argument("--seed", type=int, help=f"default {d.seed}")
    parser.add_argument("--step", type=int, help="stored times per model step (default: the card's)")
    parser.add_argument("--history", type=int, help="past states given (default: the card's)")
    parser.add_argument("--limit", type=int, help="samples read per file")
    parser.add_argument("--width", type=int, help="the network's width (model_channels / hidden_channels)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out (its config wins; "
                        "--steps / --seconds may extend it)")
    parser.add_argument("--until", type=int, default=None, help="stop this call after this many steps (resume later)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    options = {k: getattr(args, k) for k in ("network", "mode", "steps", "seconds", "batch", "lr", "seed", "step",
                                              "history", "limit") if getattr(args, k) is not None}
    if args.width is not None:
        options["network_kwargs"] = {"model_channels" if options.get("network", d.network) == "unet"
                                     else "hidden_channels": args.width}
    try:
        path = fit(args.card, args.out, resume=args.resume, progress=not args.quiet, until=args.until, **options)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    meta = load_checkpoint(path)[1]
    loss = f", loss {meta['losses'][-1][2]:.4g}" if meta["losses"] else ""
    print(f"wrote {path}: {meta['step']} steps in {meta['elapsed']:.0f} s, {meta['pairs']} training pairs{loss}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["KIND", "FitConfig", "fit"]
