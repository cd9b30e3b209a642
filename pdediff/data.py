"""Reading generated datasets: the dataset card, an xarray view, a torch ``Dataset``.

A split is one HDF5 file (``train.h5``) or a set of shards (``train-00003-of-00008.h5``) read
as one dataset; see ``datasets/README.md`` for the layout. Every file is validated on open: a
missing, truncated, incomplete or foreign file, or shards that disagree on the problem, grid
or fields, raise ``ValueError`` naming the path and what was expected.
"""

from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
import xarray as xr
from xarray.backends import BackendArray
from xarray.core import indexing

from pdediff.cards import FORMAT, DatasetCard

REQUIRED_ATTRS = ("format", "problem", "N", "count", "completed", "condition_fields", "solution_field")
SHARD_PATTERN = re.compile(r"^(?P<split>\w+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.h5$")
# Attributes that differ between the shards of one split; dropped from the combined attrs.
_PER_FILE_ATTRS = ("shard", "shard_index", "start", "count", "completed")


# ---------------------------------------------------------------------------- file checks
@dataclass(frozen=True)
class FileInfo:
    """What :func:`inspect_file` found in one validated dataset file."""

    path: Path
    problem: str
    n: int
    count: int
    fields: tuple[str, ...]
    dtype: np.dtype
    attrs: dict


class _Rejected(ValueError):
    """A file that :func:`inspect_file` read but refuses (its message names the file)."""


