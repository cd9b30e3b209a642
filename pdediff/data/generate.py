"""Dataset generation: random conditions, batched exact solves, sharded resumable HDF5 files.

Sample ``k`` of a split draws its source from ``SeedSequence([seed, split_index, k, 0])`` and
its boundary data from ``SeedSequence([seed, split_index, k, 1])``, so it depends on nothing
else: not on the worker count, the shard, or where an interrupted run resumed. Samples are
computed in fixed blocks (:func:`default_block_size`, aligned to multiples of the block size
in the split's global index), solved with the problem's ``fast_solve`` (or
``reference_solve``) and written one block at a time to ``<name>.h5.partial``; the attribute
``completed`` is updated after each flushed block, and the file is renamed to its final name
only when complete. A resumed file is rewritten once when complete, in the order of an
uninterrupted run, so that its bytes too equal those of an uninterrupted run.

A run holds an exclusive lock on ``.lock`` in the output folder (``.lock-KKKKK-of-MMMMM`` for
shard K of M) from before it touches any output until it ends, so that a second run on the
same output is refused instead of truncating the first one's files; the lock file holds the
pid of its owner and is removed on exit.

The file layout is documented in ``datasets/README.md``.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import itertools
import json
import multiprocessing
import os
import signal
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

import pdediff
from pdediff.data import atomic
from pdediff.data.cards import DTYPES, FORMAT, SPLITS, DatasetCard  # noqa: F401 (re-exported)
from pdediff.physics.coefficients import get_coefficient
from pdediff.physics.problems import COEFFICIENT, DEFAULT_PROBLEM, DIRICHLET, SOURCE, Grid, Problem, get_problem
from pdediff.physics.sources import Family, get_boundary, get_source

BLOCK_ELEMENTS = 2**20  # nodes per field per block: 256 samples at N = 64
COMPRESSION = {"compression": "gzip", "compression_opts": 1, "shuffle": True}



@dataclass(frozen=True)
class SplitResult:
    """Outcome of :func:`generate_split`: the final file, its samples, and how many this call computed."""

    path: Path
    count: int
    computed: int


@dataclass(frozen=True)
class Block:
    """One unit of work: samples ``[start, stop)`` of a split (picklable, sent to workers)."""

    problem: str
    n: int
    source: str
    boundary: str
    seed: int
    split_index: int
    start: int
    stop: int
    coefficient: str = ""
    params: tuple = ()  # the problem's parameters as (name, value) pairs


# ---------------------------------------------------------------------------- helpers
def default_block_size(n: int) -> int:
    """Samples per block: ``BLOCK_ELEMENTS / N^2`` clipped to [1, 256] (256 at N = 64)."""
    return int(np.clip(BLOCK_ELEMENTS // n**2, 1, 256))


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``"K/M"`` into ``(K, M)`` with ``0 <= K < M``."""
    try:
        index, count = (int(part) for part in str(text).split("/"))
    except ValueError:
        index, count = -1, 0
    if not 0 <= index < count:
        raise ValueError(f"shard={text!r} is not valid; expected K/M with 0 <= K < M, e.g. 3/8")
    return index, count


def split_filename(split: str, shard: tuple[int, int] = (0, 1)) -> str:
    """``train.h5`` for an unsharded split, else ``train-00003-of-00008.h5``."""
    index, count = shard
    return f"{split}.h5" if count == 1 else f"{split}-{index:05d}-of-{count:05d}.h5"


def shard_range(count: int, shard: tuple[int, int]) -> tuple[int, int]:
    """Global sample range ``[K count // M, (K + 1) count // M)`` held by shard K of M."""
    index, shards = shard
    return index * count // shards, (index + 1) * count // shards


#: The random stream of each role (sample k's field draws from SeedSequence([seed, split, k, stream]));
#: a second field of the same role would take 3 + its position.
STREAMS = {SOURCE: 0, DIRICHLET: 1, COEFFICIENT: 2}


def field_families(problem: Problem, source: str | None, boundary: str | None,
                   coefficient: str | None) -> dict[str, tuple[Family, int]]:
    """The family and random stream of each condition field, by role (None: the problem's default).

    Raises:
        ValueError: an unknown family, or a family given for a role the problem lacks.
    """
    given = {SOURCE: source, DIRICHLET: boundary, COEFFICIENT: coefficient}
    lookups = {SOURCE: get_source, DIRICHLET: get_boundary, COEFFICIENT: get_coefficient}
    roles = {spec.role for spec in problem.fields}
    for role, argument in ((COEFFICIENT, "coefficient"), (DIRICHLET, "boundary")):
        if role not in roles and given[role] not in (None, "", "zero"):
            raise ValueError(f"{argument}={given[role]!r}: problem {problem.name!r} has no {role} field "
                             f"({list(problem.condition_fields)}); leave it out")
    out, seen = {}, set()
    for position, spec in enumerate(problem.fields):
        stream = STREAMS[spec.role] if spec.role not in seen else 3 + position
        seen.add(spec.role)
        out[spec.name] = (lookups[spec.role](given[spec.role] or spec.family), stream)
    return out


