"""Checkpoints: weights in safetensors with the run's metadata as embedded JSON.

A checkpoint holds named tensor groups (``model.*``, ``ema.*``, ``optim.*``, ``rng.*``) and one
JSON document under the safetensors metadata key ``pdediff`` (config, normalisation, dataset
card, step, ...). Loading parses the safetensors header and JSON only: nothing in the file is
ever executed or unpickled.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from pdediff.data.atomic import atomic_path

FORMAT = "pdediff-checkpoint"
FORMAT_VERSION = 1
META_KEY = "pdediff"
#: Bounds on the JSON metadata: a real checkpoint's is a few kB, nested a few levels deep.
MAX_META_BYTES = 16_000_000
MAX_META_DEPTH = 64


def _depth(doc) -> int:
    """Nesting depth of a parsed JSON document (iterative: no recursion on hostile input)."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def save_checkpoint(path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write ``tensors`` and ``meta`` to ``path`` atomically (temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta}
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata={META_KEY: json.dumps(doc, sort_keys=True)})
    return path


def read_metadata(path) -> dict:
    """Return the JSON metadata of a pdediff checkpoint without reading its tensors.

    Raises:
        ValueError: the file is missing, truncated, or not a pdediff checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint={str(path)!r} does not exist; expected a .safetensors file")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ValueError(f"checkpoint={str(path)!r} is too short to be a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n <= 0 or 8 + n > size or n > 100_000_000:
            raise ValueError(
                f"checkpoint={str(path)!r} is not a safetensors file or is truncated "
                f"(header of {n} bytes in a file of {size} bytes)"
            )
        try:
            header = json.loads(fh.read(n))
            ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
            if not isinstance(header.get("__metadata__") or {}, dict) or not all(isinstance(e, int) for e in ends):
                raise TypeError("__metadata__ is not a mapping or offsets are not integers")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError, TypeError, IndexError,
                RecursionError):
            raise ValueError(f"checkpoint={str(path)!r} has a corrupt safetensors header") from None
    if ends and 8 + n + max(ends) > size:
        raise ValueError(
            f"checkpoint={str(path)!r} is truncated: {size} bytes, expected {8 + n + max(ends)}"
        )
    meta = (header.get("__metadata__") or {}).get(META_KEY)
    if meta is None:
        raise ValueError(
            f"checkpoint={str(path)!r} is a safetensors file but not a pdediff checkpoint "
            f"(no {META_KEY!r} metadata)"
        )
    if isinstance(meta, str) and len(meta) > MAX_META_BYTES:
        raise ValueError(f"checkpoint={str(path)!r} has {len(meta):,} characters of {META_KEY!r} metadata; "
                         f"expected at most {MAX_META_BYTES:,}")
    try:
        doc = json.loads(meta)
    except (json.JSONDecodeError, TypeError):
        raise ValueError(f"checkpoint={str(path)!r} has corrupt {META_KEY!r} metadata (not JSON)") from None
    except RecursionError:
        raise ValueError(f"checkpoint={str(path)!r} has {META_KEY!r} metadata nested too deeply to parse; "
                         f"expected at most {MAX_META_DEPTH} levels") from None
    if _depth(doc) > MAX_META_DEPTH:
        raise ValueError(f"checkpoint={str(path)!r} has {META_KEY!r} metadata nested {_depth(doc)} levels deep; "
                         f"expected at most {MAX_META_DEPTH}")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ValueError(f"checkpoint={str(path)!r} has format {found!r}; expected {FORMAT!r}")
    version = doc.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f"checkpoint={str(path)!r} has format_version {version!r}; expected an integer")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"checkpoint={str(path)!r} has format_version {doc['format_version']}; this pdediff "
            f"reads up to {FORMAT_VERSION}: upgrade pdediff"
        )
    return doc


def load_checkpoint(path, device="cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """Return ``(tensors, meta)`` of a pdediff checkpoint (validated, never unpickled)."""
    meta = read_metadata(path)
    try:
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"checkpoint={str(path)!r} could not be read: {exc}") from None
    return tensors, meta


def group(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under ``prefix.`` with the prefix removed."""
    p = prefix + "."
    return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}


def prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in tensors.items()}