def _attr(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def inspect_file(path: str | os.PathLike) -> FileInfo:
    """Validate one dataset file and return its metadata.

    Raises:
        ValueError: the file is missing, not readable HDF5 (e.g. truncated), lacks the
            attributes or datasets of a pdediff dataset, has inconsistent shapes, or was left
            incomplete by an interrupted run. Every error h5py raises on a corrupt file becomes
            a ``ValueError`` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file; expected a pdediff dataset file (.h5)")
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: _attr(v) for k, v in f.attrs.items()}
            missing = [k for k in REQUIRED_ATTRS if k not in attrs]
            if missing or attrs["format"] != FORMAT:
                raise _Rejected(
                    f"{path}: not a pdediff dataset (missing attribute(s) {missing or ['format']}); "
                    f"expected an HDF5 file written by generate_data.py with format={FORMAT!r}"
                )
            n, count = int(attrs["N"]), int(attrs["count"])
            if int(attrs["completed"]) < count:
                raise _Rejected(
                    f"{path}: incomplete dataset ({attrs['completed']} of {count} samples written); "
                    "finish it with generate_data.py --resume"
                )
            fields = (*json.loads(attrs["condition_fields"]), attrs["solution_field"])
            dtypes = set()
            for name in fields:
                if name not in f or not isinstance(f[name], h5py.Dataset):
                    raise _Rejected(f"{path}: missing dataset {name!r}; expected datasets {list(fields)}")
                if f[name].shape != (count, n, n):
                    raise _Rejected(
                        f"{path}: dataset {name!r} has shape {f[name].shape}; expected {(count, n, n)}"
                    )
                dtypes.add(f[name].dtype)
                if count:
                    f[name][count - 1]  # reads the last chunk: catches truncated data
    except _Rejected:
        raise
    except OSError as exc:
        raise ValueError(
            f"{path}: not a readable HDF5 file ({exc}); the file may be truncated or corrupt"
        ) from None
    except Exception as exc:  # h5py raises KeyError, RuntimeError, TypeError... on damaged files
        raise ValueError(
            f"{path}: not a readable pdediff dataset ({type(exc).__name__}: {exc}); "
            "the file may be corrupt or missing datasets"
        ) from None
    if len(dtypes) > 1:
        raise ValueError(f"{path}: fields have mixed dtypes {sorted(map(str, dtypes))}; expected one")
    return FileInfo(path, str(attrs["problem"]), n, count, fields, dtypes.pop(), attrs)


def resolve_paths(path_or_paths, split: str = "train") -> list[Path]:
    """Expand a file, a list of files, a glob pattern or a dataset folder into dataset files.

    A folder yields ``{split}.h5`` or, failing that, all its ``{split}-KKKKK-of-MMMMM.h5``
    shards, which must all be present.

    Raises:
        ValueError: ``path_or_paths`` is neither a path nor a list of paths, nothing matches,
            or shards are missing from a folder.
    """
    expected = "expected a dataset folder, a file, a glob pattern, or a list of files (str or os.PathLike)"
    if isinstance(path_or_paths, (str, os.PathLike)):
        text = os.fspath(path_or_paths)
        if Path(text).is_dir():
            return _split_files(Path(text), split)
        if glob.has_magic(text):
            matches = sorted(glob.glob(text))
            if not matches:
                raise ValueError(f"path={text!r} matches no files; expected dataset files (.h5)")
            return [Path(m) for m in matches]
        return [Path(text)]
    if isinstance(path_or_paths, (bytes, dict)) or not hasattr(path_or_paths, "__iter__"):
        raise ValueError(f"path_or_paths={path_or_paths!r} is not valid; {expected}")
    items = list(path_or_paths)
    bad = [p for p in items if not isinstance(p, (str, os.PathLike))]
    if bad:
        raise ValueError(f"path_or_paths={items!r} holds {bad[0]!r}, not a path; {expected}")
    paths = [Path(p) for p in items]
    if not paths:
        raise ValueError("paths is empty; expected at least one dataset file")
    return paths


def _split_files(folder: Path, split: str) -> list[Path]:
    single = folder / f"{split}.h5"
    if single.is_file():
        return [single]
    shards = sorted(p for p in folder.iterdir() if (m := SHARD_PATTERN.match(p.name)) and m["split"] == split)
    if not shards:
        raise ValueError(f"{folder}: no {split}.h5 and no {split}-KKKKK-of-MMMMM.h5 shards found")
    totals = {int(SHARD_PATTERN.match(p.name)["count"]) for p in shards}
    if len(totals) != 1 or len(shards) != totals.pop():
        raise ValueError(
            f"{folder}: found {len(shards)} {split} shard(s) {[p.name for p in shards]}; "
            "expected every shard K of one shard count M"
        )
    return shards


def _check_consistent(infos: list[FileInfo]) -> None:
    first = infos[0]
    for info in infos[1:]:
        for what in ("problem", "n", "fields", "dtype"):
            if getattr(info, what) != getattr(first, what):
                raise ValueError(
                    f"{info.path}: {what}={getattr(info, what)!r} but {first.path} has "
                    f"{what}={getattr(first, what)!r}; shards read as one dataset must agree"
                )


class ShardReader:
    """Reads samples by global index from one or more validated files.

    HDF5 handles are opened on first access in each process (and reopened after a fork), so
    a reader can be handed to DataLoader workers.
    """

    def __init__(self, path_or_paths, split: str = "train"):
        self.infos = [inspect_file(p) for p in resolve_paths(path_or_paths, split)]
        _check_consistent(self.infos)
        self.offsets = np.cumsum([0] + [info.count for info in self.infos])
        self._handles: list[h5py.File] | None = None
        self._pid: int | None = None

    @property
    def n(self) -> int:
        return self.infos[0].n

    @property
    def fields(self) -> tuple[str, ...]:
        return self.infos[0].fields

    @property
    def dtype(self) -> np.dtype:
        return self.infos[0].dtype

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getstate__(self):
        return {**self.__dict__, "_handles": None, "_pid": None}

    def _files(self) -> list[h5py.File]:
        if self._handles is None or self._pid != os.getpid():
            self._handles = [h5py.File(info.path, "r") for info in self.infos]
            self._pid = os.getpid()
        return self._handles

    def take(self, name: str, indices, rows=slice(None), cols=slice(None)) -> np.ndarray:
        """Return ``field[indices, rows, cols]`` for a 1-D array of global sample indices."""
        flat = np.asarray(indices, dtype=np.int64).reshape(-1)
        files = self._files()
        shape = (flat.size, *np.empty((self.n, self.n))[rows, cols].shape)
        out = np.empty(shape, dtype=self.dtype)
        which = np.searchsorted(self.offsets, flat, side="right") - 1
        for f in np.unique(which):
            sel = np.flatnonzero(which == f)
            local = flat[sel] - self.offsets[f]
            lo, hi = int(local.min()), int(local.max()) + 1
            try:
                out[sel] = files[f][name][lo:hi, rows, cols][local - lo]
            except (OSError, KeyError, RuntimeError) as exc:
                raise ValueError(f"{self.infos[f].path}: cannot read {name!r} ({exc}); the file may be corrupt") from None
        return out

    def attrs(self) -> dict:
        """Attributes shared by all files, with ``count`` the total and the file list."""
        common = {k: v for k, v in self.infos[0].attrs.items() if k not in _PER_FILE_ATTRS}
        for info in self.infos[1:]:
            common = {k: v for k, v in common.items() if info.attrs.get(k) == v}
        return {**common, "count": len(self), "files": json.dumps([str(i.path) for i in self.infos])}


class _LazyField(BackendArray):
    """xarray backend array over one field of a :class:`ShardReader` (basic indexing)."""

    def __init__(self, reader: ShardReader, name: str):
        self.reader, self.name = reader, name
        self.shape = (len(reader), reader.n, reader.n)
        self.dtype = reader.dtype

    def __getitem__(self, key):
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.BASIC, self._raw)

    def _raw(self, key: tuple):
        sample, rows, cols = key
        if isinstance(sample, (int, np.integer)):
            return self.reader.take(self.name, [sample], rows, cols)[0]
        return self.reader.take(self.name, np.arange(self.shape[0])[sample], rows, cols)


def open_dataset(path_or_paths, split: str = "train") -> xr.Dataset:
    """Open a split as a lazily read ``xarray.Dataset``.

    Args:
        path_or_paths: a file, a list of shard files, a glob pattern, or a dataset folder.
        split: which split to read when given a folder.

    Returns:
        Variables for every field (dims ``sample, y, x``), coordinates ``sample`` (global
        index), ``y`` and ``x`` (node coordinates), attrs shared by the files.
    """
    reader = ShardReader(path_or_paths, split)
    nodes = np.linspace(0.0, 1.0, reader.n)
    data_vars = {
        name: (("sample", "y", "x"), indexing.LazilyIndexedArray(_LazyField(reader, name)))
        for name in reader.fields
    }
    coords = {"sample": np.arange(len(reader)), "y": nodes, "x": nodes}
    return xr.Dataset(data_vars, coords=coords, attrs=reader.attrs())


def load_arrays(
    path_or_paths, fields=None, split: str = "train", dtype=np.float32, *,
    limit: int | None = None, rank: int = 0, world: int = 1,
) -> dict[str, np.ndarray]:
    """Read fields into memory as ``{name: (count, N, N) array}``.

    Args:
        path_or_paths, fields, split: as for :class:`PDEDataset`.
        dtype: output dtype (``None``: as stored).
        limit: read only the first ``limit`` samples (``None``: all).
        rank, world: return the ``rank``-th of ``world`` contiguous, disjoint shares of
            those samples (``numpy.array_split`` sizes), for distributed training.
    """
    if not (isinstance(world, int) and world >= 1 and isinstance(rank, int) and 0 <= rank < world):
        raise ValueError(f"rank={rank!r}, world={world!r} are not valid; expected 0 <= rank < world")
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit={limit!r} is not valid; expected None or an integer >= 0")
    reader_size = len(ShardReader(path_or_paths, split))
    chosen = np.array_split(np.arange(reader_size if limit is None else min(limit, reader_size)), world)[rank]
    return PDEDataset(path_or_paths, fields=fields, indices=chosen, split=split, dtype=dtype).read(slice(None))


def read_card(path_or_paths, split: str = "train") -> dict:
    """The dataset card of a split as a JSON-ready dict (``DatasetCard.from_dict`` rebuilds it).

    Read from the first file's ``card_json`` attribute, so it works for a folder, a list of
    shards or a single file alike.
    """
    info = ShardReader(path_or_paths, split).infos[0]
    return DatasetCard.from_json(info.attrs["card_json"]).to_dict()


class PDEDataset(torch.utils.data.Dataset):
    """Torch dataset of generated samples, read lazily from one file or a set of shards.

    Args:
        path_or_paths: a file, a list of shard files, a glob pattern, or a dataset folder.
        fields: names to return (default: the condition fields and the solution field).
        indices: global sample indices this dataset exposes (default: all), e.g. one rank's
            share in distributed training.
        split: which split to read when given a folder.
        dtype: dtype of returned arrays (``None``: as stored).

    ``dataset[k]`` returns ``{name: float32 tensor (N, N)}`` for sample ``indices[k]``.
    """

    def __init__(self, path_or_paths, fields=None, indices=None, split: str = "train", dtype=np.float32):
        self.reader = ShardReader(path_or_paths, split)
        self.fields = tuple(self.reader.fields if fields is None else fields)
        unknown = [name for name in self.fields if name not in self.reader.fields]
        if unknown:
            raise ValueError(f"fields={list(self.fields)}: {unknown} not in the dataset; expected among {list(self.reader.fields)}")
        total = len(self.reader)
        self.indices = np.arange(total) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
        if self.indices.size and (self.indices.min() < -total or self.indices.max() >= total):
            raise ValueError(f"indices must lie in [0, {total}); got range [{self.indices.min()}, {self.indices.max()}]")
        self.indices = self.indices % max(total, 1)
        self.dtype = None if dtype is None else np.dtype(dtype)

    @property
    def card(self) -> DatasetCard:
        """The card stored in the first file."""
        return DatasetCard.from_json(self.reader.infos[0].attrs["card_json"])

    def __len__(self) -> int:
        return int(self.indices.size)

    def read(self, index) -> dict[str, np.ndarray]:
        """Read a batch, ``index`` being a slice or an array of positions in this dataset."""
        chosen = self.indices[index]
        out = {name: self.reader.take(name, np.atleast_1d(chosen)) for name in self.fields}
        if self.dtype is not None:
            out = {name: value.astype(self.dtype, copy=False) for name, value in out.items()}
        return out

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= k < len(self):
            raise IndexError(f"index {k} out of range for a dataset of {len(self)} samples")
        return {name: torch.from_numpy(value[0]) for name, value in self.read([k]).items()}


__all__ = [
    "DatasetCard",
    "FileInfo",
    "PDEDataset",
    "ShardReader",
    "inspect_file",
    "load_arrays",
    "open_dataset",
    "read_card",
    "resolve_paths",
]
