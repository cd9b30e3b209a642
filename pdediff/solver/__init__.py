"""The user-facing solver: a trained conditional denoiser plus the probability-flow ODE.

>>> import pdediff, numpy as np
>>> solver = pdediff.load_solver()                      # the shipped model   # doctest: +SKIP
>>> phi = solver.solve(rho)                             # rho: (N, N) or (B, N, N)   # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pdediff import AccuracyWarning
from pdediff.learning.conditioning import (Normalisation, decode_fields, decode_solution, dirichlet_channels, encode,
                                  encode_solution, joint_unit, unknown_nodes)
from pdediff.learning.config import Config
from pdediff.maths.guidance import classifier_free, residual_guided
from pdediff.learning.model import load_denoiser
from pdediff.physics.problems import as_field
from pdediff.physics.problems.base import DIRICHLET, boundary_mask
from pdediff.maths.regrid import prolong, restrict, transfer_ring
from pdediff.maths.samplers import SAMPLERS, get_sigmas_karras
from pdediff.maths.noise import randn


#: The fewest noise levels each sampler is asked to take when the user picks a sampler other than
#: the model's own without giving ``steps``: Heun at 2 or 3 levels is unstable (its correction at
#: sigma_min spans the whole step; 78 % and 2 % error against 1.2 % at 5 and 10 levels,
#: ``python -m benchmarks.sampling``), and the stochastic samplers need small steps to
#: average their noise out.
SAMPLER_STEPS = {"euler": 1, "heun": 10, "adaptive": 2, "euler_maruyama": 32, "pc": 32, "ald": 10}


def _check_sampler_options(sampler: str, options) -> None:
    """Check ``sampler_options`` against the sampler's keyword arguments before any work, so that
    a TypeError raised inside the network is never mistaken for a bad option."""
    if options is None:
        return
    if not isinstance(options, dict):
        raise ValueError(f"sampler_options={options!r} is invalid; expected a dict of keyword arguments")
    params = inspect.signature(SAMPLERS[sampler]).parameters
    allowed = sorted(k for k, p in params.items()
                     if p.kind is inspect.Parameter.KEYWORD_ONLY and k not in ("generator", "callback"))
    unknown = sorted(str(k) for k in options if k not in allowed)
    if unknown:
        raise ValueError(f"sampler_options={options!r}: {unknown} are not options of sampler {sampler!r}; "
                         f"expected some of {allowed}")
    from pdediff.maths.samplers import _TABLEAUS

    # the values, so that none fails inside the sampler (a TypeError, a math domain error, NaN)
    real = (int, float, np.integer, np.floating)

    def number(v, low, high=np.inf, open_low=False, inf=False) -> bool:
        return (isinstance(v, real) and not isinstance(v, (bool, np.bool_)) and not np.isnan(v)
                and (v > low if open_low else v >= low) and v <= high and (inf or bool(np.isfinite(v))))

    def count(v, low) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and v >= low

    rules = {
        "s_churn": (lambda v: number(v, 0), "a finite number >= 0"),
        "s_tmin": (lambda v: number(v, 0), "a finite number >= 0"),
        "s_tmax": (lambda v: number(v, 0, inf=True), "a number >= 0 (inf allowed)"),
        "s_noise": (lambda v: number(v, 0), "a finite number >= 0"),
        "rtol": (lambda v: number(v, 0, open_low=True), "a finite number > 0"),
        "atol": (lambda v: number(v, 0, open_low=True), "a finite number > 0"),
        "method": (lambda v: isinstance(v, str) and v in _TABLEAUS, f"one of {sorted(_TABLEAUS)}"),
        "h_init": (lambda v: v is None or (number(v, -np.inf) and v != 0), "None or a finite nonzero number"),
        "safety": (lambda v: number(v, 0, 1, open_low=True), "a number in (0, 1]"),
        "max_steps": (lambda v: count(v, 1), "an integer >= 1"),
        "snr": (lambda v: number(v, 0), "a finite number >= 0"),
        "n_corrector": (lambda v: count(v, 0), "an integer >= 0"),
        "predictor": (lambda v: isinstance(v, str) and v in ("reverse_diffusion", "euler_maruyama"),
                      "'reverse_diffusion' or 'euler_maruyama'"),
        "norm": (lambda v: isinstance(v, str) and v in ("sample", "batch"), "'sample' or 'batch'"),
        "n_steps_each": (lambda v: count(v, 0), "an integer >= 0"),
        "step_lr": (lambda v: v is None or number(v, 0), "None or a finite number >= 0"),
    }
    for k, v in options.items():
        ok, expected = rules.get(k, (lambda v: True, ""))
        if not ok(v):
            raise ValueError(f"sampler_options={options!r}: {k}={v!r} is invalid for sampler {sampler!r}; "
                             f"expected {expected}")


#: Without ``tol``, samples whose estimated relative error exceeds this raise an AccuracyWarning.
WARN_ABOVE = 0.05
#: The most iterations of polish ``solve(tol=...)`` spends on a sample.
TOL_MAX_ITERATIONS = 200


@dataclass
class SolveInfo:
    """What a solve cost and how good it is, per sample where it varies.

    Attributes:
        nfe: denoiser evaluations per batch.
        seconds: wall time.
        polish_iterations: iterations of classical polish each sample took (``polish`` and
            those ``tol`` asked for).
        error_estimate: each sample's estimated relative L2 error against the exact discrete
            solution (``Problem.estimate_error``; empty for a problem without a residual or with
            ``estimate=False``).
        tol_met: with ``tol``, whether each sample's estimate reached it.
    """

    nfe: int = 0
    seconds: float = 0.0
    polish_iterations: list[int] = field(default_factory=list)
    error_estimate: list[float] = field(default_factory=list)
    tol_met: list[bool] = field(default_factory=list)


def _generators(seed: int, first_index: int, count: int, stream: int) -> list[torch.Generator]:
    """One CPU generator per sample, seeded from (seed, sample index, stream), so that results
    do not depend on batching. Stream 0 draws the initial noise, stream 1 the sampler's noise."""
    out = []
    for k in range(count):
        state = np.random.SeedSequence([int(seed), first_index + k, stream]).generate_state(1, np.uint64)[0]
        out.append(torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF))
    return out


def _check_integers(**named) -> None:
    """Each ``name=(value, low)``: an integer (not a bool) >= low, else a ValueError naming it."""
    for name, (value, low) in named.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name}={value!r} is invalid; expected an integer >= {low}")


def _check_flags(**named) -> None:
    """Each ``name=value``: True or False, else a ValueError naming it."""
    for name, value in named.items():
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{name}={value!r} is invalid; expected True or False")


