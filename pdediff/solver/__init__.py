"""The user-facing solver: a loaded model and the stages that use it.

>>> import pdediff, numpy as np
>>> solver = pdediff.load_solver()                      # the shipped model   # doctest: +SKIP
>>> phi = solver.solve(rho)                             # rho: (N, N) or (B, N, N)   # doctest: +SKIP

:class:`Solver` is a thin facade: it holds the model (denoiser, config, normalisation, dataset
card) and composes the stages, each a plain function of a loaded model and the fields in a
module named after it: :mod:`~pdediff.solver.solve` (forward solves, error estimates, polish),
:mod:`~pdediff.solver.reconstruct` (fields from observations; its methods in
:mod:`~pdediff.solver.reconstruct_gaussian` and :mod:`~pdediff.solver.reconstruct_diffusion`,
what they share in :mod:`~pdediff.solver.observations`), :mod:`~pdediff.solver.likelihood` and
:mod:`~pdediff.solver.energy`. The checks of every option are :mod:`~pdediff.solver.options`;
loading and naming models, and their cards, :mod:`pdediff.models`.
"""

from __future__ import annotations

import torch

from pdediff.learning.conditioning import Normalisation
from pdediff.learning.config import Config
from pdediff.learning.model import load_denoiser
from pdediff.solver import energy as _energy
from pdediff.solver import likelihood as _likelihood
from pdediff.solver import reconstruct as _reconstruct
from pdediff.solver import solve as _solve
from pdediff.solver.options import SAMPLER_STEPS, check_device
from pdediff.solver.solve import ROUTE_ABOVE, TOL_MAX_ITERATIONS, WARN_ABOVE, SolveInfo


class Solver:
    """Solve a problem for new condition fields with a trained conditional diffusion model.

    Args:
        denoiser: the preconditioned denoiser (an ``nn.Module``), in eval mode.
        config: the run config it was trained with.
        norm: the training data's normalisation.
        card: the training dataset's card (a dict), kept for provenance.
        device: torch device to run on.
        name: the shipped model's name (:data:`pdediff.models.MODELS`), if it is one: its model
            card is then :attr:`card`.

    Attributes:
        fallback: None, or a second :class:`Solver` of the same problem: ``solve`` hands it
            the samples whose estimated error exceeds ``ROUTE_ABOVE`` (1 %) and keeps the
            answer with the lower estimate (``info.models`` says whose). ``load_solver`` sets
            it for the shipped models in :data:`pdediff.models.FALLBACKS`; set it to None to
            turn this off.
    """

    def __init__(self, denoiser, config: Config, norm: Normalisation, card: dict | None = None,
                 device="cpu", name: str | None = None):
        self.device = torch.device(device)
        # channels-last convolutions: faster than the default layout on the 2-core CPU (shipped
        # U-Net, N = 64, batch 64; python -m benchmarks.speed)
        self.memory_format = torch.channels_last
        self.denoiser = denoiser.to(self.device, memory_format=self.memory_format).eval()
        self.config = config
        self.norm = norm
        #: The training dataset's card (a plain dict: problem, n, counts, source laws ...).
        self.dataset_card = dict(card or {})
        self.name = name
        self.problem = config.data.make_problem(self.dataset_card)
        self.dtype = next(self.denoiser.parameters()).dtype
        self.fallback: Solver | None = None

    @property
    def grid_size(self) -> int | None:
        """The N the model was trained at (from the dataset card), if known."""
        n = self.dataset_card.get("n", self.dataset_card.get("N"))
        return int(n) if n is not None else None

    @property
    def card(self):
        """The model card (:class:`pdediff.models.ModelCard`): printed, the markdown of
        ``pdediff/models/NAME.md`` for a shipped model (how it was made, what it measures, what
        it is not for), else a summary of its config; indexed, the training dataset's card, as
        ``solver.card["problem"]`` always has been."""
        from pdediff.models import model_card

        return model_card(self.name, self.config, self.dataset_card)

    # the stages: plain functions of a loaded model and the fields (see the module docstring)
    solve = _solve.solve
    solve_dataset = _solve.solve_dataset
    reconstruct = _reconstruct.reconstruct
    default_reconstruct_method = _reconstruct.default_method
    log_likelihood = _likelihood.log_likelihood
    energy = _energy.energy

    @classmethod
    def from_checkpoint(cls, path, device="cpu", weights: str = "ema", name: str | None = None) -> "Solver":
        """A solver of the checkpoint at ``path`` (see :func:`pdediff.learning.model.load_denoiser`)."""
        loaded = load_denoiser(path, weights=weights)
        return cls(loaded.denoiser, loaded.config, loaded.norm, loaded.card, device=device, name=name)


def load_solver(model=None, *, device="cpu", **params) -> Solver:
    """Load a :class:`Solver`: a shipped model by name or a checkpoint path (see
    :func:`pdediff.models.load_solver`)."""
    from pdediff.models import load_solver as load

    return load(model, device=device, **params)


__all__ = ["ROUTE_ABOVE", "SAMPLER_STEPS", "TOL_MAX_ITERATIONS", "WARN_ABOVE", "SolveInfo", "Solver", "check_device", "load_solver"]
