"""pdediff: a neural PDE surrogate solver built on conditional score-based diffusion.

The public entry points are :func:`load_solver` (a trained model that solves new right-hand
sides), the problem registry :data:`pdediff.problems.PROBLEMS`, the source registry
:data:`pdediff.sources.SOURCES` and the dataset reader :func:`pdediff.data.open_dataset`.
"""

__version__ = "0.1.0"


def load_solver(path=None, *, device="cpu"):
    """Load a trained :class:`pdediff.solver.Solver` (``None``: the model shipped with pdediff)."""
    from pdediff.solver import load_solver as _load

    return _load(path, device=device)


__all__ = ["__version__", "load_solver"]