def convention_text(problem: Problem) -> str:
    """The grid and field convention stored in every card."""
    text = (
        "N x N nodes on [0, 1]^2 including the boundary, h = 1 / (N - 1); array index [i, j] "
        f"is node (x_j, y_i). {problem.solution_field} solves problem {problem.name!r} given "
        f"{', '.join(problem.condition_fields)}."
    )
    if problem.dirichlet_field:
        text += (
            f" {problem.dirichlet_field} holds Dirichlet data on the boundary ring and zeros at "
            f"interior nodes; {problem.solution_field} equals it on the ring."
        )
    return text


def sample_rngs(seed: int, split_index: int, start: int, stop: int, stream: int) -> list[np.random.Generator]:
    """One generator per sample ``k`` in ``[start, stop)``: ``SeedSequence([seed, split_index, k, stream])``."""
    return [np.random.default_rng(np.random.SeedSequence([seed, split_index, k, stream])) for k in range(start, stop)]


def compute_block(block: Block) -> dict[str, np.ndarray]:
    """Draw and solve one block of samples; returns float64 ``{field: (B, N, N)}``."""
    problem = get_problem(block.problem, **dict(block.params))
    grid = problem.grid(block.n)
    span = (block.seed, block.split_index, block.start, block.stop)
    families = field_families(problem, block.source, block.boundary, block.coefficient)
    fields = {name: family.sample(grid, sample_rngs(*span, stream=stream))
              for name, (family, stream) in families.items()}
    fields[problem.solution_field] = problem.exact_solve(*(fields[name] for name in problem.condition_fields))
    return fields


def _init_worker() -> None:
    """Pool initializer: workers ignore Ctrl-C, which reaches the whole process group.

    The parent alone handles it (and terminates the pool); a worker interrupted while
    sending a result would leave the pool hanging on a truncated message.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _blocks_in_order(blocks: list[Block], workers: int):
    """Yield computed blocks in order; with workers > 1 at most 2 * workers are in flight.

    Closing the generator (or an exception in it, e.g. ``KeyboardInterrupt``) terminates the pool.
    """
    if workers == 1:
        yield from map(compute_block, blocks)
        return
    with multiprocessing.get_context().Pool(workers, initializer=_init_worker) as pool:
        todo = iter(blocks)
        pending = collections.deque(pool.apply_async(compute_block, (b,)) for b in itertools.islice(todo, 2 * workers))
        while pending:
            result = pending.popleft().get()
            following = next(todo, None)
            if following is not None:
                pending.append(pool.apply_async(compute_block, (following,)))
            yield result


# ---------------------------------------------------------------------------- the lock
_HELD_LOCKS: set[int] = set()  # descriptors of the locks this process holds


def _close_held_locks() -> None:
    """In a forked child: drop the inherited lock descriptors (the parent keeps the locks)."""
    for fd in _HELD_LOCKS:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD_LOCKS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_held_locks)


def lock_filename(shard: tuple[int, int] = (0, 1)) -> str:
    """``.lock`` for an unsharded run, else ``.lock-00003-of-00008``."""
    index, count = shard
    return ".lock" if count == 1 else f".lock-{index:05d}-of-{count:05d}"


@contextlib.contextmanager
def output_lock(out_dir: str | os.PathLike, shard: tuple[int, int] = (0, 1)):
    """Hold an exclusive lock on the output of shard ``shard`` in ``out_dir`` (which must exist).

    ``fcntl.flock`` on :func:`lock_filename` in ``out_dir``, which holds the owner's pid; the
    file is removed on exit. The kernel releases the lock of a killed process; the stale file
    left behind is reused by the next run.

    Raises:
        ValueError: another process (or another open of the lock in this one) holds it.
    """
    path = Path(out_dir) / lock_filename(shard)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                os.close(fd)  # a filesystem without flock: go on unlocked, as before locks existed
                warnings.warn(
                    f"{path}: cannot lock ({exc.strerror}); concurrent runs on out={str(out_dir)!r} are not detected"
                )
                yield path
                return
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ValueError(
                f"out={str(out_dir)!r} is being written by another generate_data.py run (pid {holder}, "
                f"lock {path}); wait for it to finish or choose another --out"
            ) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # its owner removed the file as we opened it: lock the new one
    _HELD_LOCKS.add(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        _HELD_LOCKS.discard(fd)
        os.close(fd)


# ---------------------------------------------------------------------------- one split
def _file_attrs(card: DatasetCard, split: str, shard: tuple[int, int]) -> dict:
    start, stop = shard_range(card.counts[split], shard)
    return {
        "format": FORMAT,
        "problem": card.problem,
        "N": card.n,
        "h": card.h,
        "source": card.source,
        "boundary": card.boundary,
        "seed": card.seed,
        "split": split,
        "shard": f"{shard[0]}/{shard[1]}",
        "shard_index": shard[0],
        "start": start,
        "count": stop - start,
        "dtype": card.dtype,
        "block_size": card.block_size,
        "condition_fields": json.dumps(card.condition_fields),
        "solution_field": card.solution_field,
        "params_json": json.dumps({"source": card.source_params, "boundary": card.boundary_params,
                                   **({"coefficient": card.coefficient_params} if card.coefficient else {}),
                                   **({"problem": card.params} if card.params else {})}, sort_keys=True),
        "card_json": card.to_json(),
        "version": card.version,
    }


def _block_spans(start: int, stop: int, first: int, size: int) -> list[tuple[int, int]]:
    """Sample ranges of the blocks from ``first`` to ``stop``, aligned to multiples of ``size``."""
    edges = [first, *range((first // size + 1) * size, stop, size), stop]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _create_file(path: Path, card: DatasetCard, attrs: dict) -> h5py.File:
    """Create an empty split file (``completed = 0``) and return it open for writing."""
    f = h5py.File(path, "w")
    for name in card.fields:
        f.create_dataset(
            name, shape=(attrs["count"], card.n, card.n), maxshape=(None, card.n, card.n),
            chunks=(1, card.n, card.n), dtype=card.dtype, **COMPRESSION,
        )
    f.attrs.update({**attrs, "completed": 0})
    f.flush()
    return f


def _write_block(f: h5py.File, card: DatasetCard, rows: slice, arrays: dict[str, np.ndarray]) -> None:
    """Write one block's rows of every field, then mark them completed and flush."""
    for name in card.fields:
        f[name][rows] = arrays[name].astype(card.dtype)
    f.attrs["completed"] = rows.stop
    f.flush()


