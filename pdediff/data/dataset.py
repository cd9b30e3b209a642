"""Reading generated datasets: the dataset card, an xarray view, a torch ``Dataset``.

A split is one HDF5 file (``train.h5``) or a set of shards (``train-00003-of-00008.h5``) read
as one dataset; see ``datasets/README.md`` for the layout. Every file is validated on open: a
missing, truncated, incomplete or foreign file, or shards that disagree on the problem, grid
or fields, raise ``ValueError`` naming the path and what was expected.

Other people's HDF5 files are read through a dataset card (:class:`~pdediff.data.cards.ExternalCard`,
a ``.yaml``/``.yml``/``.json`` file): pass the card's path wherever a dataset path goes, and the
same readers return its fields, transposed to ``[sample, y, x]``, for the card's splits. A card
that does not fit its files raises ``ValueError`` naming the card, the key and what was found.
"""

from __future__ import annotations

import dataclasses
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

from pdediff.data.cards import AXES, CARD_SUFFIXES, EXTERNAL_FORMAT, FORMAT, DatasetCard, ExternalCard

REQUIRED_ATTRS = ("format", "problem", "N", "count", "completed", "condition_fields", "solution_field")
SHARD_PATTERN = re.compile(r"^(?P<split>\w+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.h5$")
# Attributes that differ between the shards of one split; dropped from the combined attrs.
_PER_FILE_ATTRS = ("shard", "shard_index", "start", "count", "completed")
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5", ".nc")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_CARD_SNIFF_BYTES = 1 << 20  # files up to this size with another suffix are checked for card content
_READ_GAP = 16  # samples: scattered indices further apart than this are read as separate runs


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


def _normalise(path_or_paths):
    """A path (``str``/``os.PathLike``) as given, or a list of paths (iterables are read once)."""
    expected = "expected a dataset folder, a file, a glob pattern, or a list of files (str or os.PathLike)"
    if isinstance(path_or_paths, (str, os.PathLike)):
        text = os.fspath(path_or_paths)
        if not isinstance(text, str) or not text:  # "" would read the current folder
            raise ValueError(f"path_or_paths={path_or_paths!r} is not valid; {expected}")
        return path_or_paths
    if isinstance(path_or_paths, (bytes, dict)) or not hasattr(path_or_paths, "__iter__"):
        raise ValueError(f"path_or_paths={path_or_paths!r} is not valid; {expected}")
    items = list(path_or_paths)
    bad = [p for p in items if not isinstance(p, (str, os.PathLike))]
    if bad:
        raise ValueError(f"path_or_paths={items!r} holds {bad[0]!r}, not a path; {expected}")
    return items


def resolve_paths(path_or_paths, split: str = "train") -> list[Path]:
    """Expand a file, a list of files, a glob pattern or a dataset folder into dataset files.

    A folder (or its native ``card.json``) yields ``{split}.h5`` or, failing that, all its
    ``{split}-KKKKK-of-MMMMM.h5`` shards, which must all be present. A dataset card
    (:func:`find_card`) yields the files it describes (all of them, whatever ``split``).

    Raises:
        ValueError: ``path_or_paths`` is neither a path nor a list of paths, nothing matches,
            ``split`` is not a split name (letters, digits, underscores), or shards are missing
            from a folder.
    """
    if not isinstance(split, str) or not re.fullmatch(r"\w+", split):
        raise ValueError(f"split={split!r} is invalid; expected a split name such as 'train', 'valid' or 'test'")
    path_or_paths = _normalise(path_or_paths)
    card = find_card(path_or_paths)
    if card is not None:
        return card.paths()
    if isinstance(path_or_paths, (str, os.PathLike)):
        text = os.fspath(path_or_paths)
        if Path(text).is_dir():
            return _split_files(Path(text), split)
        if glob.has_magic(text):
            matches = sorted(glob.glob(text))
            if not matches:
                raise ValueError(f"path={text!r} matches no files; expected dataset files (.h5)")
            return [Path(m) for m in matches]
        if _is_native_card(Path(text)):
            return _split_files(Path(text).parent, split)
        return [Path(text)]
    paths = [Path(p) for p in path_or_paths]
    if not paths:
        raise ValueError("paths is empty; expected at least one dataset file")
    return paths


