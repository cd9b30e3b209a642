"""The checks of every option and field a user passes to a :class:`pdediff.solver.Solver`, before
any work: a ValueError that names the argument, the value and what was expected.
"""

from __future__ import annotations

import inspect

import numpy as np
import torch

from pdediff.maths.samplers import SAMPLERS, TABLEAUS
from pdediff.physics.problems import as_field

#: The fewest noise levels each sampler is asked to take when the user picks a sampler other than
#: the model's own without giving ``steps``: Heun at 2 or 3 levels is unstable (its correction at
#: sigma_min spans the whole step; 78 % and 2 % error against 1.2 % at 5 and 10 levels,
#: ``python -m benchmarks.sampling``), and the stochastic samplers need small steps to
#: average their noise out.
SAMPLER_STEPS = {"euler": 1, "heun": 10, "adaptive": 2, "euler_maruyama": 32, "pc": 32, "ald": 10}


def check_sampler_options(sampler: str, options) -> None:
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
        "method": (lambda v: isinstance(v, str) and v in TABLEAUS, f"one of {sorted(TABLEAUS)}"),
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


def check_integers(**named) -> None:
    """Each ``name=(value, low)``: an integer (not a bool) >= low, else a ValueError naming it."""
    for name, (value, low) in named.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name}={value!r} is invalid; expected an integer >= {low}")


def check_flags(**named) -> None:
    """Each ``name=value``: True or False, else a ValueError naming it."""
    for name, value in named.items():
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{name}={value!r} is invalid; expected True or False")


def read_fields(model, args, kwargs, any_grid: bool = False, resample: bool = False) -> dict[str, np.ndarray]:
    names = model.problem.condition_fields
    if len(args) > len(names):
        raise ValueError(f"got {len(args)} positional fields; expected at most {len(names)} ({', '.join(names)})")
    given = dict(zip(names, args))
    for k, v in kwargs.items():
        if k not in names:
            raise ValueError(f"{k!r} is not a field of problem {model.problem.name!r}; expected one of {list(names)}")
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
            default = model.problem.field(name).default
            if default is None:
                raise ValueError(f"{name} is required for problem {model.problem.name!r}; expected an array "
                                 f"of shape {out[shaped].shape}")
            out[name] = np.full_like(out[shaped], default)
        else:
            out[name] = as_field(name, given[name], like=out[shaped], dtype=np.float64)
    out = {name: out[name] for name in names}
    model.problem.check_coefficients(out)
    model.problem.check_grid(out[first].shape[-1])
    n = out[first].shape[-1]
    trained = model.grid_size
    if resample:
        if not trained:
            raise ValueError("resample=True needs the model's training grid, and its checkpoint's card names none")
        n = trained  # the network runs on its own grid; the problem checked the requested one
    try:
        model.denoiser.net.check_grid(n, n)
    except ValueError as exc:
        raise ValueError(f"{first} has shape {out[first].shape}: {exc}") from None
    if trained and n != trained and not (any_grid or getattr(model.denoiser.net, "resolution_free", False)):
        raise ValueError(
            f"{first} has shape {out[first].shape}; this {model.config.model.network} model was trained on "
            f"({trained}, {trained}) node grids and is not resolution-free (pass resample=True to solve on "
            f"its grid and interpolate, or any_grid=True to run it on this grid anyway)"
        )
    return out


def check_options(model, sampler, steps, seed, batch_size, guidance, polish, polish_method,
                   sampler_options, any_grid, resample, **flags) -> tuple[str, int]:
    """Validate solve's options; return the sampler and its number of noise levels."""
    if sampler is None:
        sampler = model.config.model.sampler
    elif not isinstance(sampler, str) or sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r} is unknown; expected one of {sorted(SAMPLERS)}")
    if steps is None:
        steps = model.config.model.steps
        if sampler != model.config.model.sampler:
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
    if polish > 0 and not model.problem.offers_residual:
        model.problem.iterative_solve()  # raises: says why polish is not offered
    if guidance > 0 and not model.problem.offers_residual:
        model.problem.residual_terms()  # raises: says why guidance is not offered
    if (polish > 0 or model.problem.offers_residual) and (not isinstance(polish_method, str) or polish_method not in model.problem.iterative_methods):
        raise ValueError(f"polish_method={polish_method!r} is unknown; expected one of "
                         f"{sorted(model.problem.iterative_methods)}")
    check_sampler_options(sampler, sampler_options)
    return sampler, int(steps)

def check_cfg(model, cfg) -> None:
    """Classifier-free guidance needs a finite weight and a model with a null condition."""
    if not isinstance(cfg, (int, float, np.integer, np.floating)) or isinstance(cfg, bool) or not np.isfinite(cfg):
        raise ValueError(f"cfg={cfg!r} is invalid; expected a finite guidance weight (0: unguided)")
    null = getattr(model.denoiser, "null_channels", None)
    if cfg != 0 and null is None:
        raise ValueError(f"cfg={cfg!r} needs a model trained with a null condition (model.cond_dropout > 0); "
                         f"this one has model.cond_dropout={model.config.model.cond_dropout}: expected cfg=0")
    if cfg != 0 and not null:
        raise ValueError(f"cfg={cfg!r} would guide nothing: this model's null condition drops no channel (its "
                         "conditions are Dirichlet data only, which stay); expected cfg=0, or a model that "
                         "takes sources, coefficients or observations as conditions")

def check_tol(model, tol, estimate: bool) -> float | None:
    if tol is None:
        return None
    if (not isinstance(tol, (int, float, np.integer, np.floating)) or isinstance(tol, (bool, np.bool_))
            or not 0 < tol < np.inf):
        raise ValueError(f"tol={tol!r} is invalid; expected a finite number > 0 (e.g. 1e-4) or None")
    if not estimate:
        raise ValueError("tol needs the error estimate; expected estimate=True with tol")
    if not model.problem.offers_residual:
        model.problem.iterative_solve()  # raises: says why polish is not offered
    return float(tol)


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


def check_samples_and_noise(samples, sigma_y) -> None:
    """``reconstruct``'s draws per sample (an integer in [1, 100000]) and observation noise (a
    finite number >= 0), else a ValueError naming the argument."""
    if not isinstance(samples, (int, np.integer)) or isinstance(samples, bool) or not 1 <= samples <= 100_000:
        raise ValueError(f"samples={samples!r} is invalid; expected an integer in [1, 100000]")
    if (not isinstance(sigma_y, (int, float, np.integer, np.floating)) or isinstance(sigma_y, bool)
            or not 0 <= sigma_y < np.inf):
        raise ValueError(f"sigma_y={sigma_y!r} is invalid; expected a finite number >= 0")