def _rewrite(partial: Path, card: DatasetCard, attrs: dict) -> None:
    """Write a finished, resumed ``partial`` afresh, block by block as an uninterrupted run does.

    Reopening an HDF5 file moves its metadata, so a resumed file holds the same arrays as an
    uninterrupted run but other bytes; replaying the writes makes the files byte-identical.
    The rewrite replaces ``partial`` atomically: an interrupted rewrite leaves it as it was.
    """
    start = attrs["start"]
    with atomic.atomic_path(partial, suffix=".tmp") as tmp:
        with h5py.File(partial, "r") as src, _create_file(tmp, card, attrs) as f:
            for a, b in _block_spans(start, start + attrs["count"], start, card.block_size):
                rows = slice(a - start, b - start)
                _write_block(f, card, rows, {name: src[name][rows] for name in card.fields})


def _same_run(path: Path, attrs: dict) -> None:
    """Raise unless the file at ``path`` was written with the same attributes."""
    try:
        with h5py.File(path, "r") as f:
            differ = sorted(k for k, v in attrs.items() if f.attrs.get(k) != v)
    except OSError as exc:
        if "lock" in str(exc).lower():  # HDF5's own file lock: a live writer that is not ours
            raise ValueError(f"{path}: cannot be resumed, another process has it open ({exc})") from None
        raise ValueError(f"{path}: cannot be resumed ({exc}); rerun with --overwrite") from None
    if differ:
        raise ValueError(
            f"{path}: cannot resume, the file was written with different settings "
            f"(attributes {differ} differ); rerun with --overwrite"
        )