def _split_files(folder: Path, split: str) -> list[Path]:
    single = folder / f"{split}.h5"
    if single.is_file():
        return [single]
    shards = sorted(p for p in folder.iterdir() if (m := SHARD_PATTERN.match(p.name)) and m["split"] == split)
    if not shards:
        raise ValueError(f"{folder}: no {split}.h5 and no {split}-KKKKK-of-MMMMM.h5 shards found "
                         f"(split={split!r}); expected a dataset folder written by generate_data.py")
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


# ---------------------------------------------------------------------------- dataset cards
def _is_native_card(path: Path) -> bool:
    """Whether ``path`` is a native ``card.json`` (a :class:`DatasetCard`, not an external card)."""
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and "solution_field" in data and "files" not in data


def _looks_like_card(path: Path) -> bool:
    """Content check for a file with no card suffix: small, not HDF5, a YAML/JSON mapping with
    ``files`` and ``fields``."""
    try:
        if path.stat().st_size > _CARD_SNIFF_BYTES:
            return False
        raw = path.read_bytes()
        if raw.startswith(_HDF5_SIGNATURE):
            return False
        import yaml

        data = yaml.safe_load(raw.decode("utf-8"))
    except Exception:  # unreadable, not text, not YAML: not a card
        return False
    return isinstance(data, dict) and "files" in data and "fields" in data


def _card_file(item) -> Path | None:
    """The card file that one given path names, or None for native data."""
    path = Path(item)
    if path.is_dir():
        if (path / "card.json").is_file():
            return None
        found = [path / name for name in ("card.yaml", "card.yml") if (path / name).is_file()]
        return found[0] if found else None
    suffix = path.suffix.lower()
    if suffix in CARD_SUFFIXES:
        return None if _is_native_card(path) else path
    if suffix in HDF5_SUFFIXES or not path.is_file():
        return None
    return path if _looks_like_card(path) else None


def find_card(path_or_paths) -> ExternalCard | None:
    """The dataset card that ``path_or_paths`` names, or None for native pdediff data.

    A card is a ``.yaml``/``.yml`` file, a ``.json`` file that is not a native ``card.json``,
    a file of another suffix whose content is a mapping with ``files`` and ``fields``, or a
    folder holding ``card.yaml`` (and no ``card.json``); given alone or as a one-item list.

    Raises:
        ValueError: the card cannot be read or is invalid, or it is listed beside other paths.
    """
    given = _normalise(path_or_paths)
    items = [given] if isinstance(given, (str, os.PathLike)) else given
    cards = [c for c in map(_card_file, items) if c is not None]
    if not cards:
        return None
    if len(items) > 1:
        raise ValueError(f"path_or_paths={[os.fspath(p) for p in items]!r} holds the dataset card {str(cards[0])!r} "
                         "among other paths; expected a card alone (it names its own files)")
    return ExternalCard.load(cards[0])


def _dataset_names(f: h5py.File, limit: int = 30) -> list[str]:
    names: list[str] = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            names.append(name)
        return True if len(names) >= limit else None

    f.visititems(visit)
    return names


def _select(spec, lo: int, hi: int, rows, cols, shape) -> tuple[tuple, list[str]]:
    """The h5py selection of samples ``[lo, hi)`` of a card field, and the axes it keeps (stored order)."""
    index = {axis: (i if i >= 0 else i + shape[axis]) for axis, i in spec.index}
    kept, select, names = iter(spec.axes), [], []
    for axis in range(spec.ndim):
        if axis in index:
            select.append(index[axis])
            continue
        label = next(kept)
        part = {"sample": slice(lo, hi), "y": rows, "x": cols}[label]
        select.append(part)
        if not isinstance(part, (int, np.integer)):
            names.append(label)
    return tuple(select), names


def _read_card_field(f: h5py.File, spec, lo: int, hi: int, rows=slice(None), cols=slice(None)) -> np.ndarray:
    """Samples ``[lo, hi)`` of a card field, as ``[sample, y, x]`` (less any axis an int drops)."""
    ds = f[spec.key]
    select, names = _select(spec, lo, hi, rows, cols, ds.shape)
    block = ds[select]
    return np.transpose(block, [names.index(a) for a in AXES if a in names])


