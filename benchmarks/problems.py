"""A benchmark block per problem beyond the default one: the shipped model against SciPy (and,
for Darcy, neuraloperator's FNO trained as a peer, :mod:`benchmarks.fno_peer`), on its test law
and on laws it never saw.

    python -m benchmarks.problems --problem darcy --data datasets/darcy64/test.h5 --count 64
    python -m benchmarks.problems --problem helmholtz --data datasets/helmholtz64/test.h5 --count 64

For each case: relative L2 error of the model's default sampling (mean, median), two-seed spread,
and after 2 and 5 iterations of the problem's preconditioned polish (Darcy: AMG-CG; Helmholtz:
MINRES with the shifted-Laplacian preconditioner); the FNO peer's error beside it where it applies
(a coefficient field alone). Each case's samples are fresh draws except the test split; the last
case is the test law at twice the training grid (the U-Net solves on its grid and is resampled,
the FNO runs on the finer grid itself).

Time per sample (batch of up to 16, best of 2) at the training N and at 2N: the model (network
only, and with its error estimate, ``solve``'s default), the FNO peer, SciPy's sparse LU factorised per sample, the preconditioned iterative solve from zero to
rtol 1e-8 (set-up included; Darcy's AMG set-up also on its own), and the fast solve where the
problem has one (Helmholtz: DST). Writes ``benchmarks/results/problems/<problem>.md`` (``--out``) and,
beside it, ``<problem>_gallery.png`` (the first sample of each case: field, answer, reference, error),
with the command in ``COMMAND``. The FNO peer is read from
``benchmarks/results/fno_peer/fno-peer.safetensors`` (the fno_peer block's export) by default.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks import record_command, results_dir
from pdediff.data import atomic
from pdediff.physics import metrics
from pdediff.data.cases import Case
from pdediff.physics.coefficients import ChannelField, LogNormalField, ThresholdField
from pdediff.data import load_arrays
from pdediff.tools.plotting import plot_rows
from pdediff.physics.problems import Grid

def fno_peer_path() -> Path:
    """The FNO peer's default file: the export of the fno_peer block (benchmarks.fno_peer)."""
    return results_dir("fno_peer") / "fno-peer.safetensors"


def _draw(family, n: int, count: int, seed: int) -> np.ndarray:
    return family.sample(Grid(n), [np.random.default_rng([seed, 7_777, k]) for k in range(count)])


def layered(n: int, count: int, seed: int, high: float = 20.0, low: float = 1.0) -> np.ndarray:
    """Layered media: ``high`` in bands a(y) = high where sin(2 pi m y + phase) > 0, m from 2 to 6
    (anisotropic, unlike every thresholded Gaussian field)."""
    y = Grid(n).x
    out = []
    for k in range(count):
        rng = np.random.default_rng([seed, 7_777, k])
        m, phase = rng.integers(2, 7), rng.uniform(0, 2 * np.pi)
        band = np.sin(2 * np.pi * m * y + phase) > 0
        out.append(np.broadcast_to(np.where(band, high, low)[:, None], (n, n)).copy())
    return np.stack(out)


