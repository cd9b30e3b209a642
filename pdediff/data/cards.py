"""The dataset card and the file format, shared by the writer (:mod:`pdediff.data.generate`) and the
readers (:mod:`pdediff.data`), so that neither imports the other.

A pdediff dataset is a folder of HDF5 files (``train.h5``, ``valid.h5``, ``test.h5``, or shards
``train-0000K-of-0000M.h5``) and a ``card.json`` that describes them; the layout is in
``datasets/README.md``.

Other people's data are described by an :class:`ExternalCard` (YAML or JSON): which HDF5 keys
hold which fields, the axis order, the grid and the splits; the readers then read those files as
a native dataset.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pdediff.data import atomic

FORMAT = "pdediff-dataset/1"
SPLITS = ("train", "valid", "test")
DTYPES = ("float32", "float64")


@dataclass
class DatasetCard:
    """Description of a generated dataset, written as ``card.json`` beside its files.

    Training embeds the card in checkpoints, so it round-trips exactly through JSON
    (:meth:`to_json` / :meth:`from_json`). ``counts`` are the total samples per split over
    all shards; ``seeding`` says how sample ``k`` of a split is seeded (stream 0: source,
    1: boundary data).
    """

    problem: str
    n: int
    h: float
    source: str
    boundary: str
    seed: int
    counts: dict[str, int]
    condition_fields: list[str]
    solution_field: str
    dirichlet_field: str | None = None
    source_params: dict = field(default_factory=dict)
    boundary_params: dict = field(default_factory=dict)
    coefficient: str = ""
    coefficient_params: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    dtype: str = "float32"
    shards: int = 1
    block_size: int = 256
    split_index: dict[str, int] = field(default_factory=lambda: {s: i for i, s in enumerate(SPLITS)})
    seeding: str = "numpy.random.SeedSequence([seed, split_index, sample_index, stream])"
    convention: str = ""
    version: str = ""

    @property
    def fields(self) -> list[str]:
        """Condition fields followed by the solution field (the HDF5 dataset names)."""
        return [*self.condition_fields, self.solution_field]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "DatasetCard":
        """Build a card from a dict; unknown or missing keys raise ``ValueError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"dataset card has unknown key(s) {unknown}; expected keys among {sorted(names)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(f"dataset card is incomplete: {exc}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "DatasetCard":
        return cls.from_dict(json.loads(text))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the card atomically to ``path``."""
        return atomic.write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DatasetCard":
        """Read a card from a ``card.json`` file or a dataset folder holding one."""
        path = Path(path)
        if path.is_dir():
            path = path / "card.json"
        try:
            return cls.from_json(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read a dataset card ({exc})") from None


# ---------------------------------------------------------------------------- external cards
#: Roles a field plays for the model, and the kinds a problem-aware integrator may read.
#: ``state``: a field of a time-dependent card that the model evolves (input at t, output at t + k dt).
CARD_ROLES = ("condition", "solution", "state")
CARD_KINDS = ("coefficient", "source", "dirichlet")
AXES = ("sample", "y", "x")  # pdediff's own axis order
#: Every axis a card may name: ``time`` for time-dependent fields (pdediff's order).
ALL_AXES = ("sample", "time", "y", "x")
#: How the files hold samples: ``arrays``, one array per field with a sample axis; ``groups``,
#: one HDF5 group per sample (PDEBench's ``"0000"``, ``"0001"``...), field keys within a group.
LAYOUTS = ("arrays", "groups")
GRID_KINDS = ("node", "cell")
CARD_SUFFIXES = (".yaml", ".yml", ".json")
EXTERNAL_FORMAT = "pdediff-external-card/1"
_CARD_KEYS = ("files", "problem", "params", "fields", "constants", "grid", "splits", "note", "source", "layout",
              "groups", "time")
_FIELD_KEYS = ("key", "role", "axes", "index", "kind")
_CONSTANT_KEYS = ("attribute", "value", "key", "role", "kind")
_GRID_KEYS = ("kind", "spacing", "x", "y", "periodic")
_TIME_KEYS = ("key", "dt", "step", "history")


class _CardError(ValueError):
    pass


def _fail(where, key: str, message: str) -> _CardError:
    return _CardError(f"{where}: {key}: {message}")


def _check_keys(where, key: str, data, allowed) -> dict:
    if not isinstance(data, dict):
        raise _fail(where, key, f"found {type(data).__name__} {data!r}; expected a mapping")
    bad = [k for k in data if not isinstance(k, str)]
    unknown = sorted(map(str, set(data) - set(allowed)))
    if bad or unknown:
        raise _fail(where, key, f"unknown key(s) {unknown or bad}; expected keys among {list(allowed)}")
    return data


def _mapping(where, key: str, data) -> list[tuple[str, object]]:
    """The items of a mapping with string keys (field names)."""
    if not isinstance(data, dict):
        raise _fail(where, key, f"found {type(data).__name__} {data!r}; expected a mapping of names")
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise _fail(where, key, f"names {bad} are not strings; expected names such as a, u, f")
    return list(data.items())


def _text(where, key: str, value, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise _fail(where, key, f"found {value!r}; expected a non-empty string")
    return value


def _number(where, key: str, value) -> float:
    """A finite float; numeric strings such as ``1e-2`` (YAML 1.1 reads them as text) are accepted."""
    if isinstance(value, bool):
        raise _fail(where, key, f"found {value!r}; expected a number")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise _fail(where, key, f"found {value!r}; expected a number") from None
    if out != out or out in (float("inf"), float("-inf")):
        raise _fail(where, key, f"found {value!r}; expected a finite number")
    return out


def _integer(where, key: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(where, key, f"found {value!r}; expected an integer")
    return value


def _choice(where, key: str, value, choices) -> str:
    if value not in choices:
        raise _fail(where, key, f"found {value!r}; expected one of {list(choices)}")
    return value


@dataclass(frozen=True)
class CardField:
    """A field stored in the files: ``key`` read, ``index`` taken along extra axes, the rest
    transposed from ``axes`` (the stored order of ``sample``, ``y``, ``x`` and, for a
    time-dependent field, ``time``) to pdediff's ``[sample, (time,) y, x]``. In a ``groups``
    layout the group is the sample, so ``axes`` has no ``sample``."""

    name: str
    key: str
    role: str
    axes: tuple[str, ...] = AXES
    index: tuple[tuple[int, int], ...] = ()  # (stored axis, index) pairs, sorted by axis
    kind: str | None = None

    @property
    def ndim(self) -> int:
        """Dimensions of the stored dataset: the kept axes plus one per indexed axis."""
        return len(self.axes) + len(self.index)

    @property
    def timed(self) -> bool:
        """Whether the field has a time axis."""
        return "time" in self.axes

    @classmethod
    def parse(cls, where, name: str, data) -> "CardField":
        key = f"fields.{name}"
        data = _check_keys(where, key, data, _FIELD_KEYS)
        if "key" not in data or "role" not in data:
            missing = [k for k in ("key", "role") if k not in data]
            raise _fail(where, key, f"missing {missing}; expected an HDF5 dataset name and a role")
        axes = data.get("axes", list(AXES))
        if (not isinstance(axes, (list, tuple)) or len(set(map(str, axes))) != len(axes)
                or not {"y", "x"} <= set(map(str, axes)) or not set(map(str, axes)) <= set(ALL_AXES)):
            raise _fail(where, f"{key}.axes", f"found {axes!r}; expected the stored order of {list(AXES)} "
                        "(plus time for a time-dependent field), e.g. [sample, y, x], [sample, x, y] or "
                        "[sample, time, x, y]")
        role = _choice(where, f"{key}.role", data["role"], CARD_ROLES)
        if role == "state" and "time" not in axes:
            raise _fail(where, f"{key}.axes", f"found {list(axes)!r} for a field of role state; expected a time "
                        "axis (a state is evolved in time)")
        return cls(
            name=name,
            key=_text(where, f"{key}.key", data["key"]),
            role=role,
            axes=tuple(axes),
            index=cls._parse_index(where, f"{key}.index", data.get("index"), len(axes)),
            kind=None if data.get("kind") is None else _choice(where, f"{key}.kind", data["kind"], CARD_KINDS),
        )

    @staticmethod
    def _parse_index(where, key: str, index, kept: int = 3) -> tuple[tuple[int, int], ...]:
        """``{axis: i}`` (JSON: string axes) or a list with ``null`` at the ``kept`` axes."""
        if index is None:
            return ()
        if isinstance(index, (list, tuple)):
            if sum(v is None for v in index) != kept:
                raise _fail(where, key, f"found {list(index)!r}; a list index holds one entry per stored axis, "
                            f"null at the {kept} kept axes and an integer at each extra axis")
            pairs = [(a, v) for a, v in enumerate(index) if v is not None]
        elif isinstance(index, dict):
            pairs = []
            for axis, value in index.items():
                if isinstance(axis, str) and axis.lstrip("-").isdigit():
                    axis = int(axis)
                pairs.append((axis, value))
        else:
            raise _fail(where, key, f"found {index!r}; expected a mapping {{axis: index}} or a list")
        for axis, value in pairs:
            _integer(where, f"{key}[{axis!r}]", value)
            if isinstance(axis, bool) or not isinstance(axis, int) or not 0 <= axis < kept + len(pairs):
                raise _fail(where, key, f"axis {axis!r} is out of range; expected a stored axis in "
                            f"[0, {kept + len(pairs)}) ({kept} kept axes plus {len(pairs)} indexed)")
        return tuple(sorted(pairs))

    def to_dict(self) -> dict:
        out = {"key": self.key, "role": self.role, "axes": list(self.axes)}
        if self.index:
            out["index"] = dict(self.index)
        if self.kind:
            out["kind"] = self.kind
        return out


@dataclass(frozen=True)
class CardConstant:
    """A field constant over each sample: a file attribute (per file), a literal value, or a
    dataset ``key`` holding one number per file (shape ``()``) or per sample (``(S,)``; in a
    ``groups`` layout, one number in each group), e.g. The Well's ``scalars/NAME``."""

    name: str
    attribute: str | None = None
    value: float | None = None
    key: str | None = None
    role: str = "condition"
    kind: str | None = None

    @classmethod
    def parse(cls, where, name: str, data) -> "CardConstant":
        key = f"constants.{name}"
        data = _check_keys(where, key, data, _CONSTANT_KEYS)
        if sum(k in data for k in ("attribute", "value", "key")) != 1:
            raise _fail(where, key, f"found keys {sorted(data)}; expected exactly one of 'attribute' (a file "
                        "attribute), 'value' (a number) or 'key' (a dataset of one number per file or sample)")
        role = data.get("role", "condition")
        if role != "condition":
            raise _fail(where, f"{key}.role", f"found {role!r}; a constant can only be a 'condition'")
        return cls(
            name=name,
            attribute=_text(where, f"{key}.attribute", data["attribute"]) if "attribute" in data else None,
            value=_number(where, f"{key}.value", data["value"]) if "value" in data else None,
            key=_text(where, f"{key}.key", data["key"]) if "key" in data else None,
            role=role,
            kind=None if data.get("kind") is None else _choice(where, f"{key}.kind", data["kind"], CARD_KINDS),
        )

    def to_dict(self) -> dict:
        if self.attribute is not None:
            out = {"attribute": self.attribute}
        else:
            out = {"key": self.key} if self.key is not None else {"value": self.value}
        out["role"] = self.role
        if self.kind:
            out["kind"] = self.kind
        return out


