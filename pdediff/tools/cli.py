"""Implementations behind the thin command-line scripts (array I/O, checks, plots)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from pdediff.physics import metrics
from pdediff.data.atomic import atomic_path
from pdediff.tools.plotting import plot_rows


def read_array(spec: str, default_key: str) -> np.ndarray:
    """Read ``FILE.npy``, ``FILE.npz[:key]`` or ``FILE.h5[:dataset]`` as a NumPy array.

    Raises:
        ValueError: naming ``spec``, for a missing, unreadable or corrupt file, an empty
            .npz, or a missing key (or an HDF5 group where a dataset is expected).
    """
    path, _, key = spec.partition(":") if not os.path.exists(spec) else (spec, "", "")
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{spec!r} does not exist; expected a .npy, .npz or .h5 file")
    suffix = p.suffix.lower()
    if suffix not in (".npy", ".npz", ".h5", ".hdf5"):
        raise ValueError(f"{spec!r} has suffix {suffix!r}; expected .npy, .npz or .h5")
    kind = {".npy": "a .npy array", ".npz": "a .npz archive"}.get(suffix, "an HDF5 file")
    try:
        array, problem = _read_array(p, suffix, key, default_key, spec)
    except Exception as exc:  # numpy, zipfile and h5py raise many types on damaged files
        raise ValueError(f"{spec!r} could not be read as {kind} ({type(exc).__name__}: {exc})") from None
    if problem:
        raise ValueError(problem)
    return array


def _read_array(p: Path, suffix: str, key: str, default_key: str, spec: str):
    """:func:`read_array` without its checks: ``(array, None)`` or ``(None, what is wrong)``."""
    if suffix in (".npy", ".npz"):
        with open(p, "rb") as fh:
            head = fh.read(6)
        if not head.startswith((b"\x93NUMPY",) if suffix == ".npy" else (b"PK\x03\x04", b"PK\x05\x06")):
            writer = "numpy.save" if suffix == ".npy" else "numpy.savez"
            return None, (f"{spec!r} is not a {suffix} file (it starts with {head!r}); "
                          f"expected a file written by {writer}")
    if suffix == ".npy":
        return np.load(p, allow_pickle=False), None
    if suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            names = list(z.keys())
            if not names:
                return None, f"{spec!r} is an empty .npz archive; expected at least one array"
            k = key or (default_key if default_key in names else names[0])
            if k not in names:
                return None, f"{spec!r} has no array {k!r}; it holds {names}"
            return z[k], None
    import h5py

    with h5py.File(p, "r") as f:
        k = key or default_key
        if k not in f:
            return None, f"{spec!r} has no dataset {k!r}; it holds {sorted(f.keys())}"
        if not isinstance(f[k], h5py.Dataset):
            return None, f"{spec!r}: {k!r} is an HDF5 group, not a dataset; it holds {sorted(f[k].keys())}"
        return f[k][()], None


def check_writable(argument: str, path: str, suffixes) -> None:
    """Refuse an output path with the wrong suffix, that is a folder, or whose folder cannot
    take a new file, before any work.

    Raises:
        ValueError: naming ``argument`` and ``path``.
    """
    if "\x00" in str(path):
        raise ValueError(f"{argument}={path!r} holds a NUL character; expected a file path without one")
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise ValueError(f"{argument}={path!r} has suffix {p.suffix!r}; expected one of {', '.join(suffixes)}")
    if p.is_dir():
        raise ValueError(f"{argument}={path!r} is a folder; expected a file path")
    if p.exists() and not p.is_file():
        raise ValueError(f"{argument}={path!r} exists and is not a regular file; expected a file path")
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise ValueError(f"{argument}={path!r}: folder {str(folder)!r} does not exist or is not writable")
    try:  # os.access trusts the mode bits; /proc and read-only mounts refuse anyway
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ValueError(
            f"{argument}={path!r}: folder {str(folder)!r} is not writable ({exc.strerror or exc})"
        ) from None


def write_array(path: str, name: str, arr: np.ndarray) -> None:
    """Write ``arr`` to .npy/.npz/.h5 under a temporary name, then rename.

    Raises:
        ValueError: naming ``--out`` and ``path``, if the path is refused or the write fails.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    check_writable("--out", path, (".npy", ".npz", ".h5", ".hdf5"))
    try:
        with atomic_path(p, suffix=suffix) as tmp:
            if suffix == ".npy":
                np.save(tmp, arr)
            elif suffix == ".npz":
                np.savez(tmp, **{name: arr})
            else:
                import h5py

                with h5py.File(tmp, "w") as f:
                    f.create_dataset(name, data=arr)
    except OSError as exc:
        raise ValueError(f"--out={path!r} could not be written ({exc.strerror or exc})") from None


def check_device(argument: str, device: str) -> None:
    """Refuse a torch device that does not parse or that this machine cannot use.

    Raises:
        ValueError: naming ``argument`` and ``device``.
    """
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{argument}={device!r} is not a torch device; expected e.g. 'cpu' or 'cuda'") from None
    try:
        torch.empty(0, device=dev)
    except Exception as exc:  # RuntimeError: no such device; AssertionError: torch built without CUDA
        available = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
        raise ValueError(
            f"{argument}={device!r} is not available on this machine ({str(exc).splitlines()[0]}); "
            f"expected one of {available}"
        ) from None