class Solver:
    """Solve a problem for new condition fields with a trained conditional diffusion model.

    Args:
        denoiser: the preconditioned denoiser (an ``nn.Module``), in eval mode.
        config: the run config it was trained with.
        norm: the training data's normalisation.
        card: the training dataset's card (a dict), kept for provenance.
        device: torch device to run on.
    """

    def __init__(self, denoiser, config: Config, norm: Normalisation, card: dict | None = None,
                 device="cpu"):
        self.device = torch.device(device)
        # channels-last convolutions: faster than the default layout on the 2-core CPU (shipped
        # U-Net, N = 64, batch 64; python -m benchmarks.speed)
        self.memory_format = torch.channels_last
        self.denoiser = denoiser.to(self.device, memory_format=self.memory_format).eval()
        self.config = config
        self.norm = norm
        self.card = card or {}
        self.problem = config.data.make_problem(self.card)
        self.dtype = next(self.denoiser.parameters()).dtype

    # ---------------------------------------------------------------- inputs
    @property
    def grid_size(self) -> int | None:
        """The N the model was trained at (from the dataset card), if known."""
        n = self.card.get("n", self.card.get("N"))
        return int(n) if n is not None else None

    def _fields(self, args, kwargs, any_grid: bool = False, resample: bool = False) -> dict[str, np.ndarray]:
        names = self.problem.condition_fields
        if len(args) > len(names):
            raise ValueError(f"got {len(args)} positional fields; expected at most {len(names)} ({', '.join(names)})")
        given = dict(zip(names, args))
        for k, v in kwargs.items():
            if k not in names:
                raise ValueError(f"{k!r} is not a field of problem {self.problem.name!r}; expected one of {list(names)}")
            if k in given:
                raise ValueError(f"field {k!r} given twice")
            given[k] = v
        first = names[0]
        shaped = next((k for k in names if given.get(k) is not None), None)
        if shaped is None:
            raise ValueError(f"{first} is required; expected an array of shape (N, N) or (B, N, N)")
        out = {shaped: as_field(shaped, given[shaped], dtype=np.float64)}
        for name in names:
            if name == shaped:
                continue
            if given.get(name) is None:
                default = self.problem.field(name).default
                if default is None:
                    raise ValueError(f"{name} is required for problem {self.problem.name!r}; expected an array "
                                     f"of shape {out[shaped].shape}")
                out[name] = np.full_like(out[shaped], default)
            else:
                out[name] = as_field(name, given[name], like=out[shaped], dtype=np.float64)
        out = {name: out[name] for name in names}
        self.problem.check_coefficients(out)
        self.problem.check_grid(out[first].shape[-1])
        n = out[first].shape[-1]
        trained = self.grid_size
        if resample:
            if not trained:
                raise ValueError("resample=True needs the model's training grid, and its checkpoint's card names none")
            n = trained  # the network runs on its own grid; the problem checked the requested one
        try:
            self.denoiser.net.check_grid(n, n)
        except ValueError as exc:
            raise ValueError(f"{first} has shape {out[first].shape}: {exc}") from None
        if trained and n != trained and not (any_grid or getattr(self.denoiser.net, "resolution_free", False)):
            raise ValueError(
                f"{first} has shape {out[first].shape}; this {self.config.model.network} model was trained on "
                f"({trained}, {trained}) node grids and is not resolution-free (pass resample=True to solve on "
                f"its grid and interpolate, or any_grid=True to run it on this grid anyway)"
            )
        return out

    # ---------------------------------------------------------------- solving
    def solve(self, *fields, sampler: str | None = None, steps: int | None = None, seed: int = 0,
              batch_size: int = 64, guidance: float = 0.0, polish: int = 0, polish_method: str = "amg",
              sampler_options: dict | None = None, progress: bool = False,
              return_info: bool = False, any_grid: bool = False, resample: bool = False,
              tol: float | None = None, estimate: bool = True, cfg: float = 0.0, **named):
        """Solve for the fields of one sample (N, N) or a batch (B, N, N).

        Args:
            *fields, **named: the problem's condition fields in order or by name (e.g.
                ``rho`` and optional Dirichlet data ``g``, zero by default).
            sampler: a key of :data:`pdediff.maths.samplers.SAMPLERS` (``heun``: the probability-flow
                ODE, EDM Algorithm 1, ``2 * steps - 1`` denoiser evaluations; ``euler``: ``steps``).
                None: the model's own default (``config.model.sampler``), the setting measured
                best for it.
            steps: number of noise levels of the Karras schedule. None: ``config.model.steps``
                for the model's own sampler, and for another sampler the larger of that and the
                sampler's floor in :data:`SAMPLER_STEPS` (Heun at 2 levels is unstable).
            seed: noise seed; sample k of a call uses the stream (seed, k) whatever the batching.
            batch_size: samples per network batch.
            guidance: residual guidance on the denoised estimate, as a fraction in [0, 1] of the
                optimal steepest-descent step (0: off); see :mod:`pdediff.maths.guidance`.
            polish: iterations of a classical solver started from the network's answer (0: off).
            polish_method: the classical solver, a key of the problem's ``ITERATIVE``
                (e.g. ``"amg"``, conjugate gradients preconditioned by algebraic multigrid;
                ``"cg"``, plain conjugate gradients).
            sampler_options: extra keyword arguments for the sampler.
            progress: show a progress bar over batches.
            return_info: also return a :class:`SolveInfo`.
            any_grid: allow a grid other than the training one for a network that is not
                resolution-free (the U-Net); accuracy is then not what the model card says.
            resample: on a grid other than the training one, run the network on its training
                grid and interpolate (:mod:`pdediff.maths.regrid`): sources are low-pass restricted,
                Dirichlet data transferred edge by edge, and phi prolonged by a bicubic spline,
                then set to g on the ring. The solution operator smooths, so the coarse answer
                loses little; ``polish`` then acts on the requested grid.
            tol: polish, one iteration at a time and only the samples that need it, until each
                sample's estimated relative error is <= tol (at most TOL_MAX_ITERATIONS
                iterations; a sample that does not get there is reported in ``info.tol_met`` and
                by an AccuracyWarning), and then one iteration more (the estimate's own, already
                computed: ``info.error_estimate`` is then an upper bound). None: no such polish.
            estimate: estimate each sample's error (``info.error_estimate``) and warn
                (AccuracyWarning) when any exceeds 5 %; it costs one iteration of the problem's
                preconditioned iterative method. False: neither (``tol`` needs it).
            cfg: classifier-free guidance weight w, ``D = (1 + w) D(x | c) - w D(x | null)``,
                for a model trained with a null condition (``model.cond_dropout``); 0 (default)
                is the unguided answer exactly. Each step then costs two network evaluations.

        Returns:
            phi as a float64 NumPy array of the shape of the first field; exactly equal to the
            Dirichlet data on the boundary ring. Magnitudes: each sample is divided by its
            largest acting value before the network sees it, so any sample whose largest value
            lies in [MAGNITUDE_MIN, MAGNITUDE_MAX] of :mod:`pdediff.physics.problems.base` (1e-200 to
            1e200) is solved as well as one of unit size; outside it, a ValueError.
        """
        if self.config.model.joint:
            raise ValueError(f"this is a joint model of {self.config.model.joint} (sampled from observations); "
                             f"expected reconstruct(samples=K, **observed), e.g. reconstruct("
                             f"{self.problem.condition_fields[0]}=...) with a field fully observed")
        sampler, steps = self._check_options(sampler, steps, seed, batch_size, guidance, polish, polish_method,
                                             sampler_options, any_grid, resample, progress=progress,
                                             return_info=return_info, estimate=estimate)
        tol = self._check_tol(tol, estimate)
        self._check_cfg(cfg)
        batch = self._fields(fields, named, any_grid, resample)
        first = self.problem.condition_fields[0]
        single = batch[first].ndim == 2
        batch = {k: (v[None] if single else v) for k, v in batch.items()}
        count, n = batch[first].shape[0], batch[first].shape[-1]
        info = SolveInfo()
        t0 = time.perf_counter()
        given = batch
        batch, magnitude = self._prescale(batch)
        m = self.grid_size if resample and self.grid_size and self.grid_size != n else n
        out = self._sample(self._to_grid(batch, m), sampler, steps, seed, batch_size, guidance,
                           sampler_options, progress, info, cfg)
        out = self._impose_dirichlet(prolong(out, n) if m != n and count else out, batch)
        if polish > 0 and count:
            out, iters = self.problem.iterative_solve(out, *(batch[k] for k in self.problem.condition_fields),
                                                      maxiter=polish, rtol=0.0, method=polish_method)
            info.polish_iterations = [int(i) for i in np.atleast_1d(iters)]
        if estimate and self.problem.offers_residual and count:
            out = self._estimate(out, batch, tol, info)
        out = self._impose_dirichlet(out * magnitude, given)  # the exact data, not a rescaled copy
        info.seconds = time.perf_counter() - t0
        if not np.all(np.isfinite(out)):  # the inputs were scaled into range: the sampler diverged
            raise ValueError(f"sampler={sampler!r} with steps={steps} diverged (a non-finite solution); expected a "
                             f"stable setting: more steps, or the model's own sampler {self.config.model.sampler!r}")
        phi = out[0] if single else out
        return (phi, info) if return_info else phi

    # stages of solve, reused by anything that samples the model
    def default_reconstruct_method(self) -> str:
        """The method ``reconstruct`` uses when none is named, the best measured
        (``python -m benchmarks.posterior``): ``"diffusion"`` for a joint model of a linear
        problem's source and solution, ``"gaussian"`` for a coefficient problem (there the
        diffusion prior of log a was measured no better than the Gauss-Newton baseline), ``"none"``
        for a model that takes the observations as inputs; a checkpoint may name its own
        (``config.notes["reconstruct_method"]``, among :data:`pdediff.solver.observations.METHODS`)."""
        from pdediff.solver import reconstruct as stage

        named = self.config.notes.get("reconstruct_method")
        if named in stage.METHODS:
            return named
        joint = sorted(self.config.model.joint)
        if self.config.model.observe or not joint:
            return "none" if self.config.model.observe else "dps"
        card = self.card or {}
        if not (card.get("source") or card.get("coefficient")):  # no law to fit a Gaussian prior to
            return "dps"
        if stage.spectral(self.problem) and joint == sorted(stage.unknown_fields(self.problem)):
            return "diffusion"
        if stage.elliptic(self.problem) or stage.spectral(self.problem):
            return "gaussian"
        return "dps"

    def _check_options(self, sampler, steps, seed, batch_size, guidance, polish, polish_method,
                       sampler_options, any_grid, resample, **flags) -> tuple[str, int]:
        """Validate solve's options; return the sampler and its number of noise levels."""
        if sampler is None:
            sampler = self.config.model.sampler
        elif not isinstance(sampler, str) or sampler not in SAMPLERS:
            raise ValueError(f"sampler={sampler!r} is unknown; expected one of {sorted(SAMPLERS)}")
        if steps is None:
            steps = self.config.model.steps
            if sampler != self.config.model.sampler:
                steps = max(steps, SAMPLER_STEPS.get(sampler, 1))
        # upper bounds: steps beyond them cannot be allocated, polish would run for days
        for name, value, low, high in (("steps", steps, 1, 10_000), ("batch_size", batch_size, 1, None),
                                       ("polish", polish, 0, 100_000)):
            if (not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low
                    or (high is not None and value > high)):
                expected = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
                raise ValueError(f"{name}={value!r} is invalid; expected {expected}")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed={seed!r} is invalid; expected an integer >= 0")
        if (not isinstance(guidance, (int, float, np.number)) or isinstance(guidance, bool)
                or not 0 <= guidance <= 1):
            raise ValueError(f"guidance={guidance!r} is invalid; expected a weight in [0, 1]")
        for name, value in (("any_grid", any_grid), ("resample", resample), *flags.items()):
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"{name}={value!r} is invalid; expected True or False")
        if polish > 0 and not self.problem.offers_residual:
            self.problem.iterative_solve()  # raises: says why polish is not offered
        if guidance > 0 and not self.problem.offers_residual:
            self.problem.residual_terms()  # raises: says why guidance is not offered
        if (polish > 0 or self.problem.offers_residual) and (not isinstance(polish_method, str) or polish_method not in self.problem.iterative_methods):
            raise ValueError(f"polish_method={polish_method!r} is unknown; expected one of "
                             f"{sorted(self.problem.iterative_methods)}")
        _check_sampler_options(sampler, sampler_options)
        return sampler, int(steps)

    def _check_cfg(self, cfg) -> None:
        """Classifier-free guidance needs a finite weight and a model with a null condition."""
        if not isinstance(cfg, (int, float, np.integer, np.floating)) or isinstance(cfg, bool) or not np.isfinite(cfg):
            raise ValueError(f"cfg={cfg!r} is invalid; expected a finite guidance weight (0: unguided)")
        null = getattr(self.denoiser, "null_channels", None)
        if cfg != 0 and null is None:
            raise ValueError(f"cfg={cfg!r} needs a model trained with a null condition (model.cond_dropout > 0); "
                             f"this one has model.cond_dropout={self.config.model.cond_dropout}: expected cfg=0")
        if cfg != 0 and not null:
            raise ValueError(f"cfg={cfg!r} would guide nothing: this model's null condition drops no channel (its "
                             "conditions are Dirichlet data only, which stay); expected cfg=0, or a model that "
                             "takes sources, coefficients or observations as conditions")

    def _check_tol(self, tol, estimate: bool) -> float | None:
        if tol is None:
            return None
        if (not isinstance(tol, (int, float, np.integer, np.floating)) or isinstance(tol, (bool, np.bool_))
                or not 0 < tol < np.inf):
            raise ValueError(f"tol={tol!r} is invalid; expected a finite number > 0 (e.g. 1e-4) or None")
        if not estimate:
            raise ValueError("tol needs the error estimate; expected estimate=True with tol")
        if not self.problem.offers_residual:
            self.problem.iterative_solve()  # raises: says why polish is not offered
        return float(tol)

    def _estimate(self, out: np.ndarray, batch: dict[str, np.ndarray], tol: float | None,
                  info: SolveInfo) -> np.ndarray:
        """Estimate each sample's error; with ``tol``, polish the samples above it one iteration
        at a time. Fills ``info`` and warns; returns the answer (B, N, N)."""
        import warnings

        names = self.problem.condition_fields
        count = len(out)
        est, improved = self.problem.estimate_error(out, *(batch[k] for k in names))
        est = np.atleast_1d(est).astype(np.float64)
        iters = np.array(info.polish_iterations or [0] * count, dtype=np.int64)
        if tol is not None:
            out = out.copy()
            spent = 0
            need = np.flatnonzero(est > tol)
            while len(need) and spent < TOL_MAX_ITERATIONS:
                out[need] = improved[need]  # the iteration the estimate took
                iters[need] += 1
                e, imp = self.problem.estimate_error(out[need], *(batch[k][need] for k in names))
                est[need], improved[need] = np.atleast_1d(e), imp
                spent += 1
                need = need[est[need] > tol]
            # a polished sample is returned one iteration past the answer whose estimate met tol:
            # that iteration is already computed, and it leaves a few per cent of the error that
            # the estimate read (an estimate reads 0.9-1.0 of the truth; its estimate, kept in
            # info, is then an upper bound)
            done = np.flatnonzero((iters > 0) & (est <= tol))
            out[done] = improved[done]
            iters[done] += 1
            info.tol_met = [bool(e <= tol) for e in est]
            if len(need):
                warnings.warn(f"tol={tol:g} was not reached for {len(need)} of {count} samples after "
                              f"{TOL_MAX_ITERATIONS} iterations of polish (estimates up to {est.max():.2e}); "
                              "see info.tol_met and info.error_estimate", AccuracyWarning, stacklevel=3)
        else:
            high = est > WARN_ABOVE
            if high.any():
                warnings.warn(f"{int(high.sum())} of {count} samples have an estimated error above "
                              f"{WARN_ABOVE:.0%} (largest {est.max():.1%}): the network is off its training "
                              "data; pass tol (e.g. tol=1e-4) to polish them, or see info.error_estimate",
                              AccuracyWarning, stacklevel=3)
        info.error_estimate = [float(e) for e in est]
        if tol is not None or info.polish_iterations:
            info.polish_iterations = [int(i) for i in iters]
        return out

    def _prescale(self, batch: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Zero each field where it does not act and divide each sample by its largest acting
        value (linear problems), so that float32 never under- or overflows; returns the scaled
        fields and the factors (B, 1, 1) to multiply the answer by."""
        n = batch[self.problem.condition_fields[0]].shape[-1]
        batch = {k: np.where(self.problem.support(k, n), v, 0.0) for k, v in batch.items()}
        count = len(batch[self.problem.condition_fields[0]])
        if count == 0:
            return batch, np.ones((count, 1, 1))
        coefficients = self.problem.coefficient_fields
        if coefficients:  # a / c and f / c have the same solution: coefficients of geometric mean 1
            c = np.exp(np.mean(np.concatenate([np.log(batch[k]).reshape(count, -1) for k in coefficients], 1), 1))
            batch = {k: (v if self.problem.field(k).role == DIRICHLET else v / c[:, None, None])
                     for k, v in batch.items()}
        return self.problem.scaled(batch)

    def _to_grid(self, batch: dict[str, np.ndarray], m: int) -> dict[str, np.ndarray]:
        """The fields on the network's m x m grid (restricted sources, transferred ring data)."""
        n = batch[self.problem.condition_fields[0]].shape[-1]
        if m == n or len(batch[self.problem.condition_fields[0]]) == 0:
            return batch
        return {k: (transfer_ring(v, m) if k == self.problem.dirichlet_field else restrict(v, m))
                for k, v in batch.items()}

    def _impose_dirichlet(self, out: np.ndarray, batch: dict[str, np.ndarray]) -> np.ndarray:
        if self.problem.dirichlet_field is not None:
            ring = boundary_mask(out.shape[-1])
            out[:, ring] = batch[self.problem.dirichlet_field][:, ring]
        return out

    def _sample(self, net_batch: dict[str, np.ndarray], sampler: str, steps: int, seed: int, batch_size: int,
                guidance: float, sampler_options: dict | None, progress: bool, info: SolveInfo,
                cfg: float = 0.0) -> np.ndarray:
        """Run the sampler batch by batch on the network's grid; the decoded solutions (B, m, m)."""
        first = self.problem.condition_fields[0]
        count, m = net_batch[first].shape[0], net_batch[first].shape[-1]
        denoiser = classifier_free(self.denoiser, cfg)
        if guidance > 0:
            _, mask_channel = dirichlet_channels(self.problem)
            denoiser = residual_guided(denoiser, self._normalised_residual, guidance, mask_channel)
        sigmas = get_sigmas_karras(steps, self.config.model.sigma_min, self.config.model.sigma_max,
                                   device=self.device).to(self.dtype)
        step = SAMPLERS[sampler]
        out = np.empty((count, m, m))
        starts = range(0, count, batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="solve", unit="batch")
        for start in starts:
            stop = min(start + batch_size, count)
            chunk = {k: torch.as_tensor(v[start:stop], dtype=self.dtype, device=self.device)
                     for k, v in net_batch.items()}
            cond, s = encode(self.problem, self.norm, chunk)
            cond = cond.contiguous(memory_format=self.memory_format)
            count_b = stop - start
            x = randn((count_b, 1, m, m), _generators(seed, start, count_b, 0), self.device, self.dtype) * sigmas[0]
            x = x.contiguous(memory_format=self.memory_format)
            gens = _generators(seed, start, count_b, 1)
            # inference mode where no gradient is taken (residual guidance differentiates)
            with torch.no_grad() if guidance > 0 or getattr(self.denoiser, "energy", False) else torch.inference_mode():
                x, nfe = step(denoiser, x, sigmas, cond, generator=gens, **(sampler_options or {}))
            info.nfe = max(info.nfe, int(nfe) * (2 if cfg else 1))  # network evaluations
            out[start:stop] = decode_solution(self.norm, x, s).double().cpu().numpy()
        return out

    def _normalised_residual(self, x0, cond):
        """PDE residual of a normalised denoised estimate, in units of the scaled condition."""
        fields = decode_fields(self.problem, self.norm, cond)
        phi = x0[:, 0] * self.norm.solution_rms
        return self.problem.residual_terms(phi, *(fields[k] for k in self.problem.condition_fields))

    # ---------------------------------------------------------------- observations
    def reconstruct(self, samples: int = 8, seed: int = 0, *, method: str | None = None, sigma_y: float = 0.0,
                    sampler: str | None = None, steps: int | None = None, batch_size: int = 64,
                    progress: bool = False, return_samples: bool = False, cg_steps: int = 0, cfg: float = 0.0,
                    holdout: float | None = None, **observed):
        """Sample a joint model's fields given what is observed of them (a joint model only).

        Args:
            samples: posterior draws per observed sample (K >= 1); the mean and spread are
                taken over them.
            seed: noise seed; draw k of sample b uses the stream (seed, b * K + k) whatever the
                batching.
            method: how observations enter besides the network's own inputs
                (:mod:`pdediff.maths.observe`): ``"none"`` (only as inputs of a model trained with
                them, ``model.observe``), ``"dps"`` (guidance through the denoiser with derived
                weights), ``"replace"`` (inpainting), ``"dps+residual"`` or
                ``"replace+residual"`` (followed by a line-search step on the PDE residual with
                the exact operator). None: the model's default, measured best (README,
                "Observations and inverse problems").
            sigma_y: standard deviation of the observation noise, in the fields' own units (of
                log a for a coefficient; 0: exact observations, imposed exactly on the returned
                draws).
            sampler, steps: the sampler and its noise levels (None: the model's own,
                ``config.model.sampler`` and ``config.model.steps``).
            batch_size: draws per network batch.
            progress: a progress bar over batches.
            return_samples: also return every draw (``<field>_samples``, dims sample, draw, y, x).
            cg_steps: with ``dps``, conjugate-gradient refinements of the observations'
                covariance by Tweedie's sigma^2 dD/dx (:func:`pdediff.maths.observe.observation_guided`;
                one backward pass each). Measured on 2 samples of each shipped joint model: with
                2 steps, from 30 % of a coefficient the solution's error went 10.6 % -> 3.8 %;
                from 3 % of a solution it diverged (17 % -> 5,500 %): the network's Jacobian is
                not always a covariance (README). Default 0.
            cfg: classifier-free guidance weight w (a model with ``model.cond_dropout``; the null
                condition drops the observations' channels and the source and coefficient
                conditions): ``D = (1 + w) D(x | c) - w D(x | null)``; 0 is the unguided answer.
            **observed: the fields, each (N, N) or (B, N, N), NaN at the nodes not observed. A
                joint field not given is wholly unknown; a condition field of the model (e.g.
                Dirichlet data ``g``) must be given whole or takes its default. Values where a
                field does not act (a source on the boundary ring) are ignored.

        Returns:
            An ``xarray.Dataset`` with, for every joint field, the posterior mean (``rho``,
            ``phi``, ...), the per-node standard deviation over the draws (``rho_std``, ...) and
            the observation mask of the given fields (``rho_observed``, ...); the condition
            fields; ``residual``, the PDE residual of the means (interior equations and the
            ring's data); ``residual_rel`` per sample. Dims (y, x) for one (N, N) sample, else
            (sample, y, x). ``attrs`` hold the method, nfe, seconds and settings.

        Raises:
            ValueError: a forward model; an observation of the wrong shape, with inf, or with
                no observed node; a sample with no observed node in any field; ``samples < 1``;
                a bad method, sigma_y, steps or batch_size.
        """
        import xarray as xr

        from pdediff.maths import observe
        from pdediff.solver import reconstruct as stage
        from pdediff.learning.conditioning import joint_conditions, joint_decode_field, joint_encode, joint_encode_field

        if method is None:
            method = self.default_reconstruct_method()
        if holdout is not None and (not isinstance(holdout, (int, float, np.integer, np.floating))
                                    or isinstance(holdout, bool) or not 0 <= holdout < 1):
            raise ValueError(f"holdout={holdout!r} is invalid; expected a share in [0, 1)")
        if method in stage.METHODS:
            _check_integers(samples=(samples, 1), seed=(seed, 0))
            if samples > 100_000:
                raise ValueError(f"samples={samples!r} is invalid; expected an integer in [1, 100000]")
            if (not isinstance(sigma_y, (int, float, np.integer, np.floating)) or isinstance(sigma_y, bool)
                    or not 0 <= sigma_y < np.inf):
                raise ValueError(f"sigma_y={sigma_y!r} is invalid; expected a finite number >= 0")
            _check_flags(progress=progress, return_samples=return_samples)
            if method == "gaussian":
                return stage.run_gaussian(self, samples, seed, float(sigma_y), return_samples, observed)
            _check_integers(batch_size=(batch_size, 1))
            self._check_cfg(cfg)
            if cfg:
                raise ValueError(f"cfg={cfg!r} is not offered with method='diffusion' (the observations enter through "
                                 "the exact operator, not the network); expected cfg=0")
            if steps is None and sampler is None:
                steps = stage.DIFFUSION_STEPS
            sampler, steps = self._check_options(sampler, steps, seed, batch_size, 0.0, 0, "amg", None, False, False)
            return stage.run_diffusion(self, samples, seed, float(sigma_y), return_samples, observed, sampler=sampler,
                                       steps=steps, batch_size=batch_size, progress=progress,
                                       holdout=stage.HOLDOUT if holdout is None else float(holdout))
        if holdout:
            raise ValueError(f"holdout={holdout!r} is offered with method='gaussian' or 'diffusion' only; expected None")
        joint = tuple(self.config.model.joint)
        if not joint:
            raise ValueError(f"this model is a forward model of {self.problem.solution_field} given "
                             f"{list(self.problem.condition_fields)} (its posterior is a spike); reconstruct needs "
                             f"a joint model: expected one of the shipped '-joint' models (pdediff.models.MODELS) or a checkpoint "
                             f"with model.joint, or method='gaussian' (the Gaussian prior of the training law)")
        _check_integers(samples=(samples, 1), batch_size=(batch_size, 1), seed=(seed, 0), cg_steps=(cg_steps, 0))
        if samples > 100_000:
            raise ValueError(f"samples={samples!r} is invalid; expected an integer in [1, 100000]")
        if method not in observe.METHODS:
            raise ValueError(f"method={method!r} is unknown; expected one of {list(stage.METHODS + observe.METHODS)}")
        if method == "none" and not self.config.model.observe:
            raise ValueError("method='none' would ignore the observations: this joint model does not take them as "
                             "inputs (model.observe); expected 'dps', 'replace', 'dps+residual' or 'replace+residual'")
        if (not isinstance(sigma_y, (int, float, np.integer, np.floating)) or isinstance(sigma_y, bool)
                or not 0 <= sigma_y < np.inf):
            raise ValueError(f"sigma_y={sigma_y!r} is invalid; expected a finite number >= 0")
        _check_flags(progress=progress, return_samples=return_samples)
        sampler, steps = self._check_options(sampler, steps, seed, batch_size, 0.0, 0, "amg", None, False, False)
        self._check_cfg(cfg)
        given, masks, single = self._observations(joint, observed)
        count, n = next(iter(given.values())).shape[0], next(iter(given.values())).shape[-1]
        t0 = time.perf_counter()

        # the model's units: every field encoded with NaN filled (coefficients with 1: log 1 = 0)
        filled = {k: np.where(np.isfinite(v), v, 1.0 if self._is_coefficient(k) else 0.0) for k, v in given.items()}
        conds = {k: torch.as_tensor(filled[k], dtype=self.dtype, device=self.device)
                 for k in joint_conditions(self.problem, joint)}
        y = torch.zeros((count, len(joint), n, n), dtype=self.dtype, device=self.device)
        mask = torch.zeros_like(y)
        for i, k in enumerate(joint):
            if k in given:
                f = torch.as_tensor(filled[k], dtype=self.dtype, device=self.device)
                y[:, i] = joint_encode_field(self.problem, self.norm, k, f)
                mask[:, i] = torch.as_tensor(masks[k], dtype=self.dtype, device=self.device)
        self._warn_scale(y, mask, joint)
        # Dirichlet data are never joint fields (check_joint), so a problem with a ring has conditions
        _, cond = joint_encode(self.problem, self.norm, joint, conds) if conds else (None, None)
        if self.config.model.observe:  # the network takes the observations as inputs
            from pdediff.learning.conditioning import observation_channels

            obs = observation_channels(y, mask)
            cond = obs if cond is None else torch.cat([cond, obs], dim=1)
        sigma_data = float(self.denoiser.sigma_data)
        # sigma_y in each channel's units: the same relative noise where the fields differ in scale
        unit = torch.tensor([self._joint_unit(k) for k in joint], dtype=self.dtype, device=self.device)
        sigmas = get_sigmas_karras(steps, self.config.model.sigma_min, self.config.model.sigma_max,
                                   device=self.device).to(self.dtype)
        total = count * samples
        draws = np.empty((len(joint), total, n, n))
        starts = range(0, total, batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="reconstruct", unit="batch")
        nfe = 0
        for start in starts:
            stop = min(start + batch_size, total)
            which = torch.as_tensor(np.arange(start, stop) // samples, device=self.device)
            yb, mb = y[which], mask[which]
            cb = None if cond is None else cond[which]
            conds_b = {k: given[k][np.arange(start, stop) // samples] for k in joint_conditions(self.problem, joint)}
            posterior = self._posterior(method, yb, mb, cb, sigma_data, float(sigma_y) / unit, joint, conds_b,
                                        int(cg_steps), cfg)
            x = randn((stop - start, len(joint), n, n), _generators(seed, start, stop - start, 0), self.device,
                      self.dtype) * sigmas[0]
            with torch.no_grad():
                x, used = SAMPLERS[sampler](posterior, x, sigmas, cb, generator=_generators(seed, start, stop - start, 1))
            nfe = max(nfe, int(used) * (2 if cfg else 1))
            for i, k in enumerate(joint):
                draws[i, start:stop] = joint_decode_field(self.problem, self.norm, k, x[:, i]).double().cpu().numpy()
        draws = draws.reshape(len(joint), count, samples, n, n)
        out = {}
        for i, k in enumerate(joint):
            d = draws[i]
            if k in given and sigma_y == 0:  # exact observations are the values
                d = np.where(masks[k][:, None], given[k][:, None], d)
            d = self._impose_ring(k, d, given)
            if not np.all(np.isfinite(d)):
                raise ValueError(f"method={method!r} with sampler={sampler!r} and steps={steps} diverged (a non-finite "
                                 f"{k}); expected a stable setting: more steps, or the model's own sampler")
            out[k] = d
        seconds = time.perf_counter() - t0
        return self._posterior_dataset(joint, out, given, masks, single, samples, return_samples,
                                       dict(method=method, sigma_y=float(sigma_y), sampler=sampler, steps=int(steps),
                                            nfe=nfe, samples=int(samples), seconds=seconds))

    # ---------------------------------------------------------------- likelihood
    def log_likelihood(self, probes: int = 1, seed: int = 0, *, steps: int = 32, divergence: str = "hutchinson",
                       probe: str = "rademacher", bits: bool = False, batch_size: int = 16,
                       progress: bool = False, **fields):
        """The log-density of whole fields under a joint model, through the probability-flow ODE
        (:mod:`pdediff.maths.likelihood`): a trust score, higher for fields like the training data.

        Args:
            probes: Hutchinson-Skilling probe vectors per sample (``divergence="hutchinson"``);
                the estimate is unbiased, its spread falls as 1 / sqrt(probes).
            seed: the probes' seed; sample b uses the stream (seed, b) whatever the batching.
            steps: Runge-Kutta intervals in log sigma from ``model.sigma_min`` to
                ``model.sigma_max`` (4 network evaluations each, plus one backward pass per probe).
            divergence: ``"hutchinson"`` or ``"exact"`` (one backward pass per unknown node and
                field: small grids only).
            probe: ``"rademacher"`` (the smaller spread) or ``"gaussian"``.
            bits: return bits per dimension, ``-log2 p / d`` over the d unknown nodes, instead of nats.
            batch_size: samples per network batch.
            progress: a progress bar over batches.
            **fields: every joint field of the model (``rho`` and ``phi``, ``a`` and ``u``), each
                (N, N) or (B, N, N) with no NaN; a condition field (Dirichlet data ``g``) whole,
                or its default.

        Returns:
            log p per sample in nats (float for one (N, N) sample, else (B,) float64), the
            density of the joint fields given the conditions in the fields' own units (the
            normalisation's Jacobian, log a for a coefficient, is included); only the nodes
            where each field is unknown count (a solution's ring holds the Dirichlet data, a
            source's ring is zero). With ``bits``: bits per dimension.

        Raises:
            ValueError: a forward model (its posterior is a spike); ``probes < 1``; a missing
                joint field, a field of the wrong shape or with NaN; bad options.
        """
        from pdediff.maths import likelihood

        joint = tuple(self.config.model.joint)
        if not joint:
            name = f"{self.problem.name}-joint"
            from pdediff.models import MODELS

            hint = f"load_solver({name!r})" if name in MODELS else "a model trained with model.joint"
            raise ValueError(f"log_likelihood needs a joint model; this forward model's density of "
                             f"{self.problem.solution_field} given {list(self.problem.condition_fields)} is a spike "
                             f"(the PDE fixes the solution), so it has no finite log-density: expected {hint}")
        _check_integers(probes=(probes, 1), steps=(steps, 1), seed=(seed, 0), batch_size=(batch_size, 1))
        if divergence not in likelihood.DIVERGENCES:
            raise ValueError(f"divergence={divergence!r} is unknown; expected one of {list(likelihood.DIVERGENCES)}")
        if probe not in likelihood.PROBES:
            raise ValueError(f"probe={probe!r} is unknown; expected one of {list(likelihood.PROBES)}")
        _check_flags(bits=bits, progress=progress)
        given, single, x0, cond = self._whole_joint(joint, fields, "log_likelihood")
        count, n = x0.shape[0], x0.shape[-1]
        free = torch.stack([torch.as_tensor(unknown_nodes(self.problem, k, n)) for k in joint]).to(self.device, self.dtype)[None]
        dims = float(free.sum())
        # the Jacobian of the encoding, per sample: log p(fields) = log p(x) + log |dx / dfields|
        jacobian = np.zeros(count)
        for i, k in enumerate(joint):
            acts = free[0, i].cpu().numpy() > 0
            jacobian -= acts.sum() * np.log(self._joint_unit(k))
            if self._is_coefficient(k):  # x = (log a - offset) / scale
                jacobian -= np.log(given[k][:, acts]).sum(axis=1)
        sigma_data = float(self.denoiser.sigma_data)
        m = self.config.model
        sigmas = likelihood.log_sigmas(int(steps) + 1, m.sigma_min, m.sigma_max, dtype=self.dtype)
        prior_std = float(np.hypot(m.sigma_max, sigma_data))
        out = np.empty(count)
        starts = range(0, count, batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="log_likelihood", unit="batch")
        for start in starts:
            stop = min(start + batch_size, count)
            xb = x0[start:stop].to(self.device)
            cb = None if cond is None else cond[start:stop].to(self.device)
            v = None
            if divergence == "hutchinson":
                v = likelihood.draw_probes(xb.shape, probes, probe, _generators(seed, start, stop - start, 0),
                                           device=self.device, dtype=self.dtype)
            logp, _ = likelihood.ode_log_likelihood(self.denoiser, xb, cb, sigmas, free, prior_std, v)
            out[start:stop] = logp.cpu().numpy()
        out = out + jacobian
        if bits:
            out = -out / (dims * np.log(2.0))
        return float(out[0]) if single else out

    def _whole_joint(self, joint, fields: dict, caller: str):
        """Check whole joint fields and encode them: ``(given, single, x0, cond)``, the
        condition with empty observation channels for a ``model.observe`` network (the prior)
        and the solution's ring taken from the Dirichlet data (where it is not a coordinate)."""
        from pdediff.learning.conditioning import joint_encode, observation_channels

        missing = [k for k in joint if fields.get(k) is None]
        if missing:
            raise ValueError(f"{missing} are missing; {caller} scores whole fields: expected every one of "
                             f"{list(joint)} as an (N, N) or (B, N, N) array")
        given, masks, single = self._observations(joint, fields)
        n = given[joint[0]].shape[-1]
        for k in joint:
            if not masks[k][:, unknown_nodes(self.problem, k, n)].all():
                raise ValueError(f"{k} contains NaN; {caller} scores whole fields: expected finite values at "
                                 "every node")
        g = self.problem.dirichlet_field
        if g is not None:  # the solution's ring is the data, a condition
            k = self.problem.solution_field
            given = {**given, k: np.where(boundary_mask(n), given[g], given[k])}
        t = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in given.items()}
        x0, cond = joint_encode(self.problem, self.norm, joint, t)
        x0 = x0.to(self.dtype).to(self.device)
        cond = None if cond is None else cond.to(self.dtype).to(self.device)
        if self.config.model.observe:  # the prior: nothing observed
            obs = observation_channels(torch.zeros_like(x0), torch.zeros_like(x0))
            cond = obs if cond is None else torch.cat([cond, obs], dim=1)
        return given, single, x0, cond

    def energy(self, sigma: float = 0.05, **fields):
        """The energy ``E(x, sigma, c)`` of an energy-parameterised model (``model.energy``) at
        whole fields, per sample: lower for fields the model finds likely (its score is
        ``-grad_x E``). A trust score for (condition, solution) pairs.

        Args:
            sigma: the noise level the energy is read at, in the model's units (small: near
                the data; the fields are not noised).
            **fields: a forward model's condition fields and its solution (``rho``, ``g``,
                ``phi``), or a joint model's joint fields and conditions; each (N, N) or (B, N, N).

        Returns:
            E per sample (float for one (N, N) sample, else (B,) float64), in nats of the
            noised density up to a constant that depends on sigma only.

        Raises:
            ValueError: a model without an energy; a bad sigma; a missing or ill-shaped field.
        """
        if not getattr(self.denoiser, "energy", False):
            raise ValueError("energy needs an energy-parameterised model (model.energy: true); this one outputs its "
                             "score directly")
        if not isinstance(sigma, (int, float, np.floating)) or isinstance(sigma, bool) or not 0 < sigma < np.inf:
            raise ValueError(f"sigma={sigma!r} is invalid; expected a finite noise level > 0")
        joint = tuple(self.config.model.joint)
        if joint:
            _, single, x, cond = self._whole_joint(joint, fields, "energy")
        else:
            name = self.problem.solution_field
            if fields.get(name) is None:
                raise ValueError(f"{name} is missing; the energy scores a pair: expected {name} with the conditions")
            solution = fields.pop(name)
            batch = self._fields((), fields)
            first = batch[self.problem.condition_fields[0]]
            single = first.ndim == 2
            solution = as_field(name, solution, like=first, dtype=np.float64)
            batch = {k: (v[None] if single else v) for k, v in batch.items()}
            # float64 through the encoding: the per-sample scale keeps any magnitude in range
            t = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in batch.items()}
            cond, s = encode(self.problem, self.norm, t)
            x = encode_solution(self.norm, torch.as_tensor(solution, dtype=torch.float64).reshape(cond.shape[0], *cond.shape[-2:]), s)
            x, cond = x.to(self.device, self.dtype), cond.to(self.device, self.dtype)
        with torch.no_grad():
            e = self.denoiser.energy_value(x, float(sigma), cond).double().cpu().numpy()
        return float(e[0]) if single else e

    def _warn_scale(self, y: torch.Tensor, mask: torch.Tensor, joint) -> None:
        """A joint model knows fields of its training law's size (each field has one scale; it is
        not equivariant like the forward models): warn when observations are far from it."""
        import warnings

        for i, k in enumerate(joint):
            seen = mask[:, i] > 0
            if seen.any():
                rms = float(y[:, i][seen].pow(2).mean().sqrt())
                # the shipped joint models' training samples span 0.004-3.2 and 0.01-2 times it
                if not 1e-3 <= rms <= 10:
                    warnings.warn(f"the observations of {k} have {rms:.3g} times the size of the training data's "
                                  f"{k} (RMS in the model's units); a joint model learnt fields of its training law's "
                                  "size: rescale the fields (the PDE is linear) and the answer", AccuracyWarning,
                                  stacklevel=3)

    def _wholly_observed(self, mask: torch.Tensor, joint) -> torch.Tensor:
        """(B, C, 1, 1): 1 where a sample's field is observed at every node where it is unknown."""
        n = mask.shape[-1]
        out = torch.zeros(mask.shape[:2] + (1, 1), dtype=mask.dtype, device=mask.device)
        for i, k in enumerate(joint):
            acts = torch.as_tensor(unknown_nodes(self.problem, k, n), device=mask.device)
            out[:, i, 0, 0] = (mask[:, i][:, acts] > 0).all(dim=1).to(mask.dtype)
        return out

    def _is_coefficient(self, name: str) -> bool:
        return name in self.problem.coefficient_fields

    def _joint_unit(self, name: str) -> float:
        """A field's scale in the joint model's units (coefficients: of their logarithm)."""
        return joint_unit(self.problem, self.norm, name)

    def _observations(self, joint, observed: dict):
        """Check and gather ``reconstruct``'s fields: ``(given, masks, single)`` with every given
        field as (B, N, N) float64 (NaN where not observed; conditions whole, defaults filled),
        the observed nodes of each joint field where it acts, and whether one (N, N) sample came."""
        from pdediff.learning.conditioning import joint_conditions

        from pdediff.solver.observations import read_arrays

        arrays, shape, first = read_arrays(self.problem, observed)
        if not any(k in arrays for k in joint):
            raise ValueError(f"nothing of {list(joint)} is observed; expected at least one of them, NaN where "
                             "not observed")
        single = len(shape) == 2
        arrays = {k: (v[None] if single else v) for k, v in arrays.items()}
        count, n = arrays[first].shape[0], shape[-1]
        if count == 0:
            raise ValueError(f"{first} has shape {shape}: an empty batch; expected at least one sample")
        trained = self.grid_size
        if trained and n != trained:
            raise ValueError(f"{first} has shape {shape}; this joint model was trained on ({trained}, {trained}) "
                             f"node grids; expected that grid")
        self.problem.check_grid(n)
        for k in joint_conditions(self.problem, joint):
            if k not in arrays:
                default = self.problem.field(k).default
                if default is None:
                    raise ValueError(f"{k} is a condition of this joint model and is required; expected an array of "
                                     f"shape {shape} with no NaN")
                arrays[k] = np.full((count, n, n), float(default))
            elif np.isnan(arrays[k]).any():
                raise ValueError(f"{k} is a condition of this joint model (not one of {list(joint)}); expected it whole, "
                                 f"with no NaN")
        masks = {}
        seen = np.zeros(count, dtype=bool)
        for k in joint:
            if k not in arrays:
                continue
            m = np.isfinite(arrays[k]) & unknown_nodes(self.problem, k, n)
            if not m.any():
                raise ValueError(f"{k} has no observed node where it acts (all NaN); expected at least one finite "
                                 f"value, or leave {k} out to treat it as unknown")
            if self._is_coefficient(k) and not (arrays[k][m] > 0).all():
                raise ValueError(f"{k} has observed values <= 0 (min {arrays[k][m].min()!r}); expected {k} > 0")
            masks[k] = m
            seen |= m.reshape(count, -1).any(axis=1)
        if not seen.all():
            b = int(np.flatnonzero(~seen)[0])
            raise ValueError(f"sample {b} of the batch has no observed node in any of {list(masks)} (all NaN); "
                             "expected at least one observed node in every sample")
        return arrays, masks, single

    def _posterior(self, method: str, y, mask, cond, sigma_data: float, sigma_y: torch.Tensor, joint, conds=None,
                   cg_steps: int = 0, cfg: float = 0.0):
        """The posterior denoiser of ``method`` (see :mod:`pdediff.maths.observe`)."""
        from pdediff.maths import observe

        sy = sigma_y.view(1, -1, 1, 1)
        base, _, extra = method.partition("+")
        denoiser = classifier_free(self.denoiser, cfg)
        if base == "none":
            posterior = denoiser
        else:
            # a field observed at every node where it acts: replacement is its exact posterior
            # denoiser given D (its value; the others respond through the network's inputs).
            # Guidance through the network with thousands of correlated observations counted
            # as independent overshoots (full rho: phi 92 % off)
            whole = self._wholly_observed(mask, joint) if base == "dps" else torch.ones_like(mask[:, :, :1, :1])
            posterior = observe.replacement(denoiser, y, mask * whole, sigma_data, sy)
            if base == "dps" and bool((mask * (1 - whole)).any()):
                posterior = observe.observation_guided(posterior, y, mask * (1 - whole), sigma_data, sy, cg_steps)
        if extra == "residual" and self.problem.offers_residual:
            # only where the solution's data (the other joint fields) are wholly observed: there
            # the PDE fixes the solution. Elsewhere the step ties it to a guessed source and
            # undoes the observations' pull (3 % of phi: 24 % -> 41 % error of phi)
            whole = self._wholly_observed(mask, joint)[:, :, 0, 0] > 0
            others = [i for i, k in enumerate(joint) if k != self.problem.solution_field]
            known = whole[:, others].all(dim=1).cpu().numpy()
            if known.any():
                posterior = self._solver_step(posterior, conds, joint, known)
        return posterior

    def _solver_step(self, denoiser, conds: dict, joint, known: np.ndarray):
        """Follow each denoised estimate of the samples ``known`` (B,) by one iteration of the
        problem's preconditioned iterative method (``Problem.estimate_step``, e.g. a conjugate-gradient step
        preconditioned by a V-cycle) on the solution field, with the other
        fields as denoised (sources, coefficients) or given (conditions): PDE-residual guidance
        with the exact operator, which contracts the solution's error given the others by the
        method's factor at every call."""
        from pdediff.learning.conditioning import joint_decode_field, joint_encode_field

        k = joint.index(self.problem.solution_field)

        method = getattr(self.problem, "guidance_method", None) or self.problem.estimate_method
        sigma_data = float(self.denoiser.sigma_data)

        def posterior(x, sigma, cond):
            d = denoiser(x, sigma, cond).detach()
            # above sigma_data the estimate is a blurred mean of many fields: solving the PDE on
            # it says nothing, and its coefficients may be extreme (exp of a noisy channel)
            if float(torch.as_tensor(sigma).max()) > sigma_data:
                return d
            fields = {name: joint_decode_field(self.problem, self.norm, name, d[:, i]).double().cpu().numpy()
                      for i, name in enumerate(joint)}
            fields.update(conds)
            solution = fields[self.problem.solution_field]
            # at high noise a denoised coefficient exp(...) may overflow: no step for those samples
            ok = known & np.all([np.isfinite(v).all(axis=(-2, -1)) for v in fields.values()], axis=0)
            if not ok.any():
                return d
            improved = solution.copy()
            with np.errstate(all="ignore"):
                improved[ok] = self.problem.estimate_step(
                    solution[ok], *(fields[n][ok] for n in self.problem.condition_fields), method=method)
            if not np.all(np.isfinite(improved)):
                return d
            step = joint_encode_field(self.problem, self.norm, self.problem.solution_field,
                                      torch.as_tensor(improved, dtype=d.dtype, device=d.device))
            return torch.cat([d[:, :k], step[:, None], d[:, k + 1:]], dim=1)

        return posterior

    def _impose_ring(self, name: str, d: np.ndarray, given: dict) -> np.ndarray:
        """Dirichlet data on the solution's ring and zero sources there, exactly (float64)."""
        g = self.problem.dirichlet_field
        if g is None:
            return d
        ring = boundary_mask(d.shape[-1])
        if name == self.problem.solution_field:
            return np.where(ring, given[g][:, None], d)
        if name in self.problem.condition_fields and self.problem.field(name).role != "coefficient":
            return np.where(ring, 0.0, d)
        return d

    def _posterior_dataset(self, joint, draws: dict, given: dict, masks: dict, single: bool, samples: int,
                           return_samples: bool, attrs: dict):
        import xarray as xr

        n = next(iter(draws.values())).shape[-1]
        grid = self.problem.grid(n)
        dims = ("sample", "y", "x")
        data = {}
        means = {}
        for k in joint:
            means[k] = draws[k].mean(axis=1)
            data[k] = (dims, means[k])
            data[f"{k}_std"] = (dims, draws[k].std(axis=1, ddof=1) if samples > 1 else np.zeros_like(means[k]))
            if k in masks:
                data[f"{k}_observed"] = (dims, masks[k])
            if return_samples:
                data[f"{k}_samples"] = (("sample", "draw", "y", "x"), draws[k])
        for k in self.problem.condition_fields:
            if k not in joint:
                data[k] = (dims, given[k])
        fields = [means[k] if k in joint else given[k] for k in self.problem.condition_fields]
        solution = means[self.problem.solution_field]
        if self.problem.offers_residual:
            data["residual"] = (dims, self.problem.residual(solution, *fields))
            data["residual_rel"] = (("sample",), np.atleast_1d(self.problem.relative_residual(solution, *fields)))
        ds = xr.Dataset(data, coords={"sample": np.arange(solution.shape[0]), "y": grid.y, "x": grid.x},
                        attrs={"problem": self.problem.name, "N": grid.n, "h": grid.h, "joint": list(joint), **attrs})
        return ds.isel(sample=0) if single else ds

    def solve_dataset(self, *fields, **kwargs):
        """Like :meth:`solve` for a batch, returned as an ``xarray.Dataset`` (sample, y, x)."""
        import xarray as xr

        names = self.problem.condition_fields
        given = {**dict(zip(names, fields)), **{k: kwargs.pop(k) for k in list(kwargs) if k in names}}
        phi = self.solve(**given, **kwargs)
        phi = phi[None] if phi.ndim == 2 else phi
        grid = self.problem.grid(phi.shape[-1])
        dims = ("sample", "y", "x")
        data = {k: (dims, np.broadcast_to(np.asarray(v, dtype=np.float64), phi.shape)) for k, v in given.items()
                if v is not None}
        data[self.problem.solution_field] = (dims, phi)
        return xr.Dataset(data, coords={"sample": np.arange(phi.shape[0]), "y": grid.y, "x": grid.x},
                          attrs={"problem": self.problem.name, "N": grid.n, "h": grid.h})

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_checkpoint(cls, path, device="cpu", weights: str = "ema") -> "Solver":
        """A solver of the checkpoint at ``path`` (see :func:`pdediff.learning.model.load_denoiser`)."""
        loaded = load_denoiser(path, weights=weights)
        return cls(loaded.denoiser, loaded.config, loaded.norm, loaded.card, device=device)


def check_device(argument: str, device) -> torch.device:
    """A torch device that this machine has, or a ValueError naming ``argument``."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{argument}={device!r} is not a torch device; expected e.g. 'cpu' or 'cuda'") from None
    backend = getattr(torch, dev.type, None)
    if dev.type != "cpu" and not (backend is not None and hasattr(backend, "is_available") and backend.is_available()):
        raise ValueError(f"{argument}={device!r}: this torch build sees no {dev.type} device; expected 'cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"{argument}={device!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    return dev


def load_solver(model=None, *, device="cpu", **params) -> Solver:
    """Load a :class:`Solver`: a shipped model by name (a key of :data:`pdediff.models.MODELS`;
    None: the default, ``pdediff.models.DEFAULT``) or a checkpoint file by path.

    ``params`` are problem parameters that the caller expects (e.g. ``k=8.0``); they must equal
    the model's, which it was trained with and cannot change.

    Raises:
        ValueError: an unknown model name (listing the names), a missing or invalid checkpoint,
            a device this machine lacks, or parameters that differ from the model's.
    """
    from pdediff.models import DEFAULT, MODELS, model_path

    check_device("device", device)
    if model is None:
        model = DEFAULT
    if isinstance(model, str) and model in MODELS:
        path = model_path(model)
    elif isinstance(model, (str, os.PathLike)) and Path(model).suffix:
        path = model
    else:
        raise ValueError(f"model={model!r} is neither a shipped model (one of {sorted(MODELS)}) nor a checkpoint "
                         f"file path (*.safetensors)")
    solver = Solver.from_checkpoint(path, device=device)
    theirs = solver.problem.params()
    unknown = sorted(set(params) - set(theirs))
    if unknown:
        raise ValueError(f"problem {solver.problem.name!r} has no parameter(s) {unknown}; it has {theirs or 'none'}")
    differ = {k: v for k, v in params.items() if v != theirs[k]}
    if differ:
        raise ValueError(f"{', '.join(f'{k}={v!r}' for k, v in differ.items())} differs from the model's "
                         f"{', '.join(f'{k}={theirs[k]!r}' for k in differ)}; expected the parameters it was "
                         f"trained with (train another model for others)")
    return solver