def generate_split(
    card: DatasetCard,
    split: str,
    out_dir: str | os.PathLike,
    *,
    shard: tuple[int, int] = (0, 1),
    workers: int = 1,
    resume: bool = False,
    overwrite: bool = False,
    callback: Callable[[dict], None] | None = None,
) -> SplitResult:
    """Generate shard ``shard`` of one split described by ``card`` into ``out_dir``.

    Args:
        card: the dataset description (problem, N, source, boundary, seed, counts, dtype).
        split: one of ``card.counts``.
        shard: ``(K, M)``: write samples :func:`shard_range` of the split.
        workers: processes computing blocks (the result does not depend on it).
        resume: continue ``<file>.partial`` from its last flushed block (and rewrite it once
            complete, see :func:`_rewrite`); a complete final file from the same settings is
            kept as is.
        overwrite: replace existing output.
        callback: called with ``{"split", "event", "done", "total"}`` once at the start
            (``event="start"``) and after each flushed block (``event="block"``).

    Returns:
        The final path, the shard's sample count, and the samples computed by this call.

    Raises:
        FileExistsError: output (or a partial file) exists and neither flag allows it.
        ValueError: a partial or final file to resume has different settings, or another
            run holds the output's lock (:func:`output_lock`).
    """
    with output_lock(out_dir, shard):
        return _generate_split(
            card, split, out_dir, shard=shard, workers=workers, resume=resume,
            overwrite=overwrite, callback=callback,
        )


def _generate_split(card, split, out_dir, *, shard, workers, resume, overwrite, callback) -> SplitResult:
    """:func:`generate_split` with the output's lock already held."""
    final = Path(out_dir) / split_filename(split, shard)
    partial = final.with_name(final.name + ".partial")
    attrs = _file_attrs(card, split, shard)
    count = attrs["count"]
    if final.exists() and not overwrite:
        if not resume:
            raise FileExistsError(f"{final} exists; pass --overwrite to replace it or --resume to keep it")
        _same_run(final, attrs)
        return SplitResult(final, count, 0)
    if partial.exists() and not (resume or overwrite):
        raise FileExistsError(
            f"{partial} is left from an interrupted run; pass --resume to continue it or --overwrite to restart"
        )
    resumed = partial.exists() and resume
    if resumed:
        _same_run(partial, attrs)
        f = h5py.File(partial, "r+")
    else:
        f = _create_file(partial, card, attrs)
    with f:
        done = int(f.attrs["completed"])
        start = attrs["start"]
        blocks = [
            Block(card.problem, card.n, card.source, card.boundary, card.seed, card.split_index[split], a, b,
                  card.coefficient, tuple(sorted(card.params.items())))
            for a, b in _block_spans(start, start + count, start + done, card.block_size)
        ]
        if callback:
            callback({"split": split, "event": "start", "done": done, "total": count})
        # closing the generator on any exit (Ctrl-C included) stops the workers
        with contextlib.closing(_blocks_in_order(blocks, workers)) as computed:
            for block, arrays in zip(blocks, computed):
                rows = slice(block.start - start, block.stop - start)
                _write_block(f, card, rows, arrays)
                if callback:
                    callback({"split": split, "event": "block", "done": rows.stop, "total": count})
    if resumed:
        _rewrite(partial, card, attrs)
    atomic.commit(partial, final)
    return SplitResult(final, count, count - done)


