#!/usr/bin/env python
"""Generate a training dataset of (condition, exact solution) pairs.

Example:
    python generate_data.py --problem poisson --n 64 --count 10000 --source blobs,grf \\
        --boundary zero --seed 0 --out datasets/poisson64

Writes ``train.h5``, ``valid.h5``, ``test.h5`` and ``card.json`` into ``--out`` (see
datasets/README.md). Invalid arguments and refused outputs exit with status 2; Ctrl-C stops
the run with status 130, keeping the ``.partial`` files for ``--resume``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from tqdm import tqdm

from pdediff.data.generate import generate_dataset, make_card, parse_shard
from pdediff.physics.coefficients import COEFFICIENTS
from pdediff.physics.problems import PROBLEMS
from pdediff.physics.sources import BOUNDARIES, SOURCES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problem", default="poisson", help=f"one of {sorted(PROBLEMS)} (default: poisson)")
    parser.add_argument("--n", type=int, default=64, help="nodes per side, boundary included (default: 64)")
    parser.add_argument("--count", type=int, required=True, help="training samples (over all shards)")
    parser.add_argument("--valid-count", type=int, default=None, help="validation samples (default: max(1, count // 10); 0 skips)")
    parser.add_argument("--test-count", type=int, default=None, help="test samples (default: max(1, count // 10); 0 skips)")
    parser.add_argument("--source", default=None, help=f"source family: one of {sorted(SOURCES)} or a comma list drawn uniformly per sample (default: the problem's, e.g. mixture)")
    parser.add_argument("--coefficient", default=None, help=f"coefficient family, for a problem with a coefficient field: one of {sorted(COEFFICIENTS)} or a comma list (default: the problem's)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a problem parameter, e.g. --param k=8 for helmholtz (repeatable)")
    parser.add_argument("--boundary", default="zero", help=f"one of {sorted(BOUNDARIES)} (default: zero)")
    parser.add_argument("--seed", type=int, default=0, help="base seed; splits and samples derive theirs from it (default: 0)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--dtype", default="float32", help="float32 (default) or float64")
    parser.add_argument("--shard", default="0/1", help="write shard K of M, as K/M (default: 0/1, unsharded)")
    parser.add_argument("--workers", type=int, default=1, help="processes computing blocks (default: 1)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue an interrupted run from its .partial files")
    mode.add_argument("--overwrite", action="store_true", help="replace existing output")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


class ProgressBars:
    """A tqdm bar per split (samples/s), fed by the generator's callback.

    Also the SIGINT handler of a run (:meth:`on_sigint`): Python drops a ``KeyboardInterrupt``
    raised while it runs a finalizer or weakref callback (h5py runs many), so the callback raises
    it again after the next block, and :meth:`unraisablehook` keeps the dropped one off stderr.
    """

    def __init__(self, disable: bool):
        self.disable, self.bar, self.interrupted = disable, None, False
        self.hook = sys.unraisablehook

    def __call__(self, info: dict) -> None:
        if info["event"] == "start":
            self.close()
            self.bar = tqdm(total=info["total"], initial=info["done"], desc=info["split"],
                            unit="sample", disable=self.disable)
        else:
            self.bar.update(info["done"] - self.bar.n)
        if self.interrupted:
            raise KeyboardInterrupt

    def on_sigint(self, signum, frame) -> None:
        self.interrupted = True
        raise KeyboardInterrupt

    def unraisablehook(self, unraisable) -> None:
        if not (self.interrupted and issubclass(unraisable.exc_type, KeyboardInterrupt)):
            self.hook(unraisable)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def parse_params(items: list[str]) -> dict:
    """``["k=8"]`` -> ``{"k": 8.0}``: problem parameters from the command line."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise ValueError(f"--param={item!r} is invalid; expected NAME=NUMBER, e.g. k=8")
    return out


def check_args(args) -> None:
    """Refuse what the library would read otherwise: an empty text argument (``--out ""`` would be
    the current folder, ``--boundary ""`` the default family), a NUL character (no path or name
    holds one), and a seed beyond the 64 bits an HDF5 attribute holds."""
    for flag in ("--problem", "--source", "--coefficient", "--boundary", "--out", "--dtype", "--shard"):
        value = getattr(args, flag[2:])
        if value is not None and not value.strip():
            raise ValueError(f"{flag}={value!r} is empty; expected a value (leave the flag out for its default)")
        if value is not None and "\x00" in value:
            raise ValueError(f"{flag}={value!r} holds a NUL character; expected a name or path without one")
    if args.seed >= 2**64:
        raise ValueError(f"--seed={args.seed} is too large; expected an integer in [0, 2**64)")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    progress = ProgressBars(disable=args.quiet)
    handle = threading.current_thread() is threading.main_thread() and \
        signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if handle:
        signal.signal(signal.SIGINT, progress.on_sigint)
        sys.unraisablehook = progress.unraisablehook
    try:
        check_args(args)
        shard = parse_shard(args.shard)
        card = make_card(
            args.problem, args.n, args.count, source=args.source, boundary=args.boundary,
            coefficient=args.coefficient, params=parse_params(args.param),
            seed=args.seed, valid_count=args.valid_count, test_count=args.test_count,
            dtype=args.dtype, shards=shard[1],
        )
        results = generate_dataset(
            args.out, card, shard=shard, workers=args.workers, resume=args.resume,
            overwrite=args.overwrite, callback=progress,
        )
    except (ValueError, FileExistsError) as exc:
        progress.close()
        parser.error(str(exc))
    except KeyboardInterrupt:
        progress.close()
        print(f"{parser.prog}: interrupted; the .partial files in {args.out} are kept, "
              "rerun with --resume to continue", file=sys.stderr)
        return 130
    finally:
        if handle:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            sys.unraisablehook = progress.hook
    progress.close()
    for split, result in results.items():
        print(f"{split}: {result.count} samples in {result.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
