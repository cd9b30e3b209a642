"""The dataset card and the file format, shared by the writer (:mod:`pdediff.generate`) and the
readers (:mod:`pdediff.data`), so that neither imports the other.

A pdediff dataset is a folder of HDF5 files (``train.h5``, ``valid.h5``, ``test.h5``, or shards
``train-0000K-of-0000M.h5``) and a ``card.json`` that describes them; the layout is in
``datasets/README.md``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from pdediff import atomic

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