def read_fields(specs, names, problem, flag: str, flags: dict | None = None) -> dict[str, np.ndarray]:
    """Read ``NAME=FILE`` specs of fields ``names`` of ``problem``; errors name ``flag`` (or the
    flag ``flags[spec]`` that a spec came from)."""
    fields = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"{flag}={spec!r} is invalid; expected NAME=FILE with NAME one of {list(names)}")
        if name not in names:
            raise ValueError(f"{flag} {name}=...: {name!r} is not a field of problem {problem.name!r}; "
                             f"expected one of {list(names)}")
        if name in fields:
            raise ValueError(f"{flag} {name}=... is given twice")
        try:
            fields[name] = read_array(path, name)
        except ValueError as exc:
            raise ValueError(f"{(flags or {}).get(spec, f'{flag} {name}=...')}: {exc}") from None
    return fields


def reconstruct_main(args, solver) -> int:
    """solve.py --observe: posterior draws of a joint model, means and spreads to netCDF."""
    problem = solver.problem
    names = (*problem.condition_fields, *problem.solution_fields)
    observed = read_fields([*(args.observe or []), *(args.field or [])], names, problem, "--observe")
    if args.limit is not None:
        if args.limit < 1:
            raise ValueError(f"--limit={args.limit}; expected an integer >= 1")
        observed = {k: v[: args.limit] if np.ndim(v) == 3 else v for k, v in observed.items()}
    ds = solver.reconstruct(samples=args.samples, seed=args.seed, method=args.method, sigma_y=args.sigma_y,
                            sampler=args.sampler, steps=args.steps, batch_size=args.batch_size, progress=True,
                            cfg=getattr(args, "cfg", 0.0), **observed)
    with atomic_path(Path(args.out), suffix=".nc") as tmp:
        ds.to_netcdf(tmp)
    joint = ds.attrs["joint"]
    residual = (f"; relative residual of the mean {float(np.mean(ds['residual_rel'])):.2e}"
                if "residual_rel" in ds else "")
    print(f"wrote {args.out}: posterior mean and std of {', '.join(joint)} over {args.samples} draws "
          f"({ds.attrs['method']}, {ds.attrs['nfe']} denoiser evaluations a draw, {ds.attrs['seconds']:.1f} s)"
          + residual)
    return 0


def solve_main(args) -> int:
    """solve.py: load, solve, write, and optionally check and plot."""
    import pdediff

    if getattr(args, "observe", None):
        check_writable("--out", args.out, (".nc",))
        if args.plot or args.check or args.rho is not None or args.g is not None:
            raise ValueError("--observe takes the fields as --observe NAME=FILE (or --field for whole ones) and "
                             "writes a netCDF posterior; expected no --rho, --g, --plot or --check with it")
        check_device("--device", args.device)
        return reconstruct_main(args, pdediff.load_solver(args.checkpoint, device=args.device))

    check_writable("--out", args.out, (".npy", ".npz", ".h5", ".hdf5"))
    if args.plot:
        check_writable("--plot", args.plot, (".png",))
    check_device("--device", args.device)
    solver = pdediff.load_solver(args.checkpoint, device=args.device)
    problem = solver.problem
    names = problem.condition_fields
    first = names[0]
    specs = list(getattr(args, "field", None) or [])
    flags = {}  # the flag each spec came from, named when its file cannot be read
    # --rho and --g: aliases for the first condition field and the Dirichlet data
    if getattr(args, "rho", None) is not None:
        specs.insert(0, f"{first}={args.rho}")
        flags[specs[0]] = "--rho"
    if getattr(args, "g", None) is not None:
        specs.append(f"{problem.dirichlet_field or 'g'}={args.g}")
        flags[specs[-1]] = "--g"
    fields = read_fields(specs, names, problem, "--field", flags)
    if not fields:
        raise ValueError(f"no fields given; expected --field NAME=FILE for the fields {list(names)} of problem "
                         f"{problem.name!r} (--rho FILE for the first)")
    if args.limit is not None:
        if args.limit < 1:
            raise ValueError(f"--limit={args.limit}; expected an integer >= 1")
        fields = {k: v[: args.limit] if np.ndim(v) == 3 else v for k, v in fields.items()}
    phi, info = solver.solve(**fields, sampler=args.sampler, steps=args.steps, seed=args.seed,
                             batch_size=args.batch_size, guidance=args.guidance, polish=args.polish,
                             polish_method=args.polish_method, resample=args.resample, progress=True, return_info=True,
                             tol=getattr(args, "tol", None), cfg=getattr(args, "cfg", 0.0))
    write_array(args.out, problem.solution_field, phi)
    print(f"wrote {args.out}: {problem.solution_field} {phi.shape}, {info.nfe} denoiser evaluations, "
          f"{info.seconds:.3f} s")
    if info.error_estimate:
        est = np.asarray(info.error_estimate)
        print(f"estimated relative error: median {np.median(est):.2e}, largest {est.max():.2e}"
              + (f"; polish iterations: up to {max(info.polish_iterations)}" if info.polish_iterations else "")
              + (f"; tol met for {sum(info.tol_met)} of {len(info.tol_met)} samples" if info.tol_met else ""))
    if args.check or args.plot:
        like = next(iter(fields.values()))
        full = {k: (np.asarray(fields[k], dtype=np.float64) if k in fields
                    else np.full(np.shape(like), problem.field(k).default or 0.0)) for k in problem.condition_fields}
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