@dataclass(frozen=True)
class CardGrid:
    """``node``: an N x N grid including the boundary (pdediff's own); ``cell``: N x N cell
    centres, no boundary. Coordinates from the HDF5 keys ``x``/``y``, else from ``spacing``,
    else the unit square (node: ``j / (N - 1)``, cell: ``(j + 1/2) / N``). ``periodic`` names
    the axes (``x``, ``y``) on which the fields wrap around: the networks pad them circularly."""

    kind: str
    spacing: float | None = None
    x: str | None = None
    y: str | None = None
    periodic: tuple[str, ...] = ()

    @classmethod
    def parse(cls, where, data) -> "CardGrid":
        data = _check_keys(where, "grid", data, _GRID_KEYS)
        if "kind" not in data:
            raise _fail(where, "grid.kind", f"missing; expected one of {list(GRID_KINDS)}")
        if ("x" in data) != ("y" in data):
            raise _fail(where, "grid", f"found keys {sorted(data)}; expected both coordinate keys x and y, or neither")
        if "spacing" in data and "x" in data:
            raise _fail(where, "grid", "found both spacing and coordinate keys x, y; expected one of them")
        spacing = None
        if data.get("spacing") is not None:
            spacing = _number(where, "grid.spacing", data["spacing"])
            if spacing <= 0:
                raise _fail(where, "grid.spacing", f"found {spacing!r}; expected a spacing > 0")
        periodic = data.get("periodic") or []
        if isinstance(periodic, str):
            periodic = [periodic]
        if not isinstance(periodic, (list, tuple)) or not set(periodic) <= {"x", "y"} or len(set(periodic)) != len(periodic):
            raise _fail(where, "grid.periodic", f"found {periodic!r}; expected a list of the periodic axes among "
                        "['x', 'y']")
        return cls(kind=_choice(where, "grid.kind", data["kind"], GRID_KINDS), spacing=spacing,
                   x=_text(where, "grid.x", data.get("x"), optional=True),
                   y=_text(where, "grid.y", data.get("y"), optional=True),
                   periodic=tuple(a for a in ("y", "x") if a in periodic))

    def coordinates(self, n: int) -> np.ndarray:
        """Coordinates along one axis when not read from the files."""
        h = self.spacing if self.spacing is not None else (1.0 / (n - 1) if self.kind == "node" else 1.0 / n)
        return (np.arange(n) + (0.5 if self.kind == "cell" else 0.0)) * h

    def to_dict(self) -> dict:
        out = {"kind": self.kind}
        if self.spacing is not None:
            out["spacing"] = self.spacing
        if self.x is not None:
            out.update(x=self.x, y=self.y)
        if self.periodic:
            out["periodic"] = list(self.periodic)
        return out