def _coordinate(f: h5py.File, card: ExternalCard, axis: str, path: Path, n: int) -> np.ndarray:
    key = getattr(card.grid, axis)
    obj = f.get(key)
    if not isinstance(obj, h5py.Dataset):
        raise _Rejected(f"{card.name}: grid.{axis}={key!r}: no such dataset in {path}; datasets present: "
                        f"{_dataset_names(f)}")
    values = np.asarray(obj[()], dtype=np.float64)
    if values.shape != (n,):
        raise _Rejected(f"{card.name}: grid.{axis}={key!r} in {path} has shape {values.shape}; expected ({n},), "
                        f"one coordinate per grid point of the fields")
    steps = np.diff(values)
    if not np.all(np.isfinite(values)) or (n > 1 and not np.all(steps > 0)):
        raise _Rejected(f"{card.name}: grid.{axis}={key!r} in {path} is not finite and increasing "
                        f"(found {values[:4].tolist()}...); expected increasing coordinates")
    if n > 2 and np.ptp(steps) > 1e-3 * steps.mean():
        raise _Rejected(f"{card.name}: grid.{axis}={key!r} in {path} is not uniformly spaced (spacings "
                        f"{steps.min():g} to {steps.max():g}); expected a uniform grid")
    return values


def _inspect_card_file(card: ExternalCard, path: Path) -> tuple[FileInfo, dict, tuple | None]:
    """Check one file against its card: ``(info, constants, (x, y) or None)``."""
    where = card.name
    if not path.is_file():
        raise ValueError(f"{where}: files: {path} does not exist; expected an HDF5 file")
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: _attr(v) for k, v in f.attrs.items()}
            sizes, dtypes = {}, []
            for spec in card.fields:
                key = f"fields.{spec.name}"
                obj = f.get(spec.key)
                if not isinstance(obj, h5py.Dataset):
                    raise _Rejected(f"{where}: {key}.key={spec.key!r}: no such dataset in {path}; datasets "
                                    f"present: {_dataset_names(f)}")
                shape = obj.shape
                if len(shape) != spec.ndim:
                    extra = f" plus {len(spec.index)} indexed at axes {[a for a, _ in spec.index]}" * bool(spec.index)
                    hint = " (give an index for each extra axis)" if len(shape) > spec.ndim else ""
                    raise _Rejected(f"{where}: {key}: {spec.key!r} in {path} has shape {shape}; expected "
                                    f"{spec.ndim} axes ({list(spec.axes)}{extra}){hint}")
                for axis, i in spec.index:
                    if not -shape[axis] <= i < shape[axis]:
                        raise _Rejected(f"{where}: {key}.index: index {i} on axis {axis} is out of range for "
                                        f"{spec.key!r} of shape {shape} in {path}; expected an index in "
                                        f"[0, {shape[axis]})")
                indexed = dict(spec.index)
                kept = dict(zip(spec.axes, (shape[a] for a in range(len(shape)) if a not in indexed)))
                if kept["x"] != kept["y"]:
                    raise _Rejected(f"{where}: {key}.axes: {spec.key!r} in {path} has shape {shape}, read with "
                                    f"axes {list(spec.axes)} as sample={kept['sample']}, y={kept['y']}, "
                                    f"x={kept['x']}; expected an N x N grid (is the axis order right?)")
                if not (np.issubdtype(obj.dtype, np.floating) or np.issubdtype(obj.dtype, np.integer)):
                    raise _Rejected(f"{where}: {key}: {spec.key!r} in {path} has dtype {obj.dtype}; expected "
                                    "real numbers")
                sizes[spec.name] = (kept["sample"], kept["x"])
                dtypes.append(obj.dtype)
            if len(set(sizes.values())) > 1:
                found = ", ".join(f"{name}: {s} samples of {m} x {m}" for name, (s, m) in sizes.items())
                raise _Rejected(f"{where}: fields: the fields disagree in {path} ({found}); expected one sample "
                                "count and one N x N grid")
            count, n = next(iter(sizes.values()))
            if n < 2:
                raise _Rejected(f"{where}: fields: the grid in {path} is {n} x {n}; expected N >= 2")
            if count:
                for spec in card.fields:  # reads the last chunk: catches truncated data
                    _read_card_field(f, spec, count - 1, count)
            constants = {}
            for c in card.constants:
                if c.attribute is None:
                    constants[c.name] = c.value
                    continue
                if c.attribute not in f.attrs:
                    raise _Rejected(f"{where}: constants.{c.name}.attribute={c.attribute!r}: no such attribute in "
                                    f"{path}; attributes present: {sorted(attrs)}")
                value = np.asarray(f.attrs[c.attribute])
                if value.size != 1 or not (np.issubdtype(value.dtype, np.floating)
                                           or np.issubdtype(value.dtype, np.integer)):
                    raise _Rejected(f"{where}: constants.{c.name}.attribute={c.attribute!r} in {path} is "
                                    f"{_attr(f.attrs[c.attribute])!r}; expected one number")
                constants[c.name] = float(value.reshape(-1)[0])
            coords = None
            if card.grid.x is not None:
                coords = (_coordinate(f, card, "x", path, n), _coordinate(f, card, "y", path, n))
    except _Rejected:
        raise
    except OSError as exc:
        raise ValueError(f"{where}: files: {path} is not a readable HDF5 file ({exc}); the file may be "
                         "truncated or corrupt") from None
    except Exception as exc:  # h5py raises KeyError, RuntimeError, TypeError... on damaged files
        raise ValueError(f"{where}: files: {path} cannot be read ({type(exc).__name__}: {exc}); the file "
                         "may be corrupt") from None
    attrs["card_json"] = card.to_json()  # as native files carry theirs
    info = FileInfo(path, card.problem or "", n, count, tuple(card.field_names),
                    np.result_type(*dtypes), attrs)
    return info, constants, coords