def darcy_cases(problem, n: int, count: int, data: str | None) -> dict[str, dict]:
    test = (load_arrays(data, ["a"], limit=count)["a"].astype(np.float64) if data
            else _draw(ThresholdField(), n, count, 0))
    return {
        "test split (threshold, tau = 3)": {"a": test},
        "finer inclusions (threshold, tau = 6)": {"a": _draw(ThresholdField(tau=6.0), n, count, 1)},
        "log-normal": {"a": _draw(LogNormalField(), n, count, 2)},
        "high contrast (threshold, a in {1, 100})": {"a": _draw(ThresholdField(high=100.0, low=1.0), n, count, 4)},
        "rough log-normal (alpha = 1.5, sigma = 2)": {"a": _draw(LogNormalField(alpha=1.5, sigma=2.0), n, count, 5)},
        "layered (bands, a in {1, 20})": {"a": layered(n, count, 6)},
        "channelised (meanders, a in {1, 10})": {"a": _draw(ChannelField(), n, count, 7)},
        f"N = {2 * n}, threshold (trained at {n})": {"a": _draw(ThresholdField(), 2 * n, max(count // 4, 1), 3)},
    }


def source_cases(problem, n: int, count: int, data: str | None) -> dict[str, dict]:
    """A source and Dirichlet data: the test split, the default problem's unseen source families
    (``pdediff.data.cases``), and the test law on twice the grid."""
    def fresh(source, size=n, k=count, seed=0):
        return Case(source, "zero,smooth").draw(k, seed, problem=problem, n=size)

    if data:
        test = {k: v.astype(np.float64) for k, v in load_arrays(data, list(problem.condition_fields), limit=count).items()}
    else:
        test = fresh("blobs,grf")
    return {
        "test split (blobs, grf)": test,
        "point charges & dipoles": fresh("point_dipoles", seed=1),
        "disks & rectangles": fresh("disks_rects", seed=2),
        "rough random fields": fresh("rough", seed=3),
        f"N = {2 * n}, blobs and grf (trained at {n})": fresh("blobs,grf", 2 * n, max(count // 4, 1), 4),
    }


#: Problem name -> its cases ``(problem, n, count, data) -> {case: {field: (B, N, N)}}`` and the
#: law of its timing samples.
CASE_SETS = {"darcy": darcy_cases, "helmholtz": source_cases}


def timed(fn, repeat: int = 2):
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def _take(fields: dict, count: int) -> dict:
    return {k: v[:count] for k, v in fields.items()}


def block(model: str, problem_name: str, data: str | None, count: int, fno: str | None,
          timing_count: int = 16, gallery=None) -> list[str]:
    """The markdown lines of one problem's block (printed as they come); with ``gallery`` (a PNG
    path), the first sample of every case drawn there: its first condition field, the model's
    answer, the reference and the error."""
    import pdediff

    solver = pdediff.load_solver(model)
    solver.fallback = None  # the model alone; benchmarks.darcy_route measures load_solver("darcy")'s routing
    problem = solver.problem
    if problem.name != problem_name:
        raise ValueError(f"--model {model!r} solves {problem.name!r}, not --problem {problem_name!r}")
    n = solver.grid_size or 64
    peer = None
    if fno and problem.coefficient_fields:
        from benchmarks.fno_peer import FNOPeer

        peer = FNOPeer(fno)
    method = "amg" if "amg" in problem.iterative_methods else ""
    lines = [f"Model: {model} ({solver.config.name}, trained at N = {n}); {count} samples a case "
             f"(a quarter at 2N); polish: {problem.iterative_methods and (method or problem.iterative_methods[0])}.",
             ""]
    if peer is not None:
        m = peer.meta
        lines += [f"FNO peer: neuralop FNO(n_modes={tuple(m['arch']['n_modes'])}, hidden_channels="
                  f"{m['arch']['hidden_channels']}), {m['step']} steps of batch {m['recipe']['batch_size']} in "
                  f"{m['elapsed_s']:.0f} s on {m['threads']} thread(s), trained on {m['data']} "
                  "(python -m benchmarks.fno_peer).", ""]
    head = "| case | rel L2 mean | median | seed spread | +2 polish | +5 polish |" + (" FNO peer |" if peer else "")
    lines += [head, "| --- |" + " ---: |" * (head.count("|") - 2)]
    for line in lines:
        print(line, flush=True)
    rows = []
    for name, fields in CASE_SETS[problem.name](problem, n, count, data).items():
        size = next(iter(fields.values())).shape[-1]
        options = {} if size == n else {"resample": True}
        ref = problem.reference_solve(**fields)
        u0 = solver.solve(**fields, **options)
        u1 = solver.solve(**fields, seed=1, **options)
        err = metrics.relative_l2(u0, ref)
        spread = float(np.mean(metrics.seed_spread([u0, u1])))
        polished = [float(np.mean(metrics.relative_l2(solver.solve(**fields, polish=k, **options), ref)))
                    for k in (2, 5)]
        row = (f"| {name} | {np.mean(err):.2e} | {np.median(err):.2e} | {spread:.1e} | "
               f"{polished[0]:.1e} | {polished[1]:.1e} |")
        if peer is not None:
            row += f" {np.mean(metrics.relative_l2(peer.predict(fields['a']), ref)):.2e} |" if set(fields) == {"a"} else " - |"
        lines.append(row)
        print(row, flush=True)
        first = problem.condition_fields[0]
        rows.append((name, fields[first][0], u0[0], ref[0]))
    if gallery is not None:
        plot_rows(gallery, rows, f"{problem.name}: {model}", names=(problem.condition_fields[0], problem.solution_field))

    columns = ["N", "surrogate", "with error estimate"] + (["FNO peer"] if peer else []) + [
        "SciPy LU per sample", f"{method or 'iterative'} to 1e-8 (incl. set-up)"]
    setup, forget = None, lambda: None
    if problem.name == "darcy":
        from pdediff.physics.problems.darcy import amg_preconditioner, clear_amg_cache

        setup, forget = amg_preconditioner, clear_amg_cache
        columns.append("of which AMG set-up")
    if problem.fast_solve is not None:
        columns.append("fast solve")
    lines += ["", f"Time per sample (CPU; batch of up to {timing_count}; best of 2 runs):", "",
              "| " + " | ".join(columns) + " |", "| ---: |" + " ---: |" * (len(columns) - 1)]
    print("\n".join(lines[-4:]), flush=True)
    cases = CASE_SETS[problem.name](problem, n, 64, None)
    for size in (n, 2 * n):
        fields = next(f for f in cases.values() if next(iter(f.values())).shape[-1] == size)
        fields = _take(fields, timing_count)
        count_t = len(next(iter(fields.values())))
        options = {} if size == n else {"resample": True}
        solver.solve(**_take(fields, 1), **options)  # warm-up
        cells = [str(size)]
        _, t = timed(lambda: solver.solve(**fields, estimate=False, **options))
        cells.append(f"{1e3 * t / count_t:.2f} ms{' (resampled)' if options else ''}")
        _, t = timed(lambda: (forget(), solver.solve(**fields, **options)))  # each sample's set-up counted
        cells.append(f"{1e3 * t / count_t:.2f} ms")
        if peer is not None:
            peer.predict(fields["a"][:1])
            _, t = timed(lambda: peer.predict(fields["a"]))
            cells.append(f"{1e3 * t / count_t:.2f} ms")
        _, t = timed(lambda: problem.reference_solve(**fields))
        cells.append(f"{1e3 * t / count_t:.2f} ms")
        start = np.zeros((count_t, size, size))
        _, t = timed(lambda: (forget(), problem.iterative_solve(start, **fields, maxiter=1000, rtol=1e-8,
                                                                 **({"method": method} if method else {}))))
        cells.append(f"{1e3 * t / count_t:.2f} ms")
        if setup is not None:
            _, t = timed(lambda: [setup(problem.operator(size, a=fields["a"][k])) for k in range(count_t)])
            cells.append(f"{1e3 * t / count_t:.2f} ms")
        if problem.fast_solve is not None:
            _, t = timed(lambda: problem.fast_solve(**fields))
            cells.append(f"{1e3 * t / count_t:.2f} ms")
        lines.append("| " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    return lines


def main(argv=None) -> int:
    fno_peer = fno_peer_path()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problem", required=True, choices=sorted(CASE_SETS))
    p.add_argument("--model", default=None, help="shipped model name or checkpoint path (default: --problem)")
    p.add_argument("--data", default=None, help="test split file (default: fresh draws of the test law)")
    p.add_argument("--count", type=int, default=64)
    p.add_argument("--fno", default=str(fno_peer), help="exported FNO peer for a problem with a coefficient "
                   "('' to leave it out)")
    p.add_argument("--timing-count", type=int, default=16, help="batch of the timing runs")
    p.add_argument("--out", default=None, help="markdown file (default: benchmarks/results/problems/<problem>.md)")
    args = p.parse_args(argv)
    for flag, value in (("--count", args.count), ("--timing-count", args.timing_count)):
        if value < 1:
            p.exit(2, f"{p.prog}: error: {flag}={value} is invalid; expected an integer >= 1\n")
    model = args.model or args.problem
    if args.fno == str(fno_peer) and not fno_peer.is_file():
        print(f"no FNO peer at {fno_peer}: train one with python -m benchmarks fno_peer (it exports there)")
        args.fno = ""
    command = " ".join(["python -m benchmarks.problems", *(argv if argv is not None else __import__("sys").argv[1:])])
    try:
        out = Path(args.out or results_dir("problems") / f"{args.problem}.md")
        out.parent.mkdir(parents=True, exist_ok=True)
        gallery = out.with_name(out.stem + "_gallery.png")
        lines = block(model, args.problem, args.data, args.count, args.fno or None, args.timing_count,
                      gallery=gallery)
    except ValueError as exc:
        p.exit(2, f"{p.prog}: error: {exc}\n")
    atomic.write_text(out, "\n".join([f"# {args.problem}: `{command}`", "", *lines]) + "\n")
    record_command(out.parent, "problems", argv, [out.name, gallery.name])
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