@dataclass(frozen=True)
class CardTime:
    """The time axis of a time-dependent card: coordinates from dataset ``key`` (one row of
    times, or one per sample, of which the first is read), else ``dt`` apart; training pairs map
    the states at ``t`` (and the ``history - 1`` times before it) to the states at
    ``t + step * dt``."""

    key: str | None = None
    dt: float | None = None
    step: int = 1
    history: int = 1

    @classmethod
    def parse(cls, where, data) -> "CardTime | None":
        if data is None:
            return None
        data = _check_keys(where, "time", data, _TIME_KEYS)
        if "key" in data and "dt" in data:
            raise _fail(where, "time", "found both key and dt; expected one of them (or neither: unit steps)")
        dt = None
        if data.get("dt") is not None:
            dt = _number(where, "time.dt", data["dt"])
            if dt <= 0:
                raise _fail(where, "time.dt", f"found {dt!r}; expected a time step > 0")
        step, history = (_integer(where, f"time.{k}", data.get(k, 1)) for k in ("step", "history"))
        for k, v in (("step", step), ("history", history)):
            if v < 1:
                raise _fail(where, f"time.{k}", f"found {v!r}; expected an integer >= 1")
        return cls(key=_text(where, "time.key", data.get("key"), optional=True), dt=dt, step=step, history=history)

    def to_dict(self) -> dict:
        out = {"key": self.key} if self.key is not None else ({"dt": self.dt} if self.dt is not None else {})
        return {**out, "step": self.step, "history": self.history}


