"""Implementations behind the thin command-line scripts (array I/O, checks, plots)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from pdediff import metrics
from pdediff.atomic import atomic_path
from pdediff.plotting import plot_rows


def read_array(spec: str, default_key: str) -> np.ndarray:
    """Read ``FILE.npy``, ``FILE.npz[:key]`` or ``FILE.h5[:dataset]`` as a NumPy array."""
    path, _, key = spec.partition(":") if not os.path.exists(spec) else (spec, "", "")
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{spec!r} does not exist; expected a .npy, .npz or .h5 file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(p, allow_pickle=False)
        if suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                names = list(z.keys())
                k = key or (default_key if default_key in names else names[0])
                if k not in names:
                    raise ValueError(f"{spec!r} has no array {k!r}; it holds {names}")
                return z[k]
        if suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(p, "r") as f:
                k = key or default_key
                if k not in f:
                    raise ValueError(f"{spec!r} has no dataset {k!r}; it holds {sorted(f.keys())}")
                return f[k][()]
    except (OSError, EOFError) as exc:
        raise ValueError(f"{spec!r} could not be read: {exc}") from None
    raise ValueError(f"{spec!r} has suffix {suffix!r}; expected .npy, .npz or .h5")


def check_writable(argument: str, path: str, suffixes) -> None:
    """Refuse an output path with the wrong suffix or an unwritable folder, before any work."""
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise ValueError(f"{argument}={path!r} has suffix {p.suffix!r}; expected one of {', '.join(suffixes)}")
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise ValueError(f"{argument}={path!r}: folder {str(folder)!r} does not exist or is not writable")


def write_array(path: str, name: str, arr: np.ndarray) -> None:
    """Write ``arr`` to .npy/.npz/.h5 under a temporary name, then rename."""
    p = Path(path)
    suffix = p.suffix.lower()
    check_writable("--out", path, (".npy", ".npz", ".h5", ".hdf5"))
    with atomic_path(p, suffix=suffix) as tmp:
        if suffix == ".npy":
            np.save(tmp, arr)
        elif suffix == ".npz":
            np.savez(tmp, **{name: arr})
        else:
            import h5py

            with h5py.File(tmp, "w") as f:
                f.create_dataset(name, data=arr)


def solve_main(args) -> int:
    """solve.py: load, solve, write, and optionally check and plot."""
    import pdediff

    check_writable("--out", args.out, (".npy", ".npz", ".h5", ".hdf5"))
    if args.plot:
        check_writable("--plot", args.plot, (".png",))
    solver = pdediff.load_solver(args.checkpoint, device=args.device)
    problem = solver.problem
    first, *others = problem.condition_fields
    fields = {first: read_array(args.rho, first)}
    if args.g is not None:
        fields[problem.dirichlet_field or others[0]] = read_array(args.g, "g")
    if args.limit is not None:
        if args.limit < 1:
            raise ValueError(f"--limit={args.limit}; expected an integer >= 1")
        fields = {k: v[: args.limit] if np.ndim(v) == 3 else v for k, v in fields.items()}
    phi, info = solver.solve(**fields, sampler=args.sampler, steps=args.steps, seed=args.seed,
                             batch_size=args.batch_size, guidance=args.guidance, polish=args.polish,
                             polish_method=args.polish_method, resample=args.resample, progress=True, return_info=True)
    write_array(args.out, problem.solution_field, phi)
    print(f"wrote {args.out}: {problem.solution_field} {phi.shape}, {info.nfe} denoiser evaluations, "
          f"{info.seconds:.3f} s")
    if args.check or args.plot:
        full = {k: np.asarray(fields.get(k, np.zeros_like(fields[first])), dtype=np.float64)
                for k in problem.condition_fields}
        t0 = time.perf_counter()
        ref = problem.reference_solve(*full.values())
        t_ref = time.perf_counter() - t0
        if args.check:
            rep = metrics.report(problem, phi, full, ref)
            print(f"{'figure':<22}{'mean':>12}{'max':>12}")
            for name, v in rep.items():
                print(f"{name:<22}{np.mean(v):>12.3e}{np.max(v):>12.3e}")
            print(f"{'time pdediff [s]':<22}{info.seconds:>12.4f}")
            print(f"{'time reference [s]':<22}{t_ref:>12.4f}")
        if args.plot:
            pick = (lambda a: a[0]) if phi.ndim == 3 else (lambda a: a)
            err = metrics.relative_l2(pick(phi), pick(ref))[0]
            plot_rows(args.plot, [("", pick(full[first]), pick(phi), pick(ref))],
                      title=f"first sample: relative L2 error {err:.2e}")
            print(f"plot: {args.plot}")
    return 0