def inspect_card(card: ExternalCard) -> tuple[list[FileInfo], list[dict], np.ndarray, np.ndarray]:
    """Check a card against all its files: ``(infos, constants per file, x, y)``.

    Raises:
        ValueError: naming the card, the key and what was found: a glob matching nothing, a
            missing HDF5 key (with the keys present), a wrong shape or axis order (with the shape
            found), an index out of range, a missing attribute, or files that disagree.
    """
    infos, constants, coords = [], [], []
    for path in card.paths():
        info, consts, xy = _inspect_card_file(card, path)
        infos.append(info)
        constants.append(consts)
        coords.append(xy)
    first = infos[0]
    for info, xy in zip(infos[1:], coords[1:]):
        if info.n != first.n:
            raise ValueError(f"{card.name}: files: {info.path} holds a {info.n} x {info.n} grid but {first.path} "
                             f"a {first.n} x {first.n} one; files read as one dataset must agree")
        if xy is not None and not all(np.allclose(a, b, rtol=1e-6, atol=1e-12) for a, b in zip(xy, coords[0])):
            raise ValueError(f"{card.name}: grid: the coordinates of {info.path} differ from those of "
                             f"{first.path}; files read as one dataset must share one grid")
    dtype = np.result_type(*(info.dtype for info in infos))
    infos = [dataclasses.replace(info, dtype=dtype) for info in infos]
    x, y = coords[0] if coords[0] is not None else (card.grid.coordinates(first.n),) * 2
    return infos, constants, x, y


def _same(a, b) -> bool:
    try:
        return bool(np.array_equal(a, b)) if isinstance(a, np.ndarray) or isinstance(b, np.ndarray) else a == b
    except Exception:
        return False


