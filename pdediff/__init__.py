"""pdediff: a neural PDE surrogate solver built on conditional score-based diffusion.

The public entry points are :func:`load_solver` (a trained model that solves new right-hand
sides), the problem registry :data:`pdediff.problems.PROBLEMS`, the source registry
:data:`pdediff.sources.SOURCES`, the dataset readers of :mod:`pdediff.data` and the dataset
cards of :mod:`pdediff.cards`.

The code is layered (``docs/architecture.md``): :mod:`pdediff.maths` < :mod:`pdediff.physics` <
:mod:`pdediff.data` < :mod:`pdediff.learning` < :mod:`pdediff.solver` and :mod:`pdediff.models`
(the user API) < :mod:`pdediff.tools`. The public short names ``pdediff.problems``,
``pdediff.sources`` and ``pdediff.cards`` are the physics and data modules themselves; the other
flat names of earlier versions (``pdediff.samplers``, ``pdediff.training`` ...) still import,
with a DeprecationWarning naming the new place.
"""

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings

__version__ = "0.1.0"


class AccuracyWarning(UserWarning):
    """A solve returned samples whose estimated error exceeds ``tol``, or 5 % without one."""


def load_solver(model=None, *, device="cpu", **params):
    """Load a trained :class:`pdediff.solver.Solver`: a shipped model by name (None: the default;
    see :data:`pdediff.models.MODELS`) or a checkpoint path. ``params``
    (e.g. ``k=8.0``) must equal the problem parameters the model was trained with."""
    from pdediff.models import load_solver as _load

    return _load(model, device=device, **params)


#: Modules of earlier, flat versions -> where they live now (below ``pdediff.``).
MOVED = {
    **{m: f"maths.{m}" for m in ("tensors", "noise", "sdes", "samplers", "denoiser", "likelihood", "multigrid",
                                 "regrid", "guidance", "observe", "gaussian", "kriging", "gauss_newton",
                                 "physics_posterior")},
    **{m: f"physics.{m}" for m in ("problems", "sources", "coefficients", "metrics")},
    **{m: f"data.{m}" for m in ("cards", "generate", "cases", "atomic", "checkpoint")},
    **{m: f"learning.{m}" for m in ("networks", "losses", "config", "model", "conditioning")},
    **{m: f"tools.{m}" for m in ("training", "cli", "demo", "plotting")},
    "reconstruct": "solver.observations",
}
#: The short names that are public API: they import without a warning.
PUBLIC = ("problems", "sources", "cards")


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports ``pdediff.<old>[.sub]`` as the module at its new place (the same object, so
    classes and registries are shared), warning for the names that are not public."""

    def find_spec(self, name, path=None, target=None):
        parts = name.split(".")
        if len(parts) >= 2 and parts[0] == __name__ and parts[1] in MOVED:
            import importlib.util

            real = importlib.util.find_spec(self.new_name(name))
            return importlib.machinery.ModuleSpec(name, self, origin=real.origin) if real else None
        return None

    @staticmethod
    def new_name(name: str) -> str:
        old = name.split(".")
        return ".".join([__name__, MOVED[old[1]], *old[2:]])

    def create_module(self, spec):
        new = self.new_name(spec.name)
        if spec.name.split(".")[1] not in PUBLIC and spec.name.count(".") == 1:
            warnings.warn(f"{spec.name} moved to {new}; import it from there", DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def get_code(self, name):
        """``python -m pdediff.<old>`` runs the module at its new place."""
        new = self.new_name(name)
        return importlib.util.find_spec(new).loader.get_code(new)

    def exec_module(self, module):
        pass


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.insert(0, _MovedModules())


def __getattr__(name):
    """``pdediff.problems`` and the other moved names as attributes, imported on first use."""
    if name in MOVED:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["AccuracyWarning", "__version__", "load_solver"]
