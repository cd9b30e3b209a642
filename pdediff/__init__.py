"""pdediff: a neural PDE surrogate solver built on conditional score-based diffusion.

The public entry points are :func:`load_solver` (a trained model that solves new right-hand
sides), the problem registry :data:`pdediff.problems.PROBLEMS`, the source registry
:data:`pdediff.sources.SOURCES` and the dataset reader :func:`pdediff.data.open_dataset`.
"""

__version__ = "0.1.0"


class AccuracyWarning(UserWarning):
    """A solve returned samples whose estimated error exceeds ``tol``, or 5 % without one."""


def load_solver(model=None, *, device="cpu", **params):
    """Load a trained :class:`pdediff.solver.Solver`: a shipped model by name (None: the default;
    see :data:`pdediff.models.MODELS`) or a checkpoint path. ``params``
    (e.g. ``k=8.0``) must equal the problem parameters the model was trained with."""
    from pdediff.solver import load_solver as _load

    return _load(model, device=device, **params)


__all__ = ["AccuracyWarning", "__version__", "load_solver"]