class ShardReader:
    """Reads samples by global index from one or more validated files, or from the files of a
    dataset card (fields as the card names them, transposed to ``[sample, y, x]``, constants
    filled in, indices counted within the card's ``split``).

    HDF5 handles are opened on first access in each process (and reopened after a fork), so
    a reader can be handed to DataLoader workers.

    Attributes:
        card: the :class:`~pdediff.data.cards.ExternalCard`, or None for native data.
        selection: for a card, the global indices (over its files) of the split's samples.
        x, y: coordinates of the grid points (native: the nodes ``j / (N - 1)``).
    """

    def __init__(self, path_or_paths, split: str = "train"):
        path_or_paths = _normalise(path_or_paths)
        self.split = split
        self.card = find_card(path_or_paths)
        self.constants: list[dict] | None = None
        self.selection: np.ndarray | None = None
        if self.card is None:
            self.infos = [inspect_file(p) for p in resolve_paths(path_or_paths, split)]
            _check_consistent(self.infos)
            self.x = self.y = np.linspace(0.0, 1.0, self.infos[0].n)
        else:
            if not self.card.classic:
                raise ValueError(f"{self.card.name}: this card is time-dependent, has several solutions, a "
                                 "periodic axis, a groups layout, constants by key or non-HDF5 files; read it with "
                                 "pdediff.data.read_fields and train on it with python -m pdediff.tools.fit")
            self.infos, self.constants, self.x, self.y = inspect_card(self.card)
            self._specs = {spec.name: spec for spec in self.card.fields}
        self.offsets = np.cumsum([0] + [info.count for info in self.infos])
        if self.card is not None:
            self.selection = self.card.split_indices(split, int(self.offsets[-1]))
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
        return int(self.offsets[-1]) if self.selection is None else int(self.selection.size)

    def __getstate__(self):
        return {**self.__dict__, "_handles": None, "_pid": None}

    def _files(self) -> list[h5py.File]:
        if self._handles is None or self._pid != os.getpid():
            self._handles = [h5py.File(info.path, "r") for info in self.infos]
            self._pid = os.getpid()
        return self._handles

    def _read(self, f: int, name: str, lo: int, hi: int, rows, cols) -> np.ndarray:
        if self.card is None:
            return self._files()[f][name][lo:hi, rows, cols]
        return _read_card_field(self._files()[f], self._specs[name], lo, hi, rows, cols)

    def take(self, name: str, indices, rows=slice(None), cols=slice(None)) -> np.ndarray:
        """Return ``field[indices, rows, cols]`` for a 1-D array of sample indices (of the split,
        for a card). Indices far apart are read as separate runs, not as one span."""
        flat = np.asarray(indices, dtype=np.int64).reshape(-1)
        if self.selection is not None:
            flat = self.selection[flat]
        shape = (flat.size, *np.empty((self.n, self.n))[rows, cols].shape)
        out = np.empty(shape, dtype=self.dtype)
        which = np.searchsorted(self.offsets, flat, side="right") - 1
        for f in np.unique(which):
            sel = np.flatnonzero(which == f)
            if self.constants is not None and name in self.constants[f]:
                out[sel] = self.constants[f][name]
                continue
            local = flat[sel] - self.offsets[f]
            order = np.argsort(local, kind="stable")
            ordered = local[order]
            for run in np.split(np.arange(ordered.size), np.flatnonzero(np.diff(ordered) > _READ_GAP) + 1):
                lo, hi = int(ordered[run[0]]), int(ordered[run[-1]]) + 1
                try:
                    out[sel[order[run]]] = self._read(f, name, lo, hi, rows, cols)[ordered[run] - lo]
                except (OSError, KeyError, RuntimeError) as exc:
                    raise ValueError(f"{self.infos[f].path}: cannot read {name!r} ({exc}); the file may be "
                                     "corrupt") from None
        return out

    def attrs(self) -> dict:
        """Attributes shared by all files, with ``count`` the total and the file list; for a card,
        also the card (``card``, ``card_json``), ``problem``, ``N``, ``grid``, ``split``, the field
        roles and ``note``."""
        common = {k: v for k, v in self.infos[0].attrs.items() if k not in _PER_FILE_ATTRS}
        for info in self.infos[1:]:
            common = {k: v for k, v in common.items() if _same(info.attrs.get(k), v)}
        common = {**common, "count": len(self), "files": json.dumps([str(i.path) for i in self.infos])}
        if self.card is None:
            return common
        card = self.card
        return {**common, "format": EXTERNAL_FORMAT, "card": card.name, "card_json": card.to_json(),
                "problem": card.problem or "", "N": self.n, "grid": card.grid.kind, "split": self.split,
                "condition_fields": json.dumps(card.condition_fields), "solution_field": card.solution_field,
                "note": card.note}

    def describe(self) -> dict:
        """A JSON-ready description of the data (what :func:`read_card` returns for a card)."""
        card = self.card
        if card is None:
            return DatasetCard.from_json(self.infos[0].attrs["card_json"]).to_dict()
        total = int(self.offsets[-1])
        h = float(self.x[1] - self.x[0]) if self.n > 1 else None
        return {
            "format": EXTERNAL_FORMAT,
            "problem": card.problem,
            "params": dict(card.params),
            "n": self.n,
            "h": h,
            "grid": {"kind": card.grid.kind, "n": self.n, "h": h,
                     "x": [float(self.x[0]), float(self.x[-1])], "y": [float(self.y[0]), float(self.y[-1])]},
            "fields": list(card.field_names),
            "condition_fields": list(card.condition_fields),
            "solution_field": card.solution_field,
            "dirichlet_field": card.field_of_kind("dirichlet"),
            "roles": card.roles,
            "kinds": card.kinds,
            "constants": [c.name for c in card.constants],
            "dtype": str(self.dtype),
            "count": total,
            "counts": {s: int(card.split_indices(s, total).size) for s in card.splits.names},
            "files": [str(info.path) for info in self.infos],
            "card_path": card.name,
            "note": card.note,
            "card": json.loads(card.to_json()),  # JSON-exact (index axes as strings)
        }


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
        path_or_paths: a file, a list of shard files, a glob pattern, a dataset folder, or a
            dataset card (``.yaml``/``.yml``/``.json``, see :func:`find_card`).
        split: which split to read when given a folder or a card.

    Returns:
        Variables for every field (dims ``sample, y, x``; a card's fields as it names them,
        constants included), coordinates ``sample`` (index in the split), ``y`` and ``x`` (node
        coordinates, or a card's: read from its files, from its spacing, or the unit square),
        attrs shared by the files. For a card, also ``source_index`` (dim ``sample``): each
        sample's index over the card's files, in order.
    """
    reader = ShardReader(path_or_paths, split)
    data_vars = {
        name: (("sample", "y", "x"), indexing.LazilyIndexedArray(_LazyField(reader, name)))
        for name in reader.fields
    }
    coords = {"sample": np.arange(len(reader)), "y": reader.y, "x": reader.x}
    if reader.selection is not None:
        coords["source_index"] = ("sample", reader.selection)
    return xr.Dataset(data_vars, coords=coords, attrs=reader.attrs())


def load_arrays(
    path_or_paths, fields=None, split: str = "train", dtype=np.float32, *,
    limit: int | None = None, rank: int = 0, world: int = 1,
) -> dict[str, np.ndarray]:
    """Read fields into memory as ``{name: (count, N, N) array}``.

    Args:
        path_or_paths, fields, split: as for :class:`PDEDataset`.
        dtype: output dtype (``None``: as stored).
        limit: read only the first ``limit`` samples (``None``: all); of a card's split made by
            fractions, that is a random subset (the split is in permutation order).
        rank, world: return the ``rank``-th of ``world`` contiguous, disjoint shares of
            those samples (``numpy.array_split`` sizes), for distributed training.
    """
    path_or_paths = _normalise(path_or_paths)
    if not (isinstance(world, int) and world >= 1 and isinstance(rank, int) and 0 <= rank < world):
        raise ValueError(f"rank={rank!r}, world={world!r} are not valid; expected 0 <= rank < world")
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit={limit!r} is not valid; expected None or an integer >= 0")
    reader_size = len(ShardReader(path_or_paths, split))
    chosen = np.array_split(np.arange(reader_size if limit is None else min(limit, reader_size)), world)[rank]
    return PDEDataset(path_or_paths, fields=fields, indices=chosen, split=split, dtype=dtype).read(slice(None))


def read_card(path_or_paths, split: str = "train") -> dict:
    """The dataset card of a split as a JSON-ready dict.

    Native data: the :class:`DatasetCard` (``DatasetCard.from_dict`` rebuilds it), read from the
    first file's ``card_json`` attribute, so it works for a folder, a list of shards or a single
    file alike. A dataset card: a description of the data after checking the card against its
    files (:meth:`ShardReader.describe`): ``format`` (``pdediff-external-card/1``), ``problem``,
    ``params``, ``n``, ``h``, ``grid`` (``kind`` node or cell, ``n``, ``h``, ``x``/``y`` ranges),
    ``fields``, ``condition_fields``, ``solution_field``, ``dirichlet_field``, ``roles``,
    ``kinds``, ``constants``, ``dtype``, ``count``, ``counts`` (per split), ``files``,
    ``card_path``, ``note`` and ``card`` (the card's own content; ``ExternalCard.from_dict``
    rebuilds it).
    """
    return ShardReader(path_or_paths, split).describe()


class PDEDataset(torch.utils.data.Dataset):
    """Torch dataset of generated samples, read lazily from one file or a set of shards.

    Args:
        path_or_paths: a file, a list of shard files, a glob pattern, a dataset folder, or a
            dataset card (see :func:`find_card`).
        fields: names to return (default: the condition fields and the solution field).
        indices: sample indices this dataset exposes (default: all), e.g. one rank's share in
            distributed training; for a card, indices within its ``split``.
        split: which split to read when given a folder or a card.
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
    def card(self) -> DatasetCard | ExternalCard:
        """The card stored in the first file, or the dataset card read."""
        if self.reader.card is not None:
            return self.reader.card
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
    "ExternalCard",
    "FileInfo",
    "PDEDataset",
    "ShardReader",
    "find_card",
    "inspect_card",
    "inspect_file",
    "load_arrays",
    "open_dataset",
    "read_card",
    "resolve_paths",
]
