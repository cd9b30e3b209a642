"""``pdediff.data.describe(path)``: look at an unknown HDF5 file, print its groups, arrays,
shapes and attributes, and a draft dataset card to start from.

    python -m pdediff.data.draft FILE.h5 [--out card.yaml]

The draft is a guess from names and shapes, to be checked: which stored axis is x and which y,
which field is the solution, each field's kind. ``ExternalCard.from_dict(draft).check()`` (or
``open_dataset``) then says, naming the key, whatever does not fit the files.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import yaml

#: Names (lower case) that usually hold the solution, best first.
SOLUTION_NAMES = ("u", "phi", "solution", "sol", "tensor", "y", "output", "target", "p", "pressure")
#: Names that usually hold a coefficient field.
COEFFICIENT_NAMES = ("a", "nu", "coeff", "coefficient", "k", "kappa", "permeability", "perm", "sigma")
_COORDINATE = re.compile(r"(?:^|[/_-])(?P<axis>[xy])(?:[-_]?coord(?:inate)?s?)?$|^(?P<axis2>[xy])[-_]?coord", re.I)


def _arrays(f: h5py.File) -> list[tuple[str, tuple[int, ...], str]]:
    found = []
    f.visititems(lambda name, obj: found.append((name, tuple(obj.shape), str(obj.dtype)))
                 if isinstance(obj, h5py.Dataset) else None)
    return found


def _coordinate_axis(name: str) -> str | None:
    m = _COORDINATE.search(name)
    return None if m is None else (m["axis"] or m["axis2"]).lower()


def _contents(path: Path) -> tuple[list, dict, list[str], dict[str, np.ndarray]]:
    """One read of the file: its arrays (key, shape, dtype), root attributes, top-level groups,
    and the first two values of every 1-D array named like a coordinate."""
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"path={str(path)!r} is not a readable HDF5 file ({exc}); expected an .h5/.hdf5 file") from None
    with f:
        arrays = _arrays(f)
        attrs = {k: f.attrs[k] for k in f.attrs}
        groups = [k for k in f if isinstance(f[k], h5py.Group)]
        starts = {k: np.asarray(f[k][:2], dtype=float) for k, s, _ in arrays if len(s) == 1 and _coordinate_axis(k)}
    return arrays, attrs, groups, starts


def draft_card(path: str | Path) -> tuple[dict, list[str]]:
    """A draft card for the HDF5 file ``path`` and the notes on what it guessed or could not read.

    Raises:
        ValueError: a file that is not HDF5, or one with no array of 3 or more dimensions.
    """
    return _draft(Path(path), _contents(Path(path)))


_TIME = re.compile(r"(?:^|[/_-])(?:t|time|times)(?:[-_]?coord(?:inate)?s?)?$", re.I)
_MAX_CHANNELS = 4  # a trailing axis this short is channels (one field each), not time or space


def _time_length(arrays, prefix: str) -> tuple[str, int] | None:
    """The first 1-D array named like a time coordinate (within ``prefix``): its key and length."""
    for k, s, _ in arrays:
        if k.startswith(prefix) and len(s) == 1 and _TIME.search(k):
            return k[len(prefix):], s[0]
    return None


def _periodic(path: Path) -> list[str]:
    """The axes The Well's ``boundary_conditions`` groups declare periodic."""
    found = []
    with h5py.File(path, "r") as f:
        bc = f.get("boundary_conditions")
        if isinstance(bc, h5py.Group):
            for name, g in bc.items():
                kind = g.attrs.get("bc_type", b"")
                kind = kind.decode() if isinstance(kind, bytes) else str(kind)
                axis = _coordinate_axis(name.replace("_periodic", "")) or name[:1]
                if kind.upper() == "PERIODIC" and axis in ("x", "y"):
                    found.append(axis)
    return sorted(set(found))


