"""Reading other people's files through a dataset card, in any layout, into one ``xarray.Dataset``.

:func:`read_fields` reads every card (:class:`~pdediff.data.cards.ExternalCard`): HDF5 arrays
with a sample axis (PDEBench Navier-Stokes, The Well), HDF5 groups of one sample each
(PDEBench diffusion-reaction and shallow water), NumPy ``.npz``, PyTorch ``.pt`` dicts of
tensors (neuraloperator; read with ``torch.load(weights_only=True)``, which refuses any object
but tensors and containers: nothing is unpickled) and netCDF through xarray. Fields come out as
``[sample, (time,) y, x]`` on any ``ny x nx`` grid, constants as ``[sample]``.

The data are read into memory (``limit`` caps the samples): the layouts it serves are the small
and mid-sized datasets models are trained on here, not archives of terabytes.

Every mismatch between a card and its files raises ``ValueError`` naming the card, the key and
what was found: a missing key (with the keys present), a wrong number of axes, an index out of
range, a time axis shorter than the step asked, channel counts or shapes that differ between
files or between groups.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import xarray as xr

from pdediff.data.cards import ALL_AXES, ExternalCard

#: File suffix -> store kind.
STORES = {".h5": "hdf5", ".hdf5": "hdf5", ".hdf": "hdf5", ".he5": "hdf5", ".npz": "npz", ".pt": "torch",
          ".pth": "torch", ".nc": "netcdf", ".nc4": "netcdf", ".cdf": "netcdf", ".zarr": "zarr"}


def store_kind(path) -> str:
    """The kind of store a file (or glob pattern) names by its suffix; ``hdf5`` when unknown."""
    return STORES.get(Path(str(path)).suffix.lower(), "hdf5")


class _Store:
    """One file as a mapping of keys to arrays (``shape``, ``dtype``, numpy indexing) and attributes."""

    def __init__(self, path: Path, card: ExternalCard):
        self.path, self.card, self.kind = path, card, store_kind(path)
        self._file = None
        try:
            if self.kind == "hdf5":
                import h5py

                self._file = h5py.File(path, "r")
                self.arrays = self._file
                self.attrs = dict(self._file.attrs)
            elif self.kind == "npz":
                self._file = np.load(path, allow_pickle=False)
                self.arrays, self.attrs = self._file, {}
            elif self.kind == "torch":
                import torch

                data = torch.load(path, map_location="cpu", weights_only=True)
                if not isinstance(data, dict):
                    raise ValueError(f"{card.name}: files: {path} holds a {type(data).__name__}; expected a "
                                     "dict of tensors (neuraloperator's layout: {'x': ..., 'y': ...})")
                self.arrays = {str(k): np.asarray(v) for k, v in data.items() if hasattr(v, "shape")}
                self.attrs = {str(k): v for k, v in data.items() if not hasattr(v, "shape")}
            else:  # netcdf, zarr: through xarray, stored dimension order kept
                engine = "zarr" if self.kind == "zarr" else None
                self._file = xr.open_dataset(path, engine=engine, decode_times=False)
                self.arrays = {str(k): v for k, v in {**self._file.coords, **self._file.data_vars}.items()}
                self.attrs = dict(self._file.attrs)
        except ValueError:
            raise
        except ImportError as exc:
            raise ValueError(f"{card.name}: files: {path} needs a package this install lacks ({exc}); install it "
                             "or convert the file to HDF5 or .npz") from None
        except Exception as exc:  # corrupt files: h5py, numpy, torch and xarray raise many types
            raise ValueError(f"{card.name}: files: {path} cannot be read as {self.kind} ({type(exc).__name__}: "
                             f"{exc}); the file may be truncated or corrupt") from None

    def close(self):
        if self._file is not None and hasattr(self._file, "close"):
            self._file.close()

    def keys(self, group: str | None = None) -> list[str]:
        if self.kind == "hdf5":
            import h5py

            root = self._file if group is None else self._file[group]
            names = []
            root.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
            return names[:40]
        return sorted(self.arrays)[:40]

    def groups(self) -> list[str]:
        """The sample groups of a ``groups`` layout, sorted by name."""
        if self.kind != "hdf5":
            raise ValueError(f"{self.card.name}: layout: 'groups' needs HDF5 files; {self.path} is {self.kind}")
        pattern = re.compile(self.card.groups)
        names = sorted(k for k in self._file if pattern.fullmatch(k) and hasattr(self._file[k], "keys"))
        if not names:
            raise ValueError(f"{self.card.name}: groups: no group of {self.path} matches {self.card.groups!r}; "
                             f"top-level keys present: {sorted(self._file)[:20]}")
        return names

    def get(self, key: str, where: str, group: str | None = None):
        full = key if group is None else f"{group}/{key}"
        obj = self.arrays.get(full) if self.kind != "hdf5" else self._file.get(full)
        if obj is None or not hasattr(obj, "shape"):
            raise ValueError(f"{self.card.name}: {where}={key!r}: no such array in {self.path}"
                             f"{f' (group {group!r})' if group else ''}; arrays present: {self.keys(group)}")
        return obj


def _numeric(card, where, key, path, obj):
    dtype = np.dtype(obj.dtype)
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise ValueError(f"{card.name}: {where}: {key!r} in {path} has dtype {dtype}; expected real numbers")


def _field_array(card, spec, store: _Store, group: str | None, limit: int | None) -> np.ndarray:
    """One field of one file (or group), as ``[sample, (time,) y, x]`` (no sample axis in a group)."""
    where = f"fields.{spec.name}"
    obj = store.get(spec.key, f"{where}.key", group)
    shape = tuple(obj.shape)
    _numeric(card, where, spec.key, store.path, obj)
    if len(shape) != spec.ndim:
        extra = f" plus {len(spec.index)} indexed at axes {[a for a, _ in spec.index]}" * bool(spec.index)
        hint = " (give an index for each extra axis)" if len(shape) > spec.ndim else ""
        raise ValueError(f"{card.name}: {where}: {spec.key!r} in {store.path}{f' group {group!r}' * bool(group)} "
                         f"has shape {shape}; expected {spec.ndim} axes ({list(spec.axes)}{extra}){hint}")
    index = dict(spec.index)
    for axis, i in spec.index:
        if not -shape[axis] <= i < shape[axis]:
            raise ValueError(f"{card.name}: {where}.index: index {i} on axis {axis} is out of range for "
                             f"{spec.key!r} of shape {shape} in {store.path}; expected an index in [0, {shape[axis]}) "
                             f"(a channel count that differs between files?)")
    kept = iter(spec.axes)
    select, names = [], []
    for axis in range(len(shape)):
        if axis in index:
            select.append(index[axis])
            continue
        label = next(kept)
        names.append(label)
        select.append(slice(0, limit) if label == "sample" and limit is not None else slice(None))
    block = np.asarray(obj[tuple(select)] if store.kind != "netcdf" else obj.values[tuple(select)])
    return np.transpose(block, [names.index(a) for a in ALL_AXES if a in names])


def _constant(card, c, store: _Store, group: str | None, count: int) -> np.ndarray:
    """A constant of one file (or group) as ``[count]``."""
    where = f"constants.{c.name}"
    if c.value is not None:
        return np.full(count, c.value)
    if c.attribute is not None:
        attrs = store.attrs if group is None else dict(store._file[group].attrs)
        if c.attribute not in attrs:
            raise ValueError(f"{card.name}: {where}.attribute={c.attribute!r}: no such attribute in {store.path}; "
                             f"attributes present: {sorted(attrs)}")
        value = np.asarray(attrs[c.attribute])
    else:
        obj = store.get(c.key, f"{where}.key", group)
        _numeric(card, where, c.key, store.path, obj)
        value = np.asarray(obj[()] if store.kind != "netcdf" else obj.values)
    if value.size == 1:
        return np.full(count, float(value.reshape(-1)[0]))
    if value.shape == (count,) or (value.ndim == 1 and value.size >= count and group is None):
        return value[:count].astype(np.float64)
    raise ValueError(f"{card.name}: {where}: found shape {value.shape} in {store.path}; expected one number per "
                     f"file or one per sample ({count},)")


def _coordinate(card, store: _Store, key: str, where: str, n: int, group: str | None = None) -> np.ndarray:
    obj = store.get(key, where, group)
    values = np.asarray(obj[()] if store.kind != "netcdf" else obj.values, dtype=np.float64)
    if where == "time.key":
        if values.ndim == 2:  # one row of times per sample: the first
            values = values[0]
        if values.shape == (n + 1,):  # PDEBench's t-coordinate holds one more time than its fields
            values = values[:n]
    if values.shape != (n,):
        raise ValueError(f"{card.name}: {where}={key!r} in {store.path} has shape {values.shape}; expected ({n},), "
                         "one coordinate per grid point (or time) of the fields")
    if not np.all(np.isfinite(values)) or (n > 1 and not np.all(np.diff(values) > 0)):
        raise ValueError(f"{card.name}: {where}={key!r} in {store.path} is not finite and increasing (found "
                         f"{values[:4].tolist()}...); expected increasing coordinates")
    return values


def _read_file(card: ExternalCard, path: Path, limit: int | None):
    store = _Store(path, card)
    try:
        if card.layout == "groups":
            per_group = []
            groups = store.groups()[:limit] if limit is not None else store.groups()
            for g in groups:
                fields = {s.name: _field_array(card, s, store, g, None) for s in card.fields}
                consts = {c.name: _constant(card, c, store, g, 1) for c in card.constants}
                per_group.append((g, fields, consts))
            first_g, first, _ = per_group[0] if per_group else (None, {}, {})
            for g, fields, _ in per_group[1:]:
                for name, value in fields.items():
                    if value.shape != first[name].shape:
                        key = next(s.key for s in card.fields if s.name == name)
                        raise ValueError(f"{card.name}: fields.{name}.key={key!r}: group {g!r} of {path} holds shape "
                                         f"{value.shape} but group {first_g!r} {first[name].shape}; expected groups "
                                         "of one shape")
            fields = {s.name: np.stack([f[s.name] for _, f, _ in per_group]) if per_group else
                      np.zeros((0,)) for s in card.fields}
            consts = {c.name: np.concatenate([k[c.name] for _, _, k in per_group]) if per_group else np.zeros(0)
                      for c in card.constants}
        else:
            fields = {s.name: _field_array(card, s, store, None, limit) for s in card.fields}
            counts = {name: v.shape[0] for name, v in fields.items()}
            if len(set(counts.values())) > 1:
                raise ValueError(f"{card.name}: fields: the fields disagree on the number of samples in {path} "
                                 f"({counts}); expected one sample count")
            count = next(iter(counts.values()))
            consts = {c.name: _constant(card, c, store, None, count) for c in card.constants}
        spatial = {name: v.shape[-2:] for name, v in fields.items() if v.ndim >= 3}
        if len(set(spatial.values())) > 1:
            raise ValueError(f"{card.name}: fields: the fields disagree on the grid in {path} ({spatial}); expected "
                             "one ny x nx grid (is each field's axis order right?)")
        times = {name: v.shape[1] for name, v in fields.items() if v.ndim == 4}
        if len(set(times.values())) > 1:
            raise ValueError(f"{card.name}: fields: the fields disagree on the time axis in {path} ({times}); "
                             "expected one number of times")
        ny, nx = next(iter(spatial.values())) if spatial else (0, 0)
        coords = {}
        group = store.groups()[0] if card.layout == "groups" else None  # a group's coordinates: the first's
        if card.grid.x is not None:
            coords = {"x": _coordinate(card, store, card.grid.x, "grid.x", nx, group),
                      "y": _coordinate(card, store, card.grid.y, "grid.y", ny, group)}
        if card.time is not None and card.time.key is not None and times:
            coords["time"] = _coordinate(card, store, card.time.key, "time.key", next(iter(times.values())), group)
        shapes = {s.name: tuple(store.get(s.key, f"fields.{s.name}.key", store.groups()[0] if
                                          card.layout == "groups" else None).shape) for s in card.fields}
    finally:
        store.close()
    return fields, consts, coords, shapes


def _kept(spec, shape: tuple) -> dict:
    """The sizes of a field's kept axes other than the sample axis, by label."""
    labels = iter(spec.axes)
    sizes = {next(labels): n for i, n in enumerate(shape) if i not in dict(spec.index)}
    sizes.pop("sample", None)
    return sizes


