"""A data-driven task over named fields: which channels go in, which come out, at what scale.

A card without a built-in problem (other people's data, time-dependent data, several solutions,
rectangular or periodic grids) is learnt purely from data. :class:`FieldTask` says what the
network maps:

- steady: the condition fields and constants -> the solution fields;
- time-dependent: the states at ``t`` (and at ``t - 1 ... t - history + 1``) with the condition
  fields and constants -> the change of the states from ``t`` to ``t + step * dt``.

Every channel is normalised by its own training mean and standard deviation (per channel, so
a velocity in m/s and a density in kg/m^3 weigh alike); a time-dependent model predicts the
normalised change, whose scale is that of one step rather than of the field. Errors are
measured on the output fields only: an input channel copied to the output would hide a poor
prediction (PDEBench issue #41).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

#: A standard deviation below this fraction of the mean magnitude counts as a constant channel.
_FLAT = 1e-6
#: The scale of a state's change where it never changes, as a fraction of the state's own scale.
_STILL = 1e-3


def history_name(state: str, lag: int) -> str:
    """The input channel of ``state`` at ``t - lag``."""
    return f"{state}[t]" if lag == 0 else f"{state}[t-{lag}]"


@dataclass
class FieldTask:
    """What a data-driven model maps, and the scale of every channel.

    Attributes:
        outputs: the solution fields (steady) or the states (time-dependent), in channel order.
        conditions: fields and constants given as inputs.
        dynamic: whether the task steps states in time.
        step, history: a time-dependent task's step (in stored times) and number of past states.
        shape: the grid, ``(ny, nx)``.
        periodic: the axes (``y``, ``x``) that wrap around.
        dt: the stored time step (1 when the card gives none).
        mean, std: per input channel (:meth:`inputs`) and per output (``d:NAME`` for a change).
        card: the card's JSON (its content and path), for provenance and error messages.
    """

    outputs: list[str]
    conditions: list[str]
    dynamic: bool
    shape: tuple[int, int]
    step: int = 1
    history: int = 1
    periodic: tuple[str, ...] = ()
    dt: float = 1.0
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)
    card: str = ""
    card_name: str = "card"
    keys: dict[str, str] = field(default_factory=dict)  # field -> the key the card reads it from
    constants: list[str] = field(default_factory=list)  # the conditions that are one number per sample
    fixed: dict[str, float] = field(default_factory=dict)  # constants with one value in all training data

    # ------------------------------------------------------------------ channels
    def inputs(self) -> list[str]:
        """The input channels in order: states at each lag (time-dependent), then conditions."""
        lags = [history_name(s, j) for j in range(self.history) for s in self.outputs] if self.dynamic else []
        return lags + list(self.conditions)

    def output_channels(self) -> list[str]:
        return [f"d:{s}" for s in self.outputs] if self.dynamic else list(self.outputs)

    def _scale(self, name: str) -> tuple[float, float]:
        return self.mean[name], self.std[name]

    # ------------------------------------------------------------------ building
    @classmethod
    def from_data(cls, ds, step: int | None = None, history: int | None = None) -> "FieldTask":
        """The task of a dataset read by :func:`pdediff.data.external.read_fields` (its training split).

        Raises:
            ValueError: naming the card and key when the time axis is shorter than the step asked.
        """
        from pdediff.data.cards import ExternalCard

        card = ExternalCard.from_dict(json.loads(ds.attrs["card_json"]))
        name = ds.attrs.get("card", "card")
        roles = json.loads(ds.attrs["roles"])
        outputs = [k for k, r in roles.items() if r in ("solution", "state")]
        conditions = [k for k, r in roles.items() if r == "condition"]
        dynamic = any(r == "state" for r in roles.values())
        time = card.time
        step = int(step if step is not None else (time.step if time else 1))
        history = int(history if history is not None else (time.history if time else 1))
        for what, value in (("step", step), ("history", history)):
            if value < 1:
                raise ValueError(f"{name}: time.{what}: found {value!r}; expected an integer >= 1")
        if dynamic:
            nt = ds.sizes["time"]
            if nt < step + history:
                first = outputs[0]
                raise ValueError(f"{name}: time.step: asked step={step} with history={history}, but the time axis "
                                 f"of fields.{first} (key {card_key(card, first)!r}) has {nt} point(s); "
                                 f"expected at least {step + history}")
        times = np.asarray(ds["time"]) if dynamic else np.zeros(2)
        dt = float(times[1] - times[0]) if dynamic and times.size > 1 else 1.0
        task = cls(outputs=outputs, conditions=conditions, dynamic=dynamic,
                   shape=(int(ds.sizes["y"]), int(ds.sizes["x"])), step=step, history=history,
                   periodic=tuple(json.loads(ds.attrs.get("periodic", "[]"))), dt=dt,
                   x=[float(v) for v in ds["x"].values], y=[float(v) for v in ds["y"].values],
                   card=ds.attrs["card_json"], card_name=name,
                   keys={k: card_key(card, k) for k in roles})
        if ds.sizes["sample"] == 0:
            raise ValueError(f"{name}: splits: the training split holds no sample; expected at least one")
        for k in [*outputs, *conditions]:
            values = np.asarray(ds[k], dtype=np.float64)
            task.mean[k], task.std[k] = _moments(values)
            if k in conditions and values.ndim == 1:
                task.constants.append(k)
                if np.ptp(values) == 0:
                    task.fixed[k] = float(values[0])
        for lag in range(task.history if dynamic else 0):
            for s in outputs:
                task.mean[history_name(s, lag)], task.std[history_name(s, lag)] = task.mean[s], task.std[s]
        if dynamic:
            for s in outputs:
                u = np.asarray(ds[s], dtype=np.float64)
                change = u[:, step:] - u[:, :-step]
                # a state that never changes (a uniform velocity): a change of a thousandth of the
                # state's own scale is one unit, so a small output error is a small physical one
                task.mean[f"d:{s}"] = float(change.mean())
                task.std[f"d:{s}"] = max(float(change.std()), _STILL * task.std[s])
        return task

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"], d["periodic"] = list(self.shape), list(self.periodic)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FieldTask":
        d = dict(d)
        d["shape"], d["periodic"] = tuple(d["shape"]), tuple(d["periodic"])
        return cls(**d)

    # ------------------------------------------------------------------ data -> channels
    def pairs(self, ds) -> tuple[np.ndarray, np.ndarray]:
        """Every training pair of ``ds``: ``(inputs (P, C_in, ny, nx), targets (P, C_out, ny, nx))``,
        normalised. Time-dependent: one pair per trajectory and time ``t`` with ``history - 1 <= t``
        and ``t + step`` stored."""
        if not self.dynamic:
            cond = self.encode({k: np.asarray(ds[k]) for k in self.conditions})
            return cond, self._normalise_outputs({k: np.asarray(ds[k]) for k in self.outputs}, None)
        nt = ds.sizes["time"]
        starts = np.arange(self.history - 1, nt - self.step)
        states = {s: np.asarray(ds[s], dtype=np.float32) for s in self.outputs}
        conds = {k: np.asarray(ds[k], dtype=np.float32) for k in self.conditions}
        xs, ys = [], []
        for t in starts:
            past = {s: np.stack([v[:, t - j] for j in range(self.history)], axis=1) for s, v in states.items()}
            now = {k: (v[:, t] if v.ndim == 4 else v) for k, v in conds.items()}
            xs.append(self.encode(now, past))
            ys.append(self._normalise_outputs({s: v[:, t + self.step] for s, v in states.items()},
                                              {s: v[:, t] for s, v in states.items()}))
        return np.concatenate(xs), np.concatenate(ys)

    def encode(self, conditions: dict, past: dict | None = None) -> np.ndarray:
        """Input channels ``(B, C_in, ny, nx)`` from the conditions (``(B, ny, nx)`` fields or ``(B,)``
        constants) and, time-dependent, the states ``past[s]`` of shape ``(B, history, ny, nx)``
        (lag 0 first)."""
        ny, nx = self.shape
        channels = []
        if self.dynamic:
            for j in range(self.history):
                for s in self.outputs:
                    m, sd = self._scale(history_name(s, j))
                    channels.append((np.asarray(past[s])[:, j] - m) / sd)
        for k in self.conditions:
            m, sd = self._scale(k)
            v = (np.asarray(conditions[k], dtype=np.float64) - m) / sd
            channels.append(np.broadcast_to(v.reshape(v.shape[0], 1, 1), (v.shape[0], ny, nx)) if v.ndim == 1 else v)
        b = channels[0].shape[0] if channels else 0
        return np.stack(channels, axis=1).astype(np.float32) if channels else np.zeros((b, 0, ny, nx), np.float32)

    def _normalise_outputs(self, values: dict, current: dict | None) -> np.ndarray:
        out = []
        for s, name in zip(self.outputs, self.output_channels()):
            m, sd = self._scale(name)
            v = np.asarray(values[s], dtype=np.float64) - (0 if current is None else np.asarray(current[s]))
            out.append((v - m) / sd)
        return np.stack(out, axis=1).astype(np.float32)

    def decode(self, out: torch.Tensor, current: dict | None = None) -> dict[str, torch.Tensor]:
        """Output channels ``(..., C_out, ny, nx)`` back to fields: the solutions, or the states at
        ``t + step`` given the states ``current`` at ``t``."""
        fields = {}
        for i, (s, name) in enumerate(zip(self.outputs, self.output_channels())):
            m, sd = self._scale(name)
            v = out[..., i, :, :] * sd + m
            fields[s] = v + current[s] if self.dynamic else v
        return fields


#: How a data-driven model answers. ``diffusion``: PDE-Refiner (Lippe et al. 2023), a one-step
#: prediction refined by a few denoising steps at small noise levels (one network trained for
#: both, :class:`pdediff.learning.losses.RefinerLoss`); ``edm``: the probability-flow ODE from
#: noise (EDM loss and sampler); ``regression``: the same network fed zeros as its noisy input at
#: ``c_noise = 0``, trained by mean squared error, the plain one-step regressor that the diffusion
#: models are measured against.
MODES = ("diffusion", "regression", "edm")


def default_network_kwargs(network: str, task: FieldTask) -> dict:
    """Network arguments that fit the task: its channels, periodic axes, and node coordinates
    as inputs only where no axis wraps (a coordinate would put an edge into the torus)."""
    common = {"channels": len(task.outputs), "periodic": list(task.periodic), "add_coords": not task.periodic}
    if network == "unet":
        return {"model_channels": 32, "channel_mult": [1, 2, 2], "attention_levels": [], **common}
    return {"hidden_channels": 32, "n_modes": [12, 12], "n_layers": 4, **common}


def build_field_network(task: FieldTask, network: str, network_kwargs: dict | None = None):
    """The network of a data-driven model: ``NETWORKS[network]`` with the task's inputs as
    condition channels and its outputs as channels (``network_kwargs`` over the defaults)."""
    from pdediff.learning.networks import build_network

    kwargs = {**default_network_kwargs(network, task), **(network_kwargs or {})}
    net = build_network(network, len(task.inputs()), **kwargs)
    net.check_grid(*task.shape)
    return net


def regress(net, cond: torch.Tensor) -> torch.Tensor:
    """The regressor's answer: the network with zeros as its noisy input and ``c_noise = 0``."""
    zeros = cond.new_zeros((cond.shape[0], net.channels, *cond.shape[-2:]))
    return net(zeros, cond.new_zeros(cond.shape[0]), cond)


def card_key(card, name: str) -> str:
    """The key a card reads field or constant ``name`` from (its attribute or value for a constant)."""
    for e in card.entries:
        if e.name == name:
            return getattr(e, "key", None) or getattr(e, "attribute", None) or repr(getattr(e, "value", None))
    return name


def _moments(values: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation; a constant channel gets the scale of its mean (or 1)."""
    mean, std = float(values.mean()), float(values.std())
    if not np.isfinite(mean) or not np.isfinite(std):
        raise ValueError(f"the data hold non-finite values (mean {mean}, std {std}); expected finite fields")
    if std <= _FLAT * max(abs(mean), 1e-30):
        std = abs(mean) if mean != 0 else 1.0
    return mean, std


__all__ = ["MODES", "FieldTask", "build_field_network", "card_key", "default_network_kwargs", "history_name",
           "regress"]
