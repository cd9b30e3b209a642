"""Run configuration: dataclasses that round-trip through JSON and YAML.

A config names everything a run needs (data, network, noise schedule, optimiser, validation);
the checkpoint embeds it, so a trained model can be rebuilt from the file alone.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

from typing import Any

from pdediff.physics.problems import DEFAULT_PROBLEM

import yaml

#: Largest value of any integer setting in ``model.network_kwargs`` (widths, depths, modes), and
#: most entries of a list there: beyond these a network does not fit any machine.
MAX_NETWORK_SIZE = 4096
MAX_NETWORK_LIST = 16
MAX_NOTES_DEPTH = 16
#: The largest value of a real setting: the optimiser and the noise schedule use them in float32.
MAX_SETTING = float(3.4e38)
#: The most noise levels a sampling setting (``model.steps``, ``train.valid_steps``) may ask for,
#: as :meth:`pdediff.solver.Solver.solve` accepts.
MAX_STEPS = 10_000
#: A run name is a plain folder name under ``runs/``: no path separators, not ``.`` or ``..``.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass
class DataConfig:
    """Where the training data live and which problem they belong to.

    ``train`` and ``valid`` are lists of files read as one dataset, or one file, folder or glob
    pattern (as :func:`pdediff.data.resolve_paths` reads them). ``params`` are the problem's
    parameters (e.g. a wavenumber ``{k: 8.0}``); the data's card must record the same.
    """

    def make_problem(self, card: dict | None = None):
        """The problem as the engine sees these data: ``data.problem`` with ``data.params``, viewed
        through the training data's card (``card``, or read from ``data.train``): data on another
        grid than pdediff's node grid (an external card's cell grid) make it data-driven."""
        from pdediff.physics.problems import data_problem, get_problem

        try:
            base = get_problem(self.problem, **self.params)
        except ValueError as exc:
            raise ValueError(f"data.problem={self.problem!r} with data.params={self.params!r}: {exc}") from None
        if card is None:
            from pdediff.data import read_card

            try:
                card = read_card(self.train)
            except ValueError:
                return base  # unreadable data are reported, with their key, where they are read
        try:
            return data_problem(base, card)
        except ValueError as exc:
            raise ValueError(f"data.train={self.train!r}: {exc}") from None


    train: list[str] | str = field(default_factory=lambda: [f"datasets/{DEFAULT_PROBLEM}64/train.h5"])
    valid: list[str] | str = field(default_factory=lambda: [f"datasets/{DEFAULT_PROBLEM}64/valid.h5"])
    problem: str = DEFAULT_PROBLEM
    params: dict[str, Any] = field(default_factory=dict)
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
    precond: str = "edm"  # a key of pdediff.maths.denoiser.PRECONDITIONINGS ("edm", "x0")
    sampler: str = "heun"  # the solver's default sampler and noise levels for this model
    steps: int = 10
    # a joint model: the fields it generates together, as channels (e.g. [rho, phi]: condition
    # and solution fields of the problem; the others stay conditions). Empty: a forward model
    # of the solution given every condition field
    joint: list[str] = field(default_factory=list)
    # a joint model whose network also takes the observations (each joint field's observed
    # values and their 0/1 mask) as inputs, trained on random observation masks: it learns the
    # posterior given any observations, not only the prior (pdediff.learning.conditioning.random_observations)
    observe: bool = False
    # classifier-free guidance: the probability that a training sample gets the null condition
    # (sources, coefficients and observations zeroed, Dirichlet data kept, and a presence flag
    # channel 0); > 0 gives the network that flag channel, and solve/reconstruct accept cfg=w
    cond_dropout: float = 0.0
    # the score as minus the gradient of a scalar energy E(x, sigma, c) (pdediff.maths.denoiser):
    # curl-free by construction, about 3x the cost of a direct model per evaluation
    energy: bool = False
    # a forward model that also takes the problem's operator guess (one V-cycle step from zero,
    # Problem.operator_guess) as its last condition channel, and learns a correction to it; a
    # fine-tune from a model without it starts with zero weights on that channel
    operator_input: bool = False


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
    # loss "edm" only; > 0: each sample's loss is its squared error relative to its target's
    # mean square (floored at relative_floor^2, in normalised units); 0: the absolute error
    relative_floor: float = 0.0
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
    # with init: fit the normalisation on this run's data instead of taking the checkpoint's
    # (data of other scales, e.g. a broader law of the same problem); the weights are kept
    refit_normalisation: bool = False


@dataclass
class Config:
    """A whole training run: data, model and training settings, plus free-form notes."""

    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    notes: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> "Config":
        """Raise ``ValueError`` naming the first setting that cannot work.

        Checks the type of every field (as :meth:`from_dict` does), then ranges and the sizes in
        ``model.network_kwargs``; cheap, so call it before any work.
        """
        for section, key, hint in _FIELD_TYPES:
            obj = self if section is None else getattr(self, section)
            _check_type(getattr(obj, key), hint, key if section is None else f"{section}.{key}")
        if not NAME_PATTERN.fullmatch(self.name) or self.name in (".", ".."):
            raise ValueError(f"name={self.name!r} is invalid; expected a plain run name of letters, digits and "
                             "'-_.' (it names the folder runs/<name>; pass --out for another place)")
        t, m = self.train, self.model
        positive = {"model.steps": m.steps, "train.steps": t.steps, "train.batch_size": t.batch_size, "train.log_every": t.log_every,
                    "train.checkpoint_every": t.checkpoint_every, "train.valid_samples": t.valid_samples,
                    "train.valid_steps": t.valid_steps, "data.stats_samples": self.data.stats_samples}
        for name, value in positive.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} is invalid; expected an integer >= 1")
        for name in ("model.steps", "train.valid_steps"):
            if positive[name] > MAX_STEPS:
                raise ValueError(f"{name}={positive[name]!r} is invalid; expected an integer in [1, {MAX_STEPS}]")
        optional = {"train.threads": t.threads, "data.max_train_samples": self.data.max_train_samples}
        for name, value in optional.items():
            if value is not None and value < 1:
                raise ValueError(f"{name}={value!r} is invalid; expected an integer >= 1 or null")
        for name, value in {"train.warmup_steps": t.warmup_steps, "train.valid_every": t.valid_every,
                            "train.seed": t.seed}.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name}={value!r} is invalid; expected an integer >= 0")
        numbers = {"train.lr": t.lr, "train.grad_clip": t.grad_clip, "model.sigma_min": m.sigma_min,
                   "model.sigma_max": m.sigma_max, "train.P_std": t.P_std}
        if m.sigma_data is not None:
            numbers["model.sigma_data"] = m.sigma_data
        for name, value in numbers.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= MAX_SETTING:
                raise ValueError(f"{name}={value!r} is invalid; expected a finite number > 0 (at most "
                                 f"{MAX_SETTING:g}, float32's range)")
        nonnegative = ("train.weight_decay", "train.relative_floor")
        for name, value in {"train.weight_decay": t.weight_decay, "train.P_mean": t.P_mean,
                            "train.relative_floor": t.relative_floor}.items():
            if not abs(value) <= MAX_SETTING or (name in nonnegative and value < 0):
                raise ValueError(f"{name}={value!r} is invalid; expected a finite number"
                                 + (" >= 0" if name in nonnegative else "")
                                 + f" (at most {MAX_SETTING:g} in size)")
        if not m.sigma_min < m.sigma_max:
            raise ValueError(f"model.sigma_min={m.sigma_min} must be below model.sigma_max={m.sigma_max}")
        if not 0 <= t.ema_decay < 1:
            raise ValueError(f"train.ema_decay={t.ema_decay!r} is invalid; expected 0 <= decay < 1")
        if m.precond not in ("edm", "x0"):  # pdediff.maths.denoiser.PRECONDITIONINGS (kept import-free here)
            raise ValueError(f"model.precond={m.precond!r} is invalid; expected 'edm' or 'x0'")
        if m.observe and not m.joint:
            raise ValueError("model.observe=true needs model.joint (the fields observed and generated); expected a "
                             "list of fields, e.g. [rho, phi]")
        if not (isinstance(m.cond_dropout, (int, float)) and not isinstance(m.cond_dropout, bool)
                and 0 <= m.cond_dropout < 1):
            raise ValueError(f"model.cond_dropout={m.cond_dropout!r} is invalid; expected a probability in [0, 1)")
        if len(set(m.joint)) != len(m.joint):
            raise ValueError(f"model.joint={m.joint!r} names a field twice; expected distinct field names")
        if t.relative_floor > 0 and t.loss != "edm":
            raise ValueError(f"train.relative_floor={t.relative_floor!r} needs train.loss='edm' (got {t.loss!r})")
        if t.lr_decay not in ("cosine", "constant"):
            raise ValueError(f"train.lr_decay={t.lr_decay!r} is invalid; expected 'cosine' or 'constant'")
        if not self.data.train:
            raise ValueError("data.train is empty; expected at least one training file")
        if t.valid_every and not self.data.valid:
            raise ValueError("data.valid is empty; expected at least one validation file (or train.valid_every: 0)")
        if not t.device:
            raise ValueError("train.device='' is invalid; expected 'auto', 'cpu', 'cuda' or 'cuda:K'")
        check_network_kwargs(m.network_kwargs)
        if _depth(self.notes) > MAX_NOTES_DEPTH:  # checkpoints refuse deeply nested metadata
            raise ValueError(f"notes are nested {_depth(self.notes)} levels deep; expected at most {MAX_NOTES_DEPTH}")
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
        try:
            text = path.read_text(encoding="utf-8")
            if path.suffix == ".json":
                return cls.from_json(text)
            return cls.from_yaml(text)
        except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ValueError(f"config={str(path)!r} is not valid YAML/JSON: {exc}") from None
        except RecursionError:
            raise ValueError(f"config={str(path)!r} is nested too deeply; expected a YAML/JSON run config") from None


def check_network_kwargs(kwargs: dict, where: str = "model.network_kwargs") -> None:
    """Refuse network settings too large for any machine before a network is built.

    Every integer in ``kwargs`` (widths, depths, Fourier modes, also inside lists) must be at most
    :data:`MAX_NETWORK_SIZE`, every list at most :data:`MAX_NETWORK_LIST` long. The network's
    constructor checks the rest; :func:`pdediff.learning.model.check_network` bounds the parameter count.

    Raises:
        ValueError: naming the key, its value and the bound.
    """
    if not isinstance(kwargs, dict):
        raise ValueError(f"{where}={kwargs!r} is invalid; expected a mapping")
    for key, value in kwargs.items():
        items = value if isinstance(value, (list, tuple)) else [value]
        if isinstance(value, (list, tuple)) and len(value) > MAX_NETWORK_LIST:
            raise ValueError(f"{where}.{key} has {len(value)} entries; expected at most {MAX_NETWORK_LIST}")
        for item in items:
            if isinstance(item, (int, float)) and not isinstance(item, bool) and not abs(item) <= MAX_NETWORK_SIZE:
                raise ValueError(f"{where}.{key}={value!r} is too large; expected values of at most "
                                 f"{MAX_NETWORK_SIZE} (larger networks do not fit in memory)")


def _depth(doc) -> int:
    """Nesting depth of mappings and lists in ``doc`` (iterative: no recursion on hostile input)."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list, tuple)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def _type_name(hint) -> str:
    if hint is Any:
        return "any value"
    if hint is type(None):
        return "null"
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return " or ".join(_type_name(a) for a in args)
    origin = typing.get_origin(hint)
    if origin is list:
        return "a list of " + {str: "strings", int: "integers", float: "floats"}.get(args[0], str(args[0]))
    if origin is dict:
        return "a mapping"
    return {int: "an integer", float: "a float", str: "a string", bool: "true or false"}.get(hint, str(hint))