def read_fields(card, split: str | None = "train", limit: int | None = None, dtype=np.float32) -> xr.Dataset:
    """Read a card's data (its ``split``; ``None``: every sample) into memory.

    Args:
        card: an :class:`~pdediff.data.cards.ExternalCard` or the path of a card file.
        split: a split of the card's ``splits`` (``None``: all samples in file order).
        limit: read at most this many samples of each file (``None``: all).
        dtype: the fields' dtype.

    Returns:
        An ``xarray.Dataset``: each field with dims ``(sample, time, y, x)`` (time-dependent) or
        ``(sample, y, x)``, each constant ``(sample,)``; coordinates ``sample`` (index in the
        split), ``source_index`` (index over the card's files), ``y``, ``x`` and ``time``; attrs
        ``card_json``, ``roles`` (JSON), ``periodic`` (JSON list), ``grid``, ``files``.

    Raises:
        ValueError: naming the card, the key and what was found (see the module docstring).
    """
    if not isinstance(card, ExternalCard):
        card = ExternalCard.load(card)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit={limit!r} is not valid; expected None or an integer >= 0")
    parts = [(p, *_read_file(card, p, limit)) for p in card.paths()]
    first_path, first_fields, _, first_coords, first_shapes = parts[0]
    for path, fields, _, coords, shapes in parts[1:]:
        for spec in card.fields:
            a, b = first_shapes[spec.name], shapes[spec.name]
            kept_a, kept_b = _kept(spec, a), _kept(spec, b)
            channels_a = [a[i] for i, _ in spec.index]
            channels_b = [b[i] for i, _ in spec.index]
            if channels_a != channels_b:
                raise ValueError(f"{card.name}: fields.{spec.name}.key={spec.key!r}: {path} holds {channels_b} "
                                 f"channel(s) on axes {[i for i, _ in spec.index]} but {first_path} holds {channels_a}; "
                                 "files read as one dataset must have one channel count")
            if kept_a != kept_b:
                raise ValueError(f"{card.name}: fields.{spec.name}.key={spec.key!r}: {path} has shape {b} but "
                                 f"{first_path} {a}; files read as one dataset must share one grid and time axis")
        for axis in ("x", "y", "time"):
            if axis in coords and not np.allclose(coords[axis], first_coords[axis], rtol=1e-6, atol=1e-12):
                raise ValueError(f"{card.name}: the {axis} coordinates of {path} differ from those of {first_path}; "
                                 "files read as one dataset must share one grid")
    names = [s.name for s in card.fields]
    data = {name: np.concatenate([p[1][name] for p in parts]) for name in names}
    consts = {c.name: np.concatenate([p[2][c.name] for p in parts]) for c in card.constants}
    total = next(iter(data.values())).shape[0]
    shape = next((v.shape for v in data.values() if v.ndim >= 3), None)
    if shape is None or min(shape[-2:]) < 2:
        raise ValueError(f"{card.name}: fields: found a grid of shape {None if shape is None else shape[-2:]}; "
                         "expected at least 2 x 2 points")
    ny, nx = shape[-2:]
    timed = [s for s in card.fields if s.timed]
    nt = data[timed[0].name].shape[1] if timed else 0
    if timed and card.time is not None:
        need = card.time.step + card.time.history
        if nt < need:
            raise ValueError(f"{card.name}: time.step: asked step={card.time.step} with history={card.time.history}, "
                             f"but the time axis of fields.{timed[0].name} (key {timed[0].key!r}) has {nt} point(s); "
                             f"expected at least {need}")
    selection = np.arange(total) if split is None else card.split_indices(split, total)
    if limit == 0:
        selection = selection[:0]
    coords = {"sample": np.arange(selection.size), "source_index": ("sample", selection),
              "x": first_coords.get("x", card.grid.coordinates(nx)),
              "y": first_coords.get("y", card.grid.coordinates(ny))}
    if timed:
        dt = card.time.dt if card.time is not None and card.time.dt is not None else 1.0
        coords["time"] = first_coords.get("time", np.arange(nt) * dt)
    variables = {}
    for spec in card.fields:
        dims = ("sample", "time", "y", "x") if spec.timed else ("sample", "y", "x")
        variables[spec.name] = (dims, data[spec.name][selection].astype(dtype, copy=False))
    for c in card.constants:
        variables[c.name] = (("sample",), consts[c.name][selection].astype(dtype, copy=False))
    attrs = {"card": card.name, "card_json": card.to_json(), "roles": json.dumps(card.roles),
             "periodic": json.dumps(list(card.grid.periodic)), "grid": card.grid.kind,
             "files": json.dumps([str(p[0]) for p in parts]), "split": str(split), "note": card.note}
    return xr.Dataset(variables, coords=coords, attrs=attrs)


__all__ = ["STORES", "read_fields", "store_kind"]
