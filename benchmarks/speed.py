"""CPU throughput of the shipped Poisson model: the levers one by one, side by side in one run.

    python -m benchmarks.speed [--samples 128] [--rounds 5] [--compile]

Every setting solves the same ``--samples`` fresh samples of the test law (N = 64, batch 64);
the settings take turns, round after round, and each row reports the median over rounds of the
time per sample, so that a machine whose load changes during the run slows every row alike.
Rows:

* the first row, the baseline: Euler with 2 noise levels (2 NFE), the default memory layout, no
  estimate (the default before the speed work of issue 12);
* channels-last layout; 1 or 2 NFE; the error estimate (batched V-cycle step, and the per-sample
  Gauss-Seidel AMG step it replaced); one thread instead of all;
* the default: the model's own number of noise levels, channels-last, the batched estimate
  (``solver.solve(**fields)``);
* the network alone: ``torch.no_grad`` against ``torch.inference_mode``, and with ``--compile``
  ``torch.compile`` (its compile time reported apart); for a model with ``model.operator_input``,
  the operator guess alone (one V-cycle-preconditioned CG step on the batch).

Writes ``benchmarks/results/speed/speed.md`` (``--out``), with the command in ``COMMAND`` beside it.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from pdediff.physics import metrics
from benchmarks import record_command, results_dir
from pdediff.data.atomic import write_text



def _layout(solver, fmt) -> None:
    solver.memory_format = fmt
    solver.denoiser.to(memory_format=fmt)


def settings(solver, fields: dict) -> dict:
    """Name -> a function solving ``fields`` with that setting (and restoring the solver)."""
    cl, plain = torch.channels_last, torch.contiguous_format

    def run(steps, fmt, estimate, method=None, threads=None):
        def go():
            before_threads, before_method = torch.get_num_threads(), solver.problem.estimate_method
            _layout(solver, fmt)
            if threads:
                torch.set_num_threads(threads)
            if method:
                solver.problem.estimate_method = method
            try:
                return solver.solve(**fields, steps=steps, estimate=estimate)
            finally:
                torch.set_num_threads(before_threads)
                solver.problem.estimate_method = before_method
                _layout(solver, cl)
        return go

    d = int(solver.config.model.steps)
    return {
        "baseline: Euler 2 NFE, default layout, no estimate": run(2, plain, False),
        "2 NFE, channels-last": run(2, cl, False),
        "1 NFE, default layout": run(1, plain, False),
        "1 NFE, channels-last": run(1, cl, False),
        "1 NFE, channels-last, batched V-cycle estimate": run(1, cl, True),
        f"default: {d} NFE, channels-last, per-sample AMG estimate": run(d, cl, True, method="amg"),
        f"default: {d} NFE, channels-last, batched V-cycle estimate": run(d, cl, True),
        "default on 1 thread": run(d, cl, True, threads=1),
    }


def network_settings(solver, fields: dict, compile_it: bool) -> tuple[dict, float | None]:
    """The denoiser alone on one batch of 64: no_grad against inference_mode (and compiled)."""
    from pdediff.learning.conditioning import encode

    batch = {k: torch.as_tensor(v[:64], dtype=solver.dtype) for k, v in fields.items()}
    operator_input = solver.config.model.operator_input
    cond, _ = encode(solver.problem, solver.norm, batch, operator_input)
    cond = cond.contiguous(memory_format=torch.channels_last)
    x = (torch.randn((len(cond), 1) + cond.shape[-2:]) * solver.config.model.sigma_max).contiguous(
        memory_format=torch.channels_last)
    sigma = torch.full((len(cond),), solver.config.model.sigma_max)
    net = solver.denoiser

    def call(fn, ctx):
        def go():
            with ctx():
                return fn(x, sigma, cond)
        return go

    out = {"network, no_grad": call(net, torch.no_grad), "network, inference_mode": call(net, torch.inference_mode)}
    if operator_input:
        given = [fields[k][:64] for k in solver.problem.condition_fields]
        out["the operator guess alone (one V-cycle CG step)"] = lambda: solver.problem.operator_guess(*given)
    compile_s = None
    if compile_it:
        compiled = torch.compile(net)
        t0 = time.perf_counter()
        with torch.inference_mode():
            compiled(x, sigma, cond)
        compile_s = time.perf_counter() - t0
        out["network, inference_mode, torch.compile"] = call(compiled, torch.inference_mode)
    return out, compile_s


def measure(fns: dict, count: int, rounds: int) -> dict:
    """Median over rounds of seconds per sample, the settings interleaved."""
    for fn in fns.values():  # warm up (hierarchies, allocator)
        fn()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) / count)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=128, help="samples a setting solves each round (batch 64)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--compile", action="store_true", help="also time torch.compile on the network")
    p.add_argument("--out", default=str(results_dir("speed") / "speed.md"))
    args = p.parse_args(argv)
    if args.samples < 1 or args.rounds < 1:
        p.exit(2, f"benchmarks.speed: error: --samples={args.samples} and --rounds={args.rounds}; expected "
                  "integers >= 1\n")
    import pdediff
    from pdediff.data.cases import CASES

    solver = pdediff.load_solver()
    case = next(c for c in CASES[solver.problem.name].values() if c.test_split)
    fields = case.draw(args.samples, args.seed, problem=solver.problem, n=solver.grid_size)
    exact = solver.problem.exact_solve(*(fields[k] for k in solver.problem.condition_fields))
    full = settings(solver, fields)
    errors = {name: float(metrics.relative_l2(fn(), exact).mean()) for name, fn in full.items()}
    per_sample = measure(full, args.samples, args.rounds)
    net, compile_s = network_settings(solver, fields, args.compile)
    per_sample_net = measure(net, 64, args.rounds)
    old = per_sample[next(iter(full))]
    lines = [
        "# CPU throughput: `python -m benchmarks.speed"
        + (" --compile" if args.compile else "") + f" --samples {args.samples} --rounds {args.rounds}`", "",
        f"Shipped Poisson model, N = 64, batch 64, {args.samples} samples of the test law a setting, "
        f"median of {args.rounds} interleaved rounds; {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads.", "",
        "| setting | ms per sample | speed-up over the baseline | mean rel L2 |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, t in per_sample.items():
        lines.append(f"| {name} | {1e3 * t:.2f} | {old / t:.2f}x | {errors[name]:.2e} |")
    lines += ["", "The network alone (one call on 64 samples):", "", "| setting | ms per sample | ratio |",
              "| --- | ---: | ---: |"]
    base = per_sample_net["network, no_grad"]
    for name, t in per_sample_net.items():
        lines.append(f"| {name} | {1e3 * t:.2f} | {base / t:.2f}x |")
    if compile_s is not None:
        lines += ["", f"torch.compile took {compile_s:.0f} s before its first call (a new batch size compiles again)."]
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, text)
    record_command(Path(args.out).parent, "speed", argv, [Path(args.out).name])
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
