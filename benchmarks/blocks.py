"""The registry of benchmark blocks: ``python -m benchmarks --list`` prints it and
``python -m benchmarks BLOCK [options]`` runs ``BLOCKS[BLOCK]``.

A block is a module of this package with a ``main(argv)``. ``args`` go before the options given on
the command line (argparse keeps the last value of an option, so given options win; an empty
value, e.g. ``--export ''``, turns a default path off where the module reads '' as none);
``{results}`` in them is the block's folder, ``benchmarks/results/<block>``.

Run times are on this project's 2-core CPU (no GPU) at the block's default options and ``args``:
*measured* where a results file, a module's output or a timed run here gives the figure (the
source is named), *estimated* where they are worked out from per-sample times such files record;
fno_peer's is its training budget.
They need the shipped models, and the test splits or ``runs/`` checkpoints ``args`` name.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Block:
    module: str  #: the module, ``benchmarks.<name>``; its ``main(argv)`` runs the block
    purpose: str  #: one line, from the module's docstring
    runtime: str  #: on the 2-core CPU at the defaults: short figure
    timing: str  #: how ``runtime`` was found: "measured: ..." or "estimated: ..."
    args: tuple[str, ...] = ()  #: default options, before the command line's
    writes: str = "prints only"  #: what it writes into its folder


BLOCKS: dict[str, Block] = {
    "surrogate": Block(
        "benchmarks.surrogate",
        "Poisson surrogate against classical solvers: error by sampler and NFE, guidance, CG / AMG polish, "
        "seed spread, time against N and batch",
        "11 min",
        "measured: surrogate/results.json, meta.seconds 624 s at --data datasets/poisson64/test.h5 --guidance 0.5, "
        "64 samples a case, with the default model of then",
        writes="accuracy.nc, timing.nc, results.md, results.json, error_vs_nfe.png, time_vs_n.png, gallery.png"),
    "problems": Block(
        "benchmarks.problems",
        "A problem beyond the default (darcy, helmholtz): shipped model against SciPy and (Darcy) the FNO peer, "
        "on its test law, unseen laws and 2N, with timings",
        "3 min",
        "estimated, a problem: the per-sample times in problems/darcy.md and problems/helmholtz.md at --count 64",
        ("--problem", "darcy"),
        writes="<problem>.md, <problem>_gallery.png"),
    "sampling": Block(
        "benchmarks.sampling",
        "Choose a model's default sampling: error and seed spread against sampler, noise levels and sigma_min "
        "(valid split)",
        "7 min",
        "estimated: 128 samples x 304 network evaluations at 10 ms a sample, speed/speed.md",
        ("--data", "datasets/poisson64/valid.h5"),
        writes="sampling.md"),
    "speed": Block(
        "benchmarks.speed",
        "CPU throughput of the shipped Poisson model: layout, NFE, estimate, threads, inference_mode, "
        "torch.compile; the levers side by side",
        "2.5 min",
        "estimated: 7 passes over 7 settings at the per-sample times of speed/speed.md; --compile adds about "
        "1 min, 52 s measured there",
        writes="speed.md"),
    "tolerance": Block(
        "benchmarks.tolerance",
        "Error estimate against true error by source family, and time to reach 1e-4 / 1e-6 against "
        "classical solvers",
        "1 min",
        "estimated: the per-sample times in tolerance/tolerance.md, 32 samples x 8 families",
        writes="tolerance.md, estimate_vs_true.png"),
    "families": Block(
        "benchmarks.families",
        "Compare checkpoints across source families: mean / median relative L2 and two-seed spread",
        "1 min",
        "estimated, a checkpoint: 9 cases x 128 samples x 2 seeds at 12 ms a solve, speed/speed.md",
        writes="families.md"),
    "fno64": Block(
        "benchmarks.fno64",
        "The FNO score model (configs/experiments/fno64.yaml) beside the U-Nets at N = 64 and 128",
        "7 min",
        "estimated: the per-sample times in fno64/fno64.md, measured at --samples 16 (the default is 64)",
        ("--fno", "runs/fno64/checkpoint.safetensors"),
        writes="fno64.md"),
    "fno_peer": Block(
        "benchmarks.fno_peer",
        "Train neuraloperator's FNO as Darcy's peer regressor for the diffusion model's wall-clock budget; "
        "export it for the problems block",
        "71 min",
        "set by its budget: --budget-s 4268 s of training time, resumable; problems reads the export",
        ("--export", "{results}/fno-peer.safetensors"),
        writes="fno-peer.safetensors; its training state goes to runs/fno-peer"),
    "energy": Block(
        "benchmarks.energy",
        "Energy-parameterised score against the direct one: accuracy, solve time, training-step time",
        "1 min",
        "estimated: the ms a solve and a step in energy/energy.md, 64 pairs, two models",
        ("--direct", "runs/poisson32-cfg/checkpoint.safetensors",
         "--energy", "runs/poisson32-energy/checkpoint.safetensors"),
        writes="prints only; energy/energy.md is a transcript of two runs"),
    "cfg": Block(
        "benchmarks.cfg",
        "Classifier-free guidance: error against the guidance weight w, forward and from observations",
        "3 min",
        "estimated: the forward part measured 23 s in cfg/cfg.json; the 12 reconstructions guessed from "
        "posterior/posterior-main.md's time a draw at N = 64",
        ("--forward", "runs/poisson32-cfg/checkpoint.safetensors",
         "--energy", "runs/poisson32-energy/checkpoint.safetensors",
         "--joint", "runs/poisson32-joint-obs/checkpoint.safetensors"),
        writes="cfg.md, cfg.json, cfg.png"),
    "likelihood_ode": Block(
        "benchmarks.likelihood_ode",
        "The likelihood ODE's integrator against the closed form on 12-dimensional Gaussian data",
        "2 s",
        "measured: a run here"),
    "trust": Block(
        "benchmarks.trust",
        "Trust scores (likelihood, error estimate, energy): AUROC of test pairs against unseen families",
        "3 min",
        "estimated: 48 pairs x 3.5 s for the likelihood, trust/trust.json",
        writes="trust.md, trust.json, trust.png"),
    "observe": Block(
        "benchmarks.observe",
        "Reconstruction from observations with the joint models: methods, observed fraction, noise levels, "
        "calibration",
        "4-5 h",
        "estimated: observe/observe.json's rows sum to 44 min at --samples 4 with fewer fractions and levels; "
        "the defaults draw 16 and go to 100 levels",
        writes="observe.md, observe.json, observe-gallery.png, observe-coverage.png"),
    "observe_unseen": Block(
        "benchmarks.observe_unseen",
        "The joint models on inputs no training mixture names: error of the posterior mean, coverage, warnings",
        "3 min",
        "estimated: 10 reconstructions of 2 samples x 4 draws at the times a draw in posterior/posterior-*.md"),
    "posterior": Block(
        "benchmarks.posterior",
        "Fields from observations: every method on the same draws and masks against the Gaussian baseline "
        "(--blocks main, share, nfe, darcy, calibration)",
        "11 min",
        "estimated, --blocks main: half of the 1330 s measured at --samples 16 in posterior/posterior-main.md; "
        "measured at the counts in their .md: darcy 1349 s, share 613 s, nfe 373 s, calibration 117 s",
        writes="posterior-<block>.md and .json, posterior-gallery.png, posterior-calibration.png"),
    "bench_generate": Block(
        "benchmarks.bench_generate",
        "Dataset generation speed: samples/s of a 10,000-sample train split, DST against sparse LU",
        "8 s",
        "measured: a run here, 7.0 s of it for the split"),
    "evaluate": Block(
        "benchmarks.evaluate",
        "A model's error on a data split at its default sampling, beside its mean error estimate",
        "15 s",
        "estimated, a 500-sample split: 12 ms a solve (speed/speed.md) and the exact solve",
        ("--data", "datasets/poisson64/test.h5")),
    "rollout": Block(
        "benchmarks.rollout",
        "Time-dependent data through a shipped card (PDEBench diffusion-reaction, The Well periodic "
        "advection-diffusion): rollout error against steps, the diffusion model beside the one-step regressor "
        "at equal training time",
        "30 min",
        "estimated: 4 x 420 s of training (the --seconds budget of each model) and a minute of rollouts",
        ("--out", "{results}"),
        writes="results.md, results.json, error_vs_steps.png"),
    "darcy_route": Block(
        "benchmarks.darcy_route",
        "One Darcy model for every coefficient law: darcy, darcy-broad, load_solver('darcy') routing "
        "between them by the error estimate, and the operator guess alone, per coefficient law",
        "4 min",
        "estimated: 8 cases x 64 samples x 3 solvers at the per-sample times of problems/darcy.md",
        ("--out", "{results}/darcy_route.md"),
        writes="darcy_route.md"),
    "textbook": Block(
        "benchmarks.textbook",
        "Textbook inputs a physicist would try first (harmonic g, sine modes, a charge by a corner, noise, "
        "steps, a 1e6 blob) on the Poisson models: true error and error estimate of each answer",
        "10 s",
        "measured: a run of the defaults here (10 inputs x 2 models, one solve each)",
        ("--out", "{results}/textbook.md"),
        writes="textbook.md"),
    "seeds": Block(
        "benchmarks.seeds",
        "Seed agreement of the shipped Poisson model by source family: noise, antithetic and zero starts at "
        "1 and 2 NFE",
        "2 min",
        "estimated: 9 cases x 16 samples x 10 solves at 1-2 NFE, 10-20 ms a sample (speed/speed.md)",
        ("--out", "{results}/seeds.md"),
        writes="seeds.md"),
    "time_to_tolerance": Block(
        "benchmarks.time_to_tolerance",
        "Time to 1e-4 and 1e-6 for every problem at N = 64, 128, 256: the shipped model with its polish "
        "against DST, LU, AMG-CG with set-up, V-cycle PCG and AMG-MINRES from zero",
        "6 min",
        "estimated: 3 problems x 3 grids x 64 samples, LU a sample at N = 256 and the network at 20-50 ms a "
        "sample (problems/darcy.md, speed/speed.md)",
        ("--out", "{results}/time_to_tolerance.md"),
        writes="time_to_tolerance.md"),
}


def listing() -> str:
    """The text of ``python -m benchmarks --list``: a line per block (name, run time, purpose),
    then, indented, how the run time was found, what it writes and its default args."""
    import textwrap

    width = max(map(len, BLOCKS))
    rwidth = max([len("run time")] + [len(b.runtime) for b in BLOCKS.values()])
    lines = ["python -m benchmarks BLOCK [options] runs one block (the options go to its main; BLOCK --help lists "
             "them);", "its results go to benchmarks/results/BLOCK/, with the command that made them in COMMAND.",
             "Run times: on the 2-core CPU, no GPU, at the block's defaults; each says whether it was measured or "
             "estimated.", "", f"{'block':{width}}  {'run time':{rwidth}}  purpose"]
    for name, b in BLOCKS.items():
        lines.append(f"{name:{width}}  {b.runtime:{rwidth}}  {b.purpose}")
        for line in (f"run time {b.timing}", f"writes: {b.writes}", b.args and f"default args: {' '.join(b.args)}"):
            if line:
                lines += textwrap.wrap(line, 110, initial_indent=" " * 4, subsequent_indent=" " * 6)
    return "\n".join(lines)