@dataclass(frozen=True)
class CardSplits:
    """Seeded fractions of a permutation of all samples, or half-open index ranges."""

    fractions: tuple[tuple[str, float], ...] = ()
    ranges: tuple[tuple[str, int, int], ...] = ()
    seed: int | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s[0] for s in (self.fractions or self.ranges)) or ("train",)

    @classmethod
    def parse(cls, where, data) -> "CardSplits":
        if data is None:
            return cls()
        if not isinstance(data, dict) or not data:
            raise _fail(where, "splits", f"found {data!r}; expected a mapping of split names to fractions "
                        "(with a seed) or to [start, stop) index ranges")
        seed = data.get("seed")
        entries = {k: v for k, v in data.items() if k != "seed"}
        bad = [k for k in entries if not isinstance(k, str) or not k.isidentifier()]
        if bad or not entries:
            raise _fail(where, "splits", f"split names {bad or []} are not valid; expected names such as "
                        "train, valid, test")
        if all(isinstance(v, (list, tuple)) for v in entries.values()):
            if seed is not None:
                raise _fail(where, "splits.seed", f"found {seed!r} with index ranges; a seed goes with fractions only")
            ranges = []
            for name, value in entries.items():
                if len(value) != 2:
                    raise _fail(where, f"splits.{name}", f"found {list(value)!r}; expected [start, stop)")
                start, stop = (_integer(where, f"splits.{name}", v) for v in value)
                if not 0 <= start <= stop:
                    raise _fail(where, f"splits.{name}", f"found [{start}, {stop}]; expected 0 <= start <= stop")
                ranges.append((name, start, stop))
            reach, reached_by = 0, None  # the furthest stop so far, and whose
            for name, start, stop in sorted((r for r in ranges if r[2] > r[1]), key=lambda r: r[1]):
                if start < reach:
                    raise _fail(where, "splits", f"ranges {reached_by} and {name} overlap (samples [{start}, "
                                f"{min(reach, stop)}) are in both); expected disjoint ranges")
                reach, reached_by = stop, name
            return cls(ranges=tuple(ranges))
        if any(isinstance(v, (list, tuple)) for v in entries.values()):
            raise _fail(where, "splits", f"found {entries!r}; expected all fractions or all [start, stop) ranges")
        fractions = tuple((name, _number(where, f"splits.{name}", v)) for name, v in entries.items())
        for name, value in fractions:
            if not 0.0 <= value <= 1.0:
                raise _fail(where, f"splits.{name}", f"found {value!r}; expected a fraction in [0, 1]")
        total = sum(v for _, v in fractions)
        if abs(total - 1.0) > 1e-6:
            raise _fail(where, "splits", f"fractions {dict(fractions)} sum to {total:g}; expected 1")
        if seed is None:
            raise _fail(where, "splits.seed", "missing; expected an integer seed for the permutation "
                        "behind the fractions")
        return cls(fractions=fractions, seed=_integer(where, "splits.seed", seed))

    def indices(self, split: str, total: int, where="card") -> np.ndarray:
        """Global sample indices of ``split`` among ``total`` samples, in the split's order.

        Fractions: the split's share of ``numpy.random.default_rng(seed).permutation(total)``,
        with boundaries ``round(total * cumulative fraction)`` (in permutation order, so the
        first ``k`` samples of a split are a random subset of it). Ranges: ``arange(start, stop)``.
        No ``splits``: ``train`` is every sample.
        """
        if split not in self.names:
            raise ValueError(f"{where}: split={split!r} is not in splits; expected one of {list(self.names)}")
        if self.fractions:
            order = np.random.default_rng(self.seed).permutation(total)
            bounds = np.round(np.cumsum([0.0] + [v for _, v in self.fractions]) * total).astype(np.int64)
            bounds[-1] = total
            k = self.names.index(split)
            return order[bounds[k]:bounds[k + 1]]
        if self.ranges:
            _, start, stop = self.ranges[self.names.index(split)]
            if stop > total:
                raise ValueError(f"{where}: splits.{split}: found [{start}, {stop}], but the files hold {total} "
                                 f"samples; expected stop <= {total}")
            return np.arange(start, stop)
        return np.arange(total)

    def to_dict(self) -> dict | None:
        if self.fractions:
            return {**dict(self.fractions), "seed": self.seed}
        if self.ranges:
            return {name: [start, stop] for name, start, stop in self.ranges}
        return None