def _draft(path: Path, contents) -> tuple[dict, list[str]]:
    arrays, attrs, groups, starts = contents
    notes = []
    big = [(k, s) for k, s, _ in arrays if len(s) >= 3]
    if not big:
        raise ValueError(f"{path}: no array with 3 or more dimensions (found {[(k, s) for k, s, _ in arrays]}); "
                         "expected fields stored as (sample, ..., y, x)")
    grouped = len(groups) > 1 and all(g.isdigit() for g in groups)
    prefix = ""
    if grouped:
        notes.append(f"{len(groups)} top-level groups named by number ({groups[0]!r} ...): one sample (trajectory) "
                     "each, layout: groups; keys are within a group")
        prefix = groups[0] + "/"
        big = [(k[len(prefix):], s) for k, s in big if k.startswith(prefix)]
        fields = big
    else:
        samples = Counter(s[0] for _, s in big).most_common(1)[0][0]
        fields = [(k, s) for k, s in big if s[0] == samples]
    coords = {}
    for k, s, _ in arrays:
        axis = _coordinate_axis(k)
        if axis and len(s) == 1 and axis not in coords and k.startswith(prefix):
            coords[axis] = (k[len(prefix):], s[0])
    time = _time_length(arrays, prefix)
    out_fields, names = {}, set()
    first = 0 if grouped else 1
    for key, shape in fields:
        # space: the two longest axes after the samples (the later of equals); then time; the rest channels
        rest = range(first, len(shape))
        kept = sorted(sorted(rest, key=lambda a: (shape[a], a))[-2:])
        extra = [a for a in rest if a not in kept]
        t_axis = next((a for a in extra if time and shape[a] in (time[1], time[1] - 1)), None)
        if t_axis is None and extra and shape[extra[0]] > _MAX_CHANNELS:
            t_axis = extra[0]
        channels = [a for a in extra if a != t_axis]
        spatial = (shape[kept[0]], shape[kept[1]])
        order = ["x", "y"]  # PDEBench's and The Well's order; pdediff's own is [.., y, x]
        if "x" in coords and "y" in coords and coords["x"][1] != coords["y"][1]:
            order = ["x", "y"] if spatial == (coords["x"][1], coords["y"][1]) else ["y", "x"]
        labels = dict(zip(kept, order))
        if t_axis is not None:
            labels[t_axis] = "time"
        if not grouped:
            labels[0] = "sample"
        axes = [labels[a] for a in sorted(labels)]
        base = re.sub(r"\W", "_", key.split("/")[-1]).lower() or "field"
        split = channels[-1:] if len(channels) == 1 and shape[channels[0]] <= _MAX_CHANNELS else []
        for c in range(shape[split[0]] if split else 1):
            spec: dict = {"key": key, "role": "state" if t_axis is not None else "condition", "axes": axes}
            index = {a: 0 for a in channels}
            if split:
                index[split[0]] = c
            if index:
                spec["index"] = index
            name = f"{base}{c}" if split and shape[split[0]] > 1 else base
            name = name if name.isidentifier() and name not in names else f"f{len(names)}"
            names.add(name)
            out_fields[name] = spec
        if split and shape[split[0]] > 1:
            notes.append(f"{key} {shape}: axis {split[0]} read as {shape[split[0]]} channels, one field each")
        elif channels:
            notes.append(f"{key} {shape}: axes {channels} are neither samples, time nor space; the draft reads "
                         "index 0 of each")
    dynamic = any(spec["role"] == "state" for spec in out_fields.values())
    if not dynamic:
        solution = next((n for cand in SOLUTION_NAMES for n in out_fields
                         if n == cand or out_fields[n]["key"].split("/")[-1].lower() == cand), list(out_fields)[-1])
        out_fields[solution]["role"] = "solution"
        for n, spec in out_fields.items():
            if n != solution and (n in COEFFICIENT_NAMES or spec["key"].split("/")[-1].lower() in COEFFICIENT_NAMES):
                spec["kind"] = "coefficient"
    grid: dict = {"kind": "node"}
    if "x" in coords and "y" in coords:
        x = starts[prefix + coords["x"][0]]
        grid = {"kind": "cell" if len(x) > 1 and abs(x[0] - (x[1] - x[0]) / 2) < 1e-6 * max(1.0, abs(x[1])) else "node",
                "x": coords["x"][0], "y": coords["y"][0]}
    else:
        notes.append("no coordinate arrays found: the grid is taken as the unit square's nodes; say kind: cell "
                     "for cell centres, or give spacing")
    periodic = _periodic(path)
    if periodic:
        grid["periodic"] = periodic
        notes.append(f"boundary_conditions declare {periodic} periodic: grid.periodic")
    constants = {re.sub(r"\W", "_", k).lower(): {"attribute": k, "role": "condition"}
                 for k, v in attrs.items() if np.ndim(v) == 0 and isinstance(v.item() if hasattr(v, "item") else v, (int, float))}
    card = {"files": path.name}
    if grouped:
        card.update(layout="groups", groups=r"\d+")
    card.update(fields=out_fields, grid=grid)
    if dynamic:
        card["time"] = {"key": time[0], "step": 1, "history": 1} if time else {"step": 1, "history": 1}
        notes.append("fields with a time axis drafted as states (the model evolves them); "
                     + (f"times from {time[0]!r}" if time else "no time coordinate found: unit steps (give time.dt)"))
    if constants:
        card["constants"] = constants
        notes.append(f"scalar attributes {sorted(constants)} drafted as constant condition fields; drop those that "
                     "are not inputs")
    card["splits"] = {"train": 0.8, "valid": 0.1, "test": 0.1, "seed": 0}
    if not dynamic:
        notes.append(f"{solution!r} drafted as the solution ({out_fields[solution]['key']}); the others as conditions")
    return card, notes


def describe(path: str | Path, *, file=None) -> dict:
    """Print what the HDF5 file at ``path`` holds (every array with its shape and dtype, the
    root's attributes) and a draft card (YAML), with notes on what was guessed; return the draft.

    Raises:
        ValueError: a file that is not HDF5, or one with no array of 3 or more dimensions.
    """
    contents = _contents(Path(path))
    card, notes = _draft(Path(path), contents)
    arrays, attrs = contents[:2]
    out = file if file is not None else sys.stdout
    print(f"# {path}: {len(arrays)} arrays", file=out)
    for key, shape, dtype in arrays[:60]:
        print(f"#   {key:40s} {str(shape):24s} {dtype}", file=out)
    if len(arrays) > 60:
        print(f"#   ... and {len(arrays) - 60} more", file=out)
    for k, v in attrs.items():
        print(f"#   attribute {k} = {np.asarray(v).tolist()!r}"[:200], file=out)
    print("# draft card (check each guess):", file=out)
    for note in notes:
        print(f"#   - {note}", file=out)
    print(yaml.safe_dump(card, sort_keys=False, default_flow_style=None).rstrip(), file=out)
    return card


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="an HDF5 file")
    p.add_argument("--out", help="also write the draft card here (YAML)")
    args = p.parse_args(argv)
    try:
        card = describe(args.file)
    except ValueError as exc:
        p.exit(2, f"describe: error: {exc}\n")
    if args.out:
        import os

        from pdediff.data.atomic import write_text

        # a card's files resolve against the card's folder
        card["files"] = os.path.relpath(Path(args.file).resolve(), Path(args.out).resolve().parent)
        write_text(args.out, yaml.safe_dump(card, sort_keys=False, default_flow_style=None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