def _matches(value, hint) -> bool:
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(_matches(value, a) for a in args)
    origin = typing.get_origin(hint)
    if origin is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(_matches(k, args[0]) for k in value)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:  # bools are not integers here
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # an integer is a number too
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint)


def _check_type(value, hint, key: str):
    """``value`` (ints given for floats as floats) or a ValueError naming ``key``, the value and the type."""
    if not _matches(value, hint):
        raise ValueError(f"{key}={value!r} has type {type(value).__name__}; expected {_type_name(hint)}")
    union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    options = typing.get_args(hint) if union else (hint,)
    if float in options and int not in options and isinstance(value, int):
        return float(value)
    return value


def _from_dict(cls, d, where: str):
    if not isinstance(d, dict):
        raise ValueError(f"{where} is {type(d).__name__}; expected a mapping")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ValueError(f"{where} has unknown key(s) {unknown}; expected some of {sorted(known)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in d.items():
        sub = _SUBCONFIGS.get(name) if cls is Config else None
        if sub is not None:
            kwargs[name] = _from_dict(sub, {} if value is None else value, f"{where}.{name}")
        else:
            kwargs[name] = _check_type(value, hints[name], f"{where}.{name}".removeprefix("config."))
    return cls(**kwargs)


_SUBCONFIGS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
#: (section, key, type) of every setting, for :meth:`Config.validate`.
_FIELD_TYPES = [(None, k, h) for k, h in typing.get_type_hints(Config).items() if k not in _SUBCONFIGS] + [
    (section, k, h) for section, cls in _SUBCONFIGS.items() for k, h in typing.get_type_hints(cls).items()]