# ---------------------------------------------------------------------------- a dataset
def make_card(
    problem: str = DEFAULT_PROBLEM,
    n: int = 64,
    count: int = 1000,
    *,
    source: str | None = None,
    boundary: str = "zero",
    coefficient: str | None = None,
    params: dict | None = None,
    seed: int = 0,
    valid_count: int | None = None,
    test_count: int | None = None,
    dtype: str = "float32",
    shards: int = 1,
) -> DatasetCard:
    """Validate generation settings and describe the dataset they produce.

    ``source``, ``boundary`` and ``coefficient`` name the families of the problem's fields by
    role (None: the problem's defaults); ``params`` are the problem's parameters (e.g.
    ``{"k": 8.0}``). ``valid_count`` and ``test_count`` default to ``max(1, count // 10)``; 0
    skips the split.

    Raises:
        ValueError: naming the argument, its value and what was expected.
    """
    if params is not None and not isinstance(params, dict):
        raise ValueError(f"params={params!r} is invalid; expected a dict of problem parameters")
    prob = get_problem(problem, **(params or {}))
    grid = Grid(n)
    prob.check_grid(n)
    families = field_families(prob, source, boundary, coefficient)
    default = max(1, count // 10) if isinstance(count, int) else 1
    counts = {"train": count, "valid": default if valid_count is None else valid_count,
              "test": default if test_count is None else test_count}
    for split, value in counts.items():
        name = {"train": "count", "valid": "valid_count", "test": "test_count"}[split]
        if not isinstance(value, int) or isinstance(value, bool) or value < (1 if split == "train" else 0):
            raise ValueError(f"{name}={value!r} is not valid; expected an integer >= {1 if split == 'train' else 0}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed={seed!r} is not valid; expected an integer >= 0")
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not supported; expected one of {list(DTYPES)}")
    if not isinstance(shards, int) or isinstance(shards, bool) or shards < 1:
        raise ValueError(f"shards={shards!r} is not valid; expected an integer >= 1")
    spec_of = {spec.role: spec for spec in reversed(prob.fields)}
    chosen = {role: (given or (spec_of[role].family if role in spec_of else ""))
              for role, given in ((SOURCE, source), (DIRICHLET, boundary), (COEFFICIENT, coefficient))}
    family_params = {role: families[spec_of[role].name][0].params() if role in spec_of else {}
                     for role in (SOURCE, DIRICHLET, COEFFICIENT)}
    return DatasetCard(
        problem=prob.name, n=int(n), h=grid.h, source=chosen[SOURCE], boundary=chosen[DIRICHLET] or "zero",
        seed=seed, counts=counts, condition_fields=list(prob.condition_fields), solution_field=prob.solution_field,
        dirichlet_field=prob.dirichlet_field, source_params=family_params[SOURCE],
        boundary_params=family_params[DIRICHLET], coefficient=chosen[COEFFICIENT],
        coefficient_params=family_params[COEFFICIENT], params=prob.params(), dtype=dtype, shards=shards,
        block_size=default_block_size(int(n)), convention=convention_text(prob), version=pdediff.__version__,
    )


def _check_out_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        raise ValueError(f"out={str(out_dir)!r} is not a writable folder ({exc.strerror or exc})") from None


def generate_dataset(
    out_dir: str | os.PathLike,
    card: DatasetCard,
    *,
    shard: tuple[int, int] = (0, 1),
    workers: int = 1,
    resume: bool = False,
    overwrite: bool = False,
    callback: Callable[[dict], None] | None = None,
) -> dict[str, SplitResult]:
    """Write every split with a nonzero count (shard ``shard`` of each) and ``card.json``.

    All outputs are checked before anything is computed, so a refused run writes nothing.
    ``card.json`` describes the whole dataset (identical for every shard) and is written
    when the splits are complete. The shard's lock (:func:`output_lock`) is taken before any
    output is looked at and held until the end, so a concurrent run on the same output is
    refused before it can touch the files of this one.

    Args:
        out_dir: dataset folder (created if missing).
        card: from :func:`make_card`.
        shard, workers, resume, overwrite, callback: see :func:`generate_split`.

    Returns:
        ``{split: SplitResult}``.

    Raises:
        ValueError: bad arguments, an unwritable folder, a card.json of another dataset, or
            another run writing the same output (the message names its pid).
        FileExistsError: output exists and neither ``resume`` nor ``overwrite`` is set.
    """
    out_dir = Path(out_dir)
    if resume and overwrite:
        raise ValueError("resume=True and overwrite=True contradict each other; pass one of them")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r} is not valid; expected an integer >= 1")
    if not (shard[1] == card.shards and 0 <= shard[0] < shard[1]):
        raise ValueError(f"shard={shard[0]}/{shard[1]} is not valid; expected K/{card.shards} with 0 <= K < {card.shards}")
    _check_out_dir(out_dir)
    with output_lock(out_dir, shard):
        return _generate_dataset(out_dir, card, shard=shard, workers=workers, resume=resume,
                                 overwrite=overwrite, callback=callback)


def _generate_dataset(out_dir, card, *, shard, workers, resume, overwrite, callback) -> dict[str, SplitResult]:
    """:func:`generate_dataset` with the output's lock already held."""
    card_path = out_dir / "card.json"
    if card_path.exists() and not overwrite and DatasetCard.load(card_path) != card:
        raise ValueError(f"{card_path} describes a different dataset; pass --overwrite or choose another --out")
    splits = [split for split in SPLITS if card.counts[split] > 0]
    if not (resume or overwrite):
        for split in splits:
            final = out_dir / split_filename(split, shard)
            for candidate in (final, final.with_name(final.name + ".partial")):
                if candidate.exists():
                    raise FileExistsError(f"{candidate} exists; pass --overwrite to replace it or --resume to continue")
    results = {
        split: _generate_split(
            card, split, out_dir, shard=shard, workers=workers, resume=resume,
            overwrite=overwrite, callback=callback,
        )
        for split in splits
    }
    card.save(card_path)
    return results


__all__ = [
    "Block",
    "DatasetCard",
    "SPLITS",
    "SplitResult",
    "compute_block",
    "default_block_size",
    "generate_dataset",
    "generate_split",
    "lock_filename",
    "make_card",
    "output_lock",
    "parse_shard",
    "sample_rngs",
    "shard_range",
    "split_filename",
]
