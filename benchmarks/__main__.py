"""``python -m benchmarks``: a block per problem with a shipped model.

    python -m benchmarks [--problems poisson,darcy,helmholtz] [options of benchmarks.surrogate]

The default problem's block is :mod:`benchmarks.surrogate` (samplers, NFE, polish, timing against
N; the options that follow go to it); every other problem's is :mod:`benchmarks.problems` (its test
law and unseen laws, the FNO peer for a problem with a coefficient, timing at N and 2N), on the
test split ``datasets/<problem>64/test.h5`` when it exists and on fresh draws otherwise.
"""

import argparse
import sys
from pathlib import Path

from benchmarks import problems, surrogate
from pdediff.models import MODELS
from pdediff.problems import DEFAULT_PROBLEM


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = [DEFAULT_PROBLEM] + [n for n in problems.CASE_SETS if n in MODELS]
    p.add_argument("--problems", default=",".join(names), help=f"comma list of {names}")
    args, rest = p.parse_known_args(argv)
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
