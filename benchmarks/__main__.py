"""``python -m benchmarks``: the surrogate against SciPy; see :mod:`benchmarks.surrogate`."""

import sys

from benchmarks.surrogate import main

sys.exit(main())