@dataclass(frozen=True)
class ExternalCard:
    """A card (YAML or JSON) describing HDF5 files of another layout, so that every reader of
    :mod:`pdediff.data` reads them as a native dataset folder. See ``datasets/README.md``.

    Build one with :meth:`load` (a file) or :meth:`from_dict`; both validate the card itself.
    Whether it fits its files is checked when a reader opens them.
    """

    files: str | tuple[str, ...]
    fields: tuple[CardField, ...]
    grid: CardGrid
    constants: tuple[CardConstant, ...] = ()
    problem: str | None = None
    params: dict = field(default_factory=dict)
    splits: CardSplits = CardSplits()
    note: str = ""
    source: str = ""
    layout: str = "arrays"
    groups: str = r"\d+"  # groups layout: the names of the sample groups (a regular expression)
    time: CardTime | None = None
    path: Path | None = field(default=None, compare=False)  # the card file; files are relative to its folder

    # ------------------------------------------------------------------ names and roles
    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else "card"

    @property
    def entries(self) -> tuple:
        """Stored fields then constants."""
        return (*self.fields, *self.constants)

    @property
    def condition_fields(self) -> list[str]:
        return [e.name for e in self.entries if e.role == "condition"]

    @property
    def solution_field(self) -> str:
        """The (first) solution field, or for a time-dependent card the first state."""
        return next(e.name for e in self.entries if e.role in ("solution", "state"))

    @property
    def solution_fields(self) -> list[str]:
        """Every field the model outputs: the solutions, or the states of a time-dependent card."""
        return [e.name for e in self.entries if e.role in ("solution", "state")]

    @property
    def field_names(self) -> list[str]:
        """Condition fields followed by the solution fields (the order readers return them in)."""
        return [*self.condition_fields, *self.solution_fields]

    @property
    def dynamic(self) -> bool:
        """Whether the card is time-dependent (its fields have a time axis)."""
        return any(f.timed for f in self.fields)

    @property
    def classic(self) -> bool:
        """Whether the steady-problem readers (:class:`pdediff.data.ShardReader`) read this card:
        HDF5 arrays, one solution, no time axis, no periodic axis. Every card is read by
        :func:`pdediff.data.external.read_fields`."""
        from pdediff.data.external import store_kind

        return (self.layout == "arrays" and not self.dynamic and len(self.solution_fields) == 1
                and not self.grid.periodic and all(c.key is None for c in self.constants)
                and all(store_kind(p) == "hdf5" for p in self._patterns()))

    @property
    def roles(self) -> dict[str, str]:
        return {e.name: e.role for e in self.entries}

    @property
    def kinds(self) -> dict[str, str | None]:
        return {e.name: e.kind for e in self.entries}

    def field_of_kind(self, kind: str) -> str | None:
        """The field of ``kind`` (coefficient / source / dirichlet), None if the card has none."""
        return next((e.name for e in self.entries if e.kind == kind), None)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_dict(cls, data, path: str | os.PathLike | None = None) -> "ExternalCard":
        """Build and validate a card; ``path`` (the card file) anchors relative ``files``.

        Raises:
            ValueError: ``"<card>: <key>: <what was found>; expected ..."``.
        """
        where = str(path) if path is not None else "card"
        data = _check_keys(where, "card", data, _CARD_KEYS)
        missing = [k for k in ("files", "fields", "grid") if k not in data]
        if missing:
            raise _fail(where, "card", f"missing key(s) {missing}; a card names its files, fields and grid")
        files = data["files"]
        if isinstance(files, (list, tuple)) and files:
            files = tuple(_text(where, f"files[{i}]", f) for i, f in enumerate(files))
        else:
            files = _text(where, "files", files)
        fields = tuple(CardField.parse(where, name, spec) for name, spec in _mapping(where, "fields", data["fields"]))
        constants = tuple(CardConstant.parse(where, name, spec)
                          for name, spec in _mapping(where, "constants", data.get("constants") or {}))
        names = [e.name for e in (*fields, *constants)]
        clash = sorted({n for n in names if names.count(n) > 1})
        if clash:
            raise _fail(where, "constants", f"{clash} named both as fields and as constants; expected unique names")
        bad = [n for n in names if not n.isidentifier()]
        if bad:
            raise _fail(where, "fields", f"names {bad} are not identifiers; expected names such as a, u, f")
        solutions = [e.name for e in (*fields, *constants) if e.role == "solution"]
        states = [e.name for e in fields if e.role == "state"]
        problem = _text(where, "problem", data.get("problem"), optional=True)
        if solutions and states:
            raise _fail(where, "fields", f"found fields of role solution {solutions} and of role state {states}; "
                        "expected solutions (a steady card) or states (a time-dependent one)")
        if not solutions and not states:
            raise _fail(where, "fields", "found no field of role solution or state; expected at least one")
        if problem is not None and (len(solutions) != 1 or states):
            raise _fail(where, "fields", f"found solution(s) {solutions} and state(s) {states} for problem "
                        f"{problem!r}; a built-in problem has exactly one solution field and no time axis")
        timed = [f.name for f in fields if f.timed]
        if timed and not states:
            raise _fail(where, "fields", f"fields {timed} have a time axis but no field has role state; expected "
                        "the evolved fields as role: state")
        layout = _choice(where, "layout", data.get("layout", "arrays"), LAYOUTS)
        for spec in fields:
            if ("sample" in spec.axes) == (layout == "groups"):
                raise _fail(where, f"fields.{spec.name}.axes", f"found {list(spec.axes)!r} in layout {layout!r}; "
                            + ("a group is one sample, so its arrays have no sample axis" if layout == "groups"
                               else "expected a sample axis"))
        grid = CardGrid.parse(where, data["grid"])
        if grid.periodic and (problem is not None or any(e.kind == "dirichlet" for e in (*fields, *constants))):
            raise _fail(where, "grid.periodic", f"found {list(grid.periodic)!r} on "
                        + (f"problem {problem!r}" if problem is not None else "a card with Dirichlet data")
                        + ", whose solution is fixed on a Dirichlet ring; a periodic axis has no boundary ring: "
                        "drop problem (a data-driven model) or the periodic axes")
        time = CardTime.parse(where, data.get("time"))
        if time is not None and not states:
            raise _fail(where, "time", "found a time section but no field of role state; expected a "
                        "time-dependent card")
        groups = data.get("groups", r"\d+")
        if layout == "groups":
            import re

            try:
                re.compile(_text(where, "groups", groups))
            except re.error as exc:
                raise _fail(where, "groups", f"found {groups!r}, not a regular expression ({exc})") from None
        for kind in CARD_KINDS:
            of_kind = [e.name for e in (*fields, *constants) if e.kind == kind]
            if len(of_kind) > 1:
                raise _fail(where, "fields", f"fields {of_kind} are all of kind {kind!r}; expected at most one")
        params = data.get("params") or {}
        if not isinstance(params, dict):
            raise _fail(where, "params", f"found {params!r}; expected a mapping")
        return cls(
            files=files, fields=fields, grid=grid, constants=constants,
            problem=problem, params=dict(params), layout=layout, groups=groups,
            time=time if time is not None or not states else CardTime(),
            splits=CardSplits.parse(where, data.get("splits")),
            note=_text(where, "note", data["note"]) if data.get("note") is not None else "",
            source=_text(where, "source", data["source"]) if data.get("source") is not None else "",
            path=None if path is None else Path(path),
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ExternalCard":
        """Read and validate a card file: ``.json`` as JSON, anything else as YAML."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
            if path.suffix.lower() == ".json":
                data = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read a dataset card ({exc})") from None
        except Exception as exc:  # yaml.YAMLError and its subclasses
            raise ValueError(f"{path}: not a valid YAML dataset card ({type(exc).__name__}: {exc})") from None
        return cls.from_dict(data, path)

    def check(self) -> "ExternalCard":
        """Check the card against every one of its files (keys, shapes, axis order, indices,
        attributes, agreement between files); return the card.

        Raises:
            ValueError: naming the card, the key and what was found.
        """
        ExternalCard.from_dict(self.to_dict(), self.path)  # a card built in code is validated as a file's is
        if self.classic:
            from pdediff.data.dataset import inspect_card

            inspect_card(self)
        else:
            from pdediff.data.external import read_fields

            read_fields(self, split=None, limit=1)
        return self

    def with_path(self, path: str | os.PathLike) -> "ExternalCard":
        return dataclasses.replace(self, path=Path(path))

    # ------------------------------------------------------------------ writing
    def to_dict(self) -> dict:
        out = {"files": list(self.files) if isinstance(self.files, tuple) else self.files}
        if self.problem is not None:
            out["problem"] = self.problem
        if self.params:
            out["params"] = dict(self.params)
        if self.layout != "arrays":
            out["layout"] = self.layout
            out["groups"] = self.groups
        out["fields"] = {f.name: f.to_dict() for f in self.fields}
        if self.constants:
            out["constants"] = {c.name: c.to_dict() for c in self.constants}
        out["grid"] = self.grid.to_dict()
        if self.time is not None:
            out["time"] = self.time.to_dict()
        splits = self.splits.to_dict()
        if splits is not None:
            out["splits"] = splits
        if self.note:
            out["note"] = self.note
        if self.source:
            out["source"] = self.source
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, width=100, default_flow_style=None)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the card atomically: JSON for a ``.json`` path, else YAML."""
        path = Path(path)
        return atomic.write_text(path, (self.to_json() + "\n") if path.suffix.lower() == ".json" else self.to_yaml())

    # ------------------------------------------------------------------ files and splits
    def _patterns(self) -> tuple[str, ...]:
        return self.files if isinstance(self.files, tuple) else (self.files,)

    def paths(self) -> list[Path]:
        """The files, relative to the card's folder: each glob sorted, in the order listed.

        Raises:
            ValueError: a pattern matches no file, or a file is listed twice.
        """
        base = self.path.parent if self.path is not None else Path.cwd()
        out: list[Path] = []
        for pattern in self._patterns():
            full = base / os.path.expanduser(pattern)
            if glob.has_magic(str(full)):
                matches = [Path(p) for p in sorted(glob.glob(str(full))) if Path(p).exists()]
            else:
                matches = [full] if full.exists() else []
            if not matches:
                raise ValueError(f"{self.name}: files: {pattern!r} matches no file (looked for {str(full)!r}); "
                                 "expected HDF5 files relative to the card's folder")
            out.extend(matches)
        resolved = [p.resolve() for p in out]
        twice = sorted({str(p) for p in resolved if resolved.count(p) > 1})
        if twice:
            raise ValueError(f"{self.name}: files: {twice} listed more than once; expected each file once")
        return out

    def split_indices(self, split: str, total: int) -> np.ndarray:
        """Global indices (over the files in :meth:`paths` order) of the samples in ``split``."""
        return self.splits.indices(split, total, self.name)
