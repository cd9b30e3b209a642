"""Run configuration: dataclasses that round-trip through JSON and YAML.

A config names everything a run needs (data, network, noise schedule, optimiser, validation);
the checkpoint embeds it, so a trained model can be rebuilt from the file alone.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml


@dataclass
class DataConfig:
    """Where the training data live and which problem they belong to."""

    train: list[str] = field(default_factory=lambda: ["datasets/poisson64/train.h5"])
    valid: list[str] = field(default_factory=lambda: ["datasets/poisson64/valid.h5"])
    problem: str = "poisson"
    max_train_samples: int | None = None
    stats_samples: int = 4096


@dataclass
class ModelConfig:
    """Score network, preconditioning and the noise range of the diffusion."""

    network: str = "unet"
    network_kwargs: dict[str, Any] = field(default_factory=dict)
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float | None = None  # None: measured from the training data
    precond: str = "edm"  # a key of pdediff.denoiser.PRECONDITIONINGS ("edm", "x0")
    sampler: str = "heun"  # the solver's default sampler and noise levels for this model
    steps: int = 10


@dataclass
class TrainConfig:
    """Optimiser, loss and bookkeeping of a training run."""

    steps: int = 20000
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_steps: int = 500
    lr_decay: str = "cosine"  # "cosine" or "constant" after the warm-up
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    loss: str = "edm"
    P_mean: float = -1.2
    P_std: float = 1.2
    seed: int = 0
    log_every: int = 50
    valid_every: int = 1000
    valid_samples: int = 64
    valid_steps: int = 18
    checkpoint_every: int = 500
    device: str = "auto"
    threads: int | None = None
    # fine-tuning: start from this pdediff checkpoint's weights (EMA) and normalisation; the
    # optimiser, step count and schedule start afresh (ignored when resuming a run)
    init: str | None = None


@dataclass
class Config:
    """A whole training run: data, model and training settings, plus free-form notes."""

    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    notes: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> "Config":
        """Raise ``ValueError`` naming the first setting that cannot work."""
        t, m = self.train, self.model
        positive = {"model.steps": m.steps, "train.steps": t.steps, "train.batch_size": t.batch_size, "train.log_every": t.log_every,
                    "train.checkpoint_every": t.checkpoint_every, "train.valid_samples": t.valid_samples,
                    "train.valid_steps": t.valid_steps, "data.stats_samples": self.data.stats_samples}
        for name, value in positive.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} is invalid; expected an integer >= 1")
        for name, value in {"train.warmup_steps": t.warmup_steps, "train.valid_every": t.valid_every}.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name}={value!r} is invalid; expected an integer >= 0")
        numbers = {"train.lr": t.lr, "train.grad_clip": t.grad_clip, "model.sigma_min": m.sigma_min,
                   "model.sigma_max": m.sigma_max, "train.P_std": t.P_std}
        for name, value in numbers.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ValueError(f"{name}={value!r} is invalid; expected a number > 0")
        if not m.sigma_min < m.sigma_max:
            raise ValueError(f"model.sigma_min={m.sigma_min} must be below model.sigma_max={m.sigma_max}")
        if not 0 <= t.ema_decay < 1:
            raise ValueError(f"train.ema_decay={t.ema_decay!r} is invalid; expected 0 <= decay < 1")
        if m.precond not in ("edm", "x0"):  # pdediff.denoiser.PRECONDITIONINGS (kept import-free here)
            raise ValueError(f"model.precond={m.precond!r} is invalid; expected 'edm' or 'x0'")
        if t.lr_decay not in ("cosine", "constant"):
            raise ValueError(f"train.lr_decay={t.lr_decay!r} is invalid; expected 'cosine' or 'constant'")
        if not self.data.train:
            raise ValueError("data.train is empty; expected at least one training file")
        return self

    # ------------------------------------------------------------ conversions
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        return _from_dict(cls, d, "config")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Config":
        return cls.from_dict(json.loads(text))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> "Config":
        d = yaml.safe_load(text)
        if d is None:
            d = {}
        return cls.from_dict(d)

    @classmethod
    def load(cls, path) -> "Config":
        """Read a ``.yaml``/``.yml`` or ``.json`` config file."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"config={str(path)!r} does not exist; expected a YAML or JSON file")
        text = path.read_text()
        try:
            if path.suffix == ".json":
                return cls.from_json(text)
            return cls.from_yaml(text)
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            raise ValueError(f"config={str(path)!r} is not valid YAML/JSON: {exc}") from None


def _from_dict(cls, d, where: str):
    if not isinstance(d, dict):
        raise ValueError(f"{where} is {type(d).__name__}; expected a mapping")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ValueError(f"{where} has unknown key(s) {unknown}; expected some of {sorted(known)}")
    kwargs = {}
    for name, value in d.items():
        sub = _SUBCONFIGS.get(name) if cls is Config else None
        if sub is not None:
            kwargs[name] = _from_dict(sub, value or {}, f"{where}.{name}")
        elif isinstance(value, list) and name == "channel_mult":
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


_SUBCONFIGS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
