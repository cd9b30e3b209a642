"""Answers of a data-driven model (:mod:`pdediff.tools.fit`): steady solves, rollouts, their errors.

``pdediff.load_solver(path)`` returns a :class:`FieldSolver` for a checkpoint written by
``python -m pdediff.tools.fit``. It has no operator: every answer comes from the network, and
its trust comes from the data (:meth:`FieldSolver.evaluate`) and from the spread of independent
draws (``samples`` > 1), which a rollout reports per step and warns on when the draws part.

>>> solver = pdediff.load_solver("model.safetensors")           # doctest: +SKIP
>>> run = solver.rollout(data.isel(sample=0, time=0), steps=10)  # doctest: +SKIP
>>> run["u"].sel(time=run.time[-1]).plot()                       # doctest: +SKIP
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import xarray as xr

from pdediff.data.checkpoint import group, load_checkpoint
from pdediff.learning.fields import FieldTask, build_field_network, regress
from pdediff.maths.denoiser import Denoiser
from pdediff.maths.samplers import get_sigmas_karras, get_sigmas_refiner, sample_heun, sample_refine

#: A rollout warns when its draws disagree by more than this (RMS spread / RMS of the mean).
SPREAD_WARN = 0.1
#: A rollout warns when a state leaves the training range: its RMS in units of the training
#: standard deviation (about the training mean) above this.
DRIFT_Z = 4.0
#: Correlation below which a rollout has lost the true trajectory (PDE-Refiner's threshold).
CORRELATION = 0.8


class FieldSolver:
    """A loaded data-driven model.

    Attributes:
        task: what it maps (:class:`~pdediff.learning.fields.FieldTask`): ``task.outputs`` are
            the solution fields or states, ``task.conditions`` the inputs it needs.
        fit: the training config (a dict).
        mode: ``diffusion`` or ``regression``.
    """

    def __init__(self, denoiser: Denoiser, task: FieldTask, fit: dict, meta: dict | None = None, device="cpu"):
        self.device = torch.device(device)
        self.denoiser = denoiser.to(self.device).eval()
        self.task, self.fit, self.mode = task, dict(fit), fit["mode"]
        self.meta = dict(meta or {})
        self.problem = None  # no operator: the model is purely data-driven

    @classmethod
    def from_checkpoint(cls, path, device="cpu", weights: str = "ema") -> "FieldSolver":
        tensors, meta = load_checkpoint(path)
        task = FieldTask.from_dict(meta["task"])
        net = build_field_network(task, meta["fit"]["network"], meta["fit"]["network_kwargs"])
        denoiser = Denoiser(net, sigma_data=1.0)
        if weights not in ("ema", "model"):
            raise ValueError(f"weights={weights!r} is invalid; expected 'ema' or 'model'")
        denoiser.load_state_dict(group(tensors, weights))
        return cls(denoiser, task, meta["fit"], meta, device=device)

    # ------------------------------------------------------------------ inputs
    def _fields(self, given, names, what: str, history: int | None = None) -> dict[str, np.ndarray]:
        """``given`` (a mapping or an ``xarray.Dataset``) as arrays with a batch axis."""
        t = self.task
        missing = [k for k in names if k not in given]
        if missing:
            keys = ", ".join(f"fields.{k} (key {t.keys.get(k, k)!r})" for k in missing)
            raise ValueError(f"{t.card_name}: {what} lacks {keys}; the model's channels need {list(names)}")
        out = {}
        for k in names:
            v = np.asarray(given[k], dtype=np.float64)
            if k in t.conditions and v.ndim <= 1:  # a constant: one number per sample
                out[k] = v.reshape(-1)
                continue
            spatial = v.shape[-2:]
            if tuple(spatial) != tuple(t.shape):
                raise ValueError(f"{what}[{k!r}] has shape {v.shape}; expected (..., {t.shape[0]}, {t.shape[1]}), "
                                 "the grid the model was trained on")
            if history is not None:
                if v.ndim == 2:
                    v = v[None, None]
                elif v.ndim == 3:
                    v = v[None] if history > 1 or v.shape[0] == 1 else v[:, None]
                if v.shape[1] != history:
                    raise ValueError(f"{what}[{k!r}] has shape {v.shape}; expected (B, {history}, ny, nx): the "
                                     f"states at t, t-1, ... (history {history})")
            elif v.ndim == 2:
                v = v[None]
            if not np.all(np.isfinite(v)):
                raise ValueError(f"{what}[{k!r}] holds non-finite values; expected finite fields")
            out[k] = v
        return out

    def _predict(self, cond: np.ndarray, samples: int, generator: torch.Generator) -> torch.Tensor:
        """Normalised outputs ``(samples, B, C_out, ny, nx)`` for inputs ``cond`` (B, C_in, ny, nx)."""
        c = torch.from_numpy(cond).to(self.device)
        with torch.inference_mode():
            if self.mode == "regression":
                return regress(self.denoiser.net, c)[None].expand(samples, *c.shape[:1], -1, -1, -1).clone()
            cc = c.repeat(samples, 1, 1, 1)
            if self.mode == "diffusion":  # PDE-Refiner: a one-step prediction, refined at small noise
                sigmas = get_sigmas_refiner(self.fit.get("refine", 3), self.fit.get("sigma_min", 1e-4), device=self.device, dtype=c.dtype)
                out, _ = sample_refine(self.denoiser, regress(self.denoiser.net, cc), sigmas, cc, generator=generator)
                return out.reshape(samples, c.shape[0], *out.shape[1:])
            sigmas = get_sigmas_karras(self.fit["levels"], 0.002, 80.0, device=self.device, dtype=c.dtype)
            x = torch.randn((cc.shape[0], len(self.task.outputs), *c.shape[-2:]), generator=generator,
                            dtype=c.dtype).to(self.device) * sigmas[0]
            out, _ = sample_heun(self.denoiser, x, sigmas, cc)
            return out.reshape(samples, c.shape[0], *out.shape[1:])

    # ------------------------------------------------------------------ answers
    def solve(self, fields=None, *, samples: int = 1, seed: int = 0, **given) -> xr.Dataset:
        """The solution fields of a steady model for the conditions ``fields`` (or keyword arrays).

        Returns:
            An ``xarray.Dataset`` with each solution (dims ``sample, y, x``; the mean of
            ``samples`` draws) and, for ``samples`` > 1, ``spread`` (``sample``: RMS spread over
            the draws / RMS of their mean).
        """
        if self.task.dynamic:
            raise ValueError(f"{self.task.card_name}: this model is time-dependent; call rollout(initial, steps=K)")
        _check_samples(samples)
        given = {**(dict(fields) if fields is not None else {}), **given}
        if self.task.fixed:  # a constant every training sample shared: its value
            fields_given = [np.asarray(v) for k, v in given.items() if k not in self.task.constants]
            batch = fields_given[0].shape[0] if fields_given and fields_given[0].ndim == 3 else 1
            for k, value in self.task.fixed.items():
                given.setdefault(k, np.full(batch, value))
        conds = self._fields(given, self.task.conditions, "fields")
        cond = self.task.encode(conds)
        draws = self.task.decode(self._predict(cond, samples, torch.Generator().manual_seed(seed)))
        return _answer(self.task, draws, samples, dims=("sample", "y", "x"))

    def rollout(self, initial, steps: int = 10, *, conditions=None, samples: int = 1, seed: int = 0) -> xr.Dataset:
        """Step a time-dependent model ``steps`` times from the states ``initial``.

        Args:
            initial: the states at the start (a mapping or an ``xarray.Dataset``): each ``(ny, nx)``,
                ``(B, ny, nx)``, or with history ``(B, history, ny, nx)``, lag 0 first; a Dataset
                with a ``time`` dimension gives its last ``history`` times.
            steps: model steps (each ``task.step`` stored times).
            conditions: the condition fields and constants, if the model has any (taken from
                ``initial`` when it holds them).
            samples: independent draws rolled out side by side; the answer is their mean and
                ``spread`` their disagreement per step.
            seed: seeds the draws.

        Returns:
            An ``xarray.Dataset``: every state with dims ``sample, time, y, x`` (time 0 is the
            initial state), coordinates ``time`` (``t0 + k * step * dt``), ``y``, ``x``,
            ``spread`` (``sample, time``) and ``drift`` (``sample, time``: the largest RMS of a
            state in units of its training standard deviation, about the training mean).

        Warns:
            AccuracyWarning: when the draws part by more than :data:`SPREAD_WARN` at some step,
            or a state leaves the training range (``drift`` above :data:`DRIFT_Z`).
        """
        t = self.task
        if not t.dynamic:
            raise ValueError(f"{t.card_name}: this model is steady; call solve(fields)")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps={steps!r} is invalid; expected an integer >= 1")
        _check_samples(samples)
        t0 = 0.0
        if isinstance(initial, xr.Dataset) and "time" in initial.dims:
            t0 = float(initial["time"].values[-1])
            initial = initial.isel(time=slice(None, None, -1)).isel(time=slice(0, t.history))
            initial = {k: (np.moveaxis(np.asarray(v), v.dims.index("time"), -3) if "time" in v.dims else np.asarray(v))
                       for k, v in initial.data_vars.items()}
        elif isinstance(initial, xr.Dataset) and "time" in initial.coords:
            t0 = float(initial["time"])
        given = dict(initial)
        if conditions is not None:
            given.update(dict(conditions))
        past = self._fields(given, t.outputs, "initial", history=t.history)
        batch = next(iter(past.values())).shape[0]
        for k, value in t.fixed.items():  # a constant every training sample shared: its value
            given.setdefault(k, np.full(batch, value))
        conds = self._fields(given, t.conditions, "conditions") if t.conditions else {}
        generator = torch.Generator().manual_seed(seed)
        # every draw carries its own trajectory: (samples * B) rows
        rows = {s: np.repeat(v[None], samples, 0).reshape(samples * batch, *v.shape[1:]) for s, v in past.items()}
        crow = {k: np.tile(v, (samples,) + (1,) * (v.ndim - 1)) for k, v in conds.items()}
        frames = [{s: v[:, 0] for s, v in rows.items()}]
        for _ in range(steps):
            cond = t.encode(crow, rows)
            current = {s: torch.from_numpy(v[:, 0]).to(self.device) for s, v in rows.items()}
            out = self._predict(cond, 1, generator)[0]
            nxt = {s: v.cpu().numpy() for s, v in t.decode(out, {s: c.to(out.dtype) for s, c in current.items()}).items()}
            rows = {s: np.concatenate([nxt[s][:, None], v[:, :-1]], axis=1) for s, v in rows.items()}
            frames.append(nxt)
        draws = {s: np.stack([f[s] for f in frames], axis=1).reshape(samples, batch, steps + 1, *t.shape)
                 for s in t.outputs}
        times = t0 + np.arange(steps + 1) * t.step * t.dt
        run = _answer(t, draws, samples, dims=("sample", "time", "y", "x"), time=times)
        z = np.max([np.sqrt((((run[s].values - t.mean[s]) / t.std[s]) ** 2).mean(axis=(-2, -1))) for s in t.outputs], 0)
        run["drift"] = (("sample", "time"), z)
        if np.nanmax(z) > DRIFT_Z or not np.all(np.isfinite(z)):
            from pdediff import AccuracyWarning

            k = int(np.argmax(np.where(np.isfinite(z), z, np.inf).max(0) > DRIFT_Z))
            warnings.warn(f"the rollout leaves the training range at step {k} (time {times[k]:g}): a state's RMS is "
                          f"{np.nanmax(z[:, k]):.3g} training standard deviations from the training mean "
                          f"(> {DRIFT_Z:g}); trust fewer steps", AccuracyWarning, stacklevel=2)
        if samples > 1:
            worst = float(run["spread"].max())
            if worst > SPREAD_WARN:
                from pdediff import AccuracyWarning

                k = int(np.argmax(run["spread"].max("sample").values))
                warnings.warn(f"the rollout's {samples} draws part by {worst:.3g} (RMS spread / RMS of the mean) at "
                              f"step {k} (time {times[k]:g}) > {SPREAD_WARN}: it drifts from what the model "
                              "knows; trust fewer steps", AccuracyWarning, stacklevel=2)
        return run

    def evaluate(self, data, steps: int | None = None, *, samples: int = 1, seed: int = 0, band: int = 4) -> xr.Dataset:
        """Errors against data the card holds (e.g. ``read_fields(card, split="test")``).

        Time-dependent: a rollout from each trajectory's first ``history`` times over ``steps``
        steps (default: as many as stored). Steady: a solve of every sample.

        Returns:
            An ``xarray.Dataset`` with ``error`` (relative L2 of each output field, mean over
            samples; dims ``field`` and, time-dependent, ``step``), ``error_mean`` (over fields),
            for a rollout ``correlation`` (Pearson correlation of prediction and truth, mean over
            samples and fields, fields uniform in space left out, per step) and the attribute ``correlation_time`` (the time until it
            first falls below :data:`CORRELATION`), and the attributes ``band_error`` /
            ``interior_error``: the last step's relative error on the ``band`` outermost nodes and
            inside them (a periodic model's error should not grow toward the edges).
        """
        t = self.task
        if not t.dynamic:
            pred = self.solve({k: data[k].values for k in t.conditions}, samples=samples, seed=seed)
            truth = {s: np.asarray(data[s].values, dtype=np.float64) for s in t.outputs}
            err = np.array([_relative(np.asarray(pred[s].values), truth[s]).mean() for s in t.outputs])
            ds = xr.Dataset({"error": (("field",), err), "error_mean": ((), err.mean())},
                            coords={"field": list(t.outputs)})
            ds.attrs.update(_bands(pred, truth, t.outputs, band, last=False))
            return ds
        nt = data.sizes["time"]
        most = (nt - t.history) // t.step
        steps = most if steps is None else steps
        if steps > most or steps < 1:
            raise ValueError(f"steps={steps!r} is invalid; the data's {nt} times allow 1 to {most} steps of "
                             f"{t.step} after history {t.history}")
        first = data.isel(time=slice(0, t.history))
        run = self.rollout(first, steps=steps, samples=samples, seed=seed)
        idx = t.history - 1 + np.arange(steps + 1) * t.step
        truth = {s: np.asarray(data[s].values[:, idx], dtype=np.float64) for s in t.outputs}
        err = np.stack([_relative(np.asarray(run[s].values), truth[s]).mean(0) for s in t.outputs])
        with warnings.catch_warnings():  # uniform fields (no correlation to speak of) are left out
            warnings.simplefilter("ignore", RuntimeWarning)
            corr = np.nanmean(np.stack([np.nanmean(_correlation(np.asarray(run[s].values), truth[s]), 0)
                                        for s in t.outputs]), 0)
        corr = np.where(np.isnan(corr), 1.0, corr)
        below = np.flatnonzero(corr < CORRELATION)
        ds = xr.Dataset({"error": (("field", "step"), err), "error_mean": (("step",), err.mean(0)),
                         "correlation": (("step",), corr)},
                        coords={"field": list(t.outputs), "step": np.arange(steps + 1),
                                "time": ("step", run["time"].values)})
        ds.attrs["correlation_time"] = float(run["time"].values[below[0]] - run["time"].values[0]) if below.size else float("inf")
        ds.attrs.update(_bands(run.isel(time=-1), {s: v[:, -1] for s, v in truth.items()}, t.outputs, band, last=True))
        return ds


def _check_samples(samples) -> None:
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples={samples!r} is invalid; expected an integer >= 1")


def _answer(task, draws: dict, samples: int, dims, time=None) -> xr.Dataset:
    """The mean of the draws ``(samples, B, ...)`` of every output, and their spread per row."""
    draws = {s: (v.cpu().numpy() if torch.is_tensor(v) else np.asarray(v)).astype(np.float64) for s, v in draws.items()}
    mean = {s: v.mean(0) for s, v in draws.items()}
    space = (-2, -1)
    if samples > 1:
        var = sum(((v - mean[s]) ** 2).mean(axis=(0, *space)) for s, v in draws.items())
        size = sum((mean[s] ** 2).mean(axis=space) for s in draws)
        spread = np.sqrt(var / np.maximum(size, 1e-30))
    else:
        spread = np.zeros(next(iter(mean.values())).shape[:-2])
    coords = {"sample": np.arange(next(iter(mean.values())).shape[0]), "y": task.y, "x": task.x}
    if time is not None:
        coords["time"] = time
    variables = {s: (dims, v.astype(np.float32)) for s, v in mean.items()}
    variables["spread"] = (dims[:-2], spread)
    return xr.Dataset(variables, coords=coords, attrs={"samples": samples, "card": task.card_name})


def _relative(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Relative L2 error over the last two axes."""
    num = np.sqrt(((pred - truth) ** 2).sum(axis=(-2, -1)))
    return num / np.maximum(np.sqrt((truth**2).sum(axis=(-2, -1))), 1e-30)


def _correlation(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    p = pred - pred.mean(axis=(-2, -1), keepdims=True)
    q = truth - truth.mean(axis=(-2, -1), keepdims=True)
    den = np.sqrt((p**2).sum(axis=(-2, -1)) * (q**2).sum(axis=(-2, -1)))
    return np.where(den > 0, (p * q).sum(axis=(-2, -1)) / np.maximum(den, 1e-300), np.nan)  # nan: a uniform field


def _bands(pred, truth: dict, names, band: int, last: bool) -> dict:
    """Relative error on the ``band`` outermost nodes and on the nodes inside them."""
    ny, nx = next(iter(truth.values())).shape[-2:]
    edge = np.zeros((ny, nx), bool)
    edge[:band], edge[-band:], edge[:, :band], edge[:, -band:] = True, True, True, True
    out = {}
    for where, mask in (("band_error", edge), ("interior_error", ~edge)):
        errs = []
        for s in names:
            p, q = np.asarray(pred[s].values, dtype=np.float64), truth[s]
            errs.append(np.sqrt(((p - q) ** 2)[..., mask].mean()) / max(np.sqrt((q**2).mean()), 1e-30))
        out[where] = float(np.mean(errs))
    return out


__all__ = ["CORRELATION", "DRIFT_Z", "SPREAD_WARN", "FieldSolver"]
