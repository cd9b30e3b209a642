"""``python -m benchmarks``: one entry point for every benchmark block.

    python -m benchmarks --list                 # every block: purpose, run time, default args
    python -m benchmarks BLOCK [options]        # one block; the options go to its main
    python -m benchmarks BLOCK --help           # that block's options
    python -m benchmarks [--problems poisson,darcy,helmholtz] [options of benchmarks.surrogate]

The blocks are :data:`benchmarks.blocks.BLOCKS` (the modules of this package); each writes into
``benchmarks/results/BLOCK/`` with a ``COMMAND`` file naming the command that made each result.
``BLOCK`` is the first argument and must be a name of ``BLOCKS`` (``-`` may stand for ``_``);
anything else is exit status 2.

Without a block, as before: a block per problem with a shipped model. The default problem's is
:mod:`benchmarks.surrogate` (samplers, NFE, polish, timing against N; the options that follow go
to it); every other problem's is :mod:`benchmarks.problems` (its test law and unseen laws, the FNO
peer for a problem with a coefficient, timing at N and 2N), on the test split
``datasets/<problem>64/test.h5`` when it exists and on fresh draws otherwise.
"""

import argparse
import importlib
import sys
from pathlib import Path

from benchmarks import problems, results_dir, surrogate
from benchmarks.blocks import BLOCKS, listing
from pdediff.models import MODELS
from pdediff.physics.problems import DEFAULT_PROBLEM


def run_block(name: str, argv) -> int:
    """Run block ``name`` with its default args, then ``argv``; its exit status."""
    block = BLOCKS[name]
    defaults = [a.format(results=results_dir(name)) for a in block.args]
    return importlib.import_module(block.module).main(defaults + list(argv)) or 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    if argv and not argv[0].startswith("-"):
        name = argv[0].replace("-", "_")
        if name not in BLOCKS:
            p.exit(2, f"benchmarks: error: unknown block {argv[0]!r}; expected one of: {', '.join(BLOCKS)} "
                      "(python -m benchmarks --list)\n")
        return run_block(name, argv[1:])
    names = [DEFAULT_PROBLEM] + [n for n in problems.CASE_SETS if n in MODELS]
    p.add_argument("--list", action="store_true", help="list the blocks (purpose, run time, default args) and exit")
    p.add_argument("--problems", default=",".join(names), help=f"comma list of {names}")
    args, rest = p.parse_known_args(argv)
    if args.list:
        print(listing())
        return 0
    chosen = [n.strip() for n in args.problems.split(",")]
    unknown = [n for n in chosen if n not in names]
    if unknown:
        p.exit(2, f"benchmarks: error: --problems has {unknown}; expected some of {names}\n")
    for name in chosen:
        print(f"\n## {name}\n", flush=True)
        if name == DEFAULT_PROBLEM:
            code = surrogate.main(rest)
        else:
            test = Path(f"datasets/{name}64/test.h5")
            code = problems.main(["--problem", name, *(["--data", str(test)] if test.is_file() else [])])
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
