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


def _draft(path: Path, contents) -> tuple[dict, list[str]]:
    arrays, attrs, groups, starts = contents
    notes = []
    big = [(k, s) for k, s, _ in arrays if len(s) >= 3]
    if not big:
        raise ValueError(f"{path}: no array with 3 or more dimensions (found {[(k, s) for k, s, _ in arrays]}); "
                         "expected fields stored as (sample, ..., y, x)")
    if len(groups) > 1 and all(g.isdigit() for g in groups):
        notes.append(f"{len(groups)} top-level groups named by number ({groups[0]!r} ...): one per seed or "
                     "trajectory; a card reads arrays with the samples on an axis, so only the first group's "
                     "arrays are drafted")
        big = [(k, s) for k, s in big if k.startswith(groups[0] + "/")]
    samples = Counter(s[0] for _, s in big).most_common(1)[0][0]
    fields = [(k, s) for k, s in big if s[0] == samples]
    coords = {}
    for k, s, _ in arrays:
        axis = _coordinate_axis(k)
        if axis and len(s) == 1 and axis not in coords:
            coords[axis] = (k, s[0])
    out_fields, names = {}, set()
    for key, shape in fields:
        # space: the two longest axes after the samples (the later of equals); the rest are time or channels
        kept = sorted(sorted(range(1, len(shape)), key=lambda a: (shape[a], a))[-2:])
        extra = [a for a in range(1, len(shape)) if a not in kept]
        spatial = (shape[kept[0]], shape[kept[1]])
        axes = ["sample", "x", "y"]  # PDEBench's and The Well's order; pdediff's own is [sample, y, x]
        if "x" in coords and "y" in coords and coords["x"][1] != coords["y"][1]:
            axes = ["sample", "x", "y"] if spatial == (coords["x"][1], coords["y"][1]) else ["sample", "y", "x"]
        spec: dict = {"key": key, "role": "condition", "axes": axes}
        if extra:
            spec["index"] = {a: 0 for a in extra}
            notes.append(f"{key} {shape}: axes {extra} are neither samples nor space (time, channels); the draft "
                         "reads index 0 of each")
        name = re.sub(r"\W", "_", key.split("/")[-1]).lower() or "field"
        name = name if name.isidentifier() and name not in names else f"f{len(names)}"
        names.add(name)
        out_fields[name] = spec
    solution = next((n for cand in SOLUTION_NAMES for n in out_fields
                     if n == cand or out_fields[n]["key"].split("/")[-1].lower() == cand), list(out_fields)[-1])
    out_fields[solution]["role"] = "solution"
    for n, spec in out_fields.items():
        if n != solution and (n in COEFFICIENT_NAMES or spec["key"].split("/")[-1].lower() in COEFFICIENT_NAMES):
            spec["kind"] = "coefficient"
    grid: dict = {"kind": "node"}
    if "x" in coords and "y" in coords:
        x = starts[coords["x"][0]]
        grid = {"kind": "cell" if len(x) > 1 and abs(x[0] - (x[1] - x[0]) / 2) < 1e-6 * max(1.0, abs(x[1])) else "node",
                "x": coords["x"][0], "y": coords["y"][0]}
    else:
        notes.append("no coordinate arrays found: the grid is taken as the unit square's nodes; say kind: cell "
                     "for cell centres, or give spacing")
    constants = {re.sub(r"\W", "_", k).lower(): {"attribute": k, "role": "condition"}
                 for k, v in attrs.items() if np.ndim(v) == 0 and isinstance(v.item() if hasattr(v, "item") else v, (int, float))}
    card = {"files": path.name, "fields": out_fields, "grid": grid}
    if constants:
        card["constants"] = constants
        notes.append(f"scalar attributes {sorted(constants)} drafted as constant condition fields; drop those that "
                     "are not inputs")
    card["splits"] = {"train": 0.8, "valid": 0.1, "test": 0.1, "seed": 0}
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
