"""Small files in other people's layouts, holding real solutions of real PDEs, to try the cards on.

``python -m pdediff.data.examples LAYOUT FOLDER`` (or :func:`write_example`) writes one file in
the exact layout of a shipped card in ``datasets/cards/`` (:data:`EXAMPLES` lists them), so
that the card reads it with only its ``files`` changed. The solutions are computed, not drawn:

- diffusion-reaction (PDEBench's 2D FitzHugh-Nagumo system, no-flux walls, noise initial states),
  stepped by explicit Euler on cell centres;
- periodic advection-diffusion of a tracer by a uniform velocity per trajectory, exact in
  Fourier space;
- a rectangular steady Poisson problem ``-lap u = f`` with ``u = 0`` on the boundary, exact
  by DST;
- Darcy ``-div(a grad u) = 1``, by pdediff's sparse LU.

Sizes are small (N <= 64) so that a model trains on them in minutes on a CPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import scipy.fft

from pdediff.data.atomic import atomic_path


# ---------------------------------------------------------------------------- the PDEs
def diffusion_reaction(count: int, n: int, times: int, rng: np.random.Generator, t_end: float = 2.0):
    """PDEBench's 2D diffusion-reaction (FitzHugh-Nagumo): ``u_t = Du lap u + u - u^3 - k - v``,
    ``v_t = Dv lap v + u - v`` on (-1, 1)^2, no-flux walls, ``Du = 1e-3, Dv = 5e-3, k = 5e-3``,
    initial states N(0, 1) noise smoothed over 3 cells. Returns ``(S, T, n, n, 2)`` on
    ``[sample, time, x, y, (u, v)]``, the cell centres and the times."""
    du, dv, k = 1e-3, 5e-3, 5e-3
    h = 2.0 / n
    dt = min(0.2 * h * h / dv, 5e-3)
    t = np.linspace(0.0, t_end, times)
    per = int(np.ceil(t[1] / dt)) if times > 1 else 1
    dt = t[1] / per if times > 1 else dt

    def lap(w):
        p = np.pad(w, ((0, 0), (1, 1), (1, 1)), mode="edge")  # no-flux: ghost = edge value
        return (p[:, 2:, 1:-1] + p[:, :-2, 1:-1] + p[:, 1:-1, 2:] + p[:, 1:-1, :-2] - 4 * w) / (h * h)

    def smooth(w):
        out = w.copy()
        for axis in (1, 2):
            out = (np.roll(out, 1, axis) + out + np.roll(out, -1, axis)) / 3
        return out

    u, v = smooth(rng.standard_normal((count, n, n))), smooth(rng.standard_normal((count, n, n)))
    frames = [np.stack([u, v], axis=-1)]
    for _ in range(times - 1):
        for _ in range(per):
            u, v = u + dt * (du * lap(u) + u - u**3 - k - v), v + dt * (dv * lap(v) + u - v)
        frames.append(np.stack([u, v], axis=-1))
    centres = -1.0 + (np.arange(n) + 0.5) * h
    return np.stack(frames, axis=1), centres, t


def advection_diffusion(count: int, ny: int, nx: int, times: int, rng: np.random.Generator,
                        kappa: float = 2e-3, t_end: float = 1.0):
    """``c_t + a . grad c = kappa lap c`` on the periodic unit rectangle ``[0, nx/ny) x [0, 1)``
    (cell centres, spacing ``1 / ny``), a uniform velocity ``a`` per trajectory (speed <= 0.5),
    initial tracers a sum of 3 Gaussian blobs; exact in Fourier space. Returns ``c`` as
    ``(S, T, ny, nx)``, the velocities ``(S, 2)`` as ``(ax, ay)``, x, y and the times."""
    h = 1.0 / ny
    x, y = (np.arange(nx) + 0.5) * h, (np.arange(ny) + 0.5) * h
    lx, ly = nx * h, ny * h
    t = np.linspace(0.0, t_end, times)
    kx = 2 * np.pi * np.fft.fftfreq(nx, d=h)
    ky = 2 * np.pi * np.fft.fftfreq(ny, d=h)
    KY, KX = np.meshgrid(ky, kx, indexing="ij")
    out = np.empty((count, times, ny, nx))
    velocity = rng.uniform(-0.5, 0.5, (count, 2))
    Y, X = np.meshgrid(y, x, indexing="ij")
    for s in range(count):
        c0 = np.zeros((ny, nx))
        for _ in range(3):
            cx, cy, w = rng.uniform(0, lx), rng.uniform(0, ly), rng.uniform(0.05, 0.15)
            dx = (X - cx + lx / 2) % lx - lx / 2  # periodic distance
            dy = (Y - cy + ly / 2) % ly - ly / 2
            c0 += rng.uniform(0.5, 1.5) * np.exp(-(dx**2 + dy**2) / (2 * w * w))
        c0_hat = np.fft.fft2(c0)
        ax, ay = velocity[s]
        for i, ti in enumerate(t):
            decay = np.exp(-(1j * (ax * KX + ay * KY) + kappa * (KX**2 + KY**2)) * ti)
            out[s, i] = np.fft.ifft2(c0_hat * decay).real
    return out, velocity, x, y, t


def rectangular_poisson(count: int, ny: int, nx: int, rng: np.random.Generator):
    """``-lap u = f`` on the node grid of ``[0, (nx-1) h] x [0, (ny-1) h]``, ``h = 1 / (ny - 1)``,
    ``u = 0`` on the boundary, f a sum of 4 Gaussian blobs; the 5-point solution, exact by DST-I.
    Returns ``f, u`` as ``(S, ny, nx)``."""
    h = 1.0 / (ny - 1)
    Y, X = np.meshgrid(np.arange(ny) * h, np.arange(nx) * h, indexing="ij")
    f = np.zeros((count, ny, nx))
    for s in range(count):
        for _ in range(4):
            cx, cy, w = rng.uniform(0, X.max()), rng.uniform(0, 1), rng.uniform(0.05, 0.2)
            f[s] += rng.uniform(-10, 10) * np.exp(-((X - cx) ** 2 + (Y - cy) ** 2) / (2 * w * w))
    f[:, [0, -1], :] = 0
    f[:, :, [0, -1]] = 0
    ly, lx = np.arange(1, ny - 1), np.arange(1, nx - 1)
    eig = (4 / h**2) * (np.sin(np.pi * ly / (2 * (ny - 1)))[:, None] ** 2
                        + np.sin(np.pi * lx / (2 * (nx - 1)))[None, :] ** 2)
    u = np.zeros_like(f)
    u[:, 1:-1, 1:-1] = scipy.fft.idstn(scipy.fft.dstn(f[:, 1:-1, 1:-1], type=1, axes=(1, 2)) / eig,
                                        type=1, axes=(1, 2))
    return f, u


def darcy(count: int, n: int, rng: np.random.Generator):
    """``-div(a grad u) = 1``, ``u = 0`` on the boundary, ``a in {3, 12}`` thresholded from a
    smooth random field (DiffusionPDE's law, coarsely); pdediff's Darcy operator, sparse LU.
    Returns ``a, u`` as ``(S, n, n)``."""
    from pdediff.physics.problems import get_problem

    g = np.linspace(0, 1, n)
    Y, X = np.meshgrid(g, g, indexing="ij")
    a = np.empty((count, n, n))
    for s in range(count):
        field = sum(rng.standard_normal() * np.cos(np.pi * (i * X + j * Y) + rng.uniform(0, 2 * np.pi))
                    / (1 + i * i + j * j) for i in range(5) for j in range(5))
        a[s] = np.where(field > 0, 12.0, 3.0)
    return a, get_problem("darcy").reference_solve(a)


# ---------------------------------------------------------------------------- the layouts
def _h5(path: Path, write) -> Path:
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        write(f)
    return path


def _pdebench_groups(path: Path, rng, channels: int, count=8, n=32, times=11) -> Path:
    data, centres, t = diffusion_reaction(count, n, times, rng)

    def write(f):
        for s in range(count):
            g = f.create_group(f"{s:04d}")
            g["data"] = data[s, ..., :channels].astype(np.float32)
            g["grid/x"], g["grid/y"], g["grid/t"] = centres, centres, t
    return _h5(path, write)


def pdebench_diffusion_reaction(path, rng, **kw) -> Path:
    """PDEBench 2D diffusion-reaction: groups ``"0000"``..., each ``data`` (T, X, Y, 2) and
    ``grid/x``, ``grid/y``, ``grid/t``."""
    return _pdebench_groups(Path(path), rng, 2, **kw)


def pdebench_shallow_water(path, rng, **kw) -> Path:
    """PDEBench 2D shallow water's layout: groups, each ``data`` (T, X, Y, 1) and ``grid/*``
    (the field written is diffusion-reaction's u: this file tests the layout, not the physics)."""
    return _pdebench_groups(Path(path), rng, 1, **kw)


def pdebench_navier_stokes(path, rng, count=8, n=32, times=11) -> Path:
    """PDEBench 2D compressible Navier-Stokes' layout: top-level ``density``, ``pressure``,
    ``Vx``, ``Vy`` (S, T, X, Y), ``t-coordinate`` (T + 1, as PDEBench writes it), ``x-coordinate``,
    ``y-coordinate``. The density is a tracer advected and diffused by the uniform velocity
    (periodic), the pressure uniform: a linearised, passive case of the equations."""
    c, velocity, x, y, t = advection_diffusion(count, n, n, times, rng)
    ones = np.ones((count, times, n, n))

    def write(f):
        f["density"] = np.swapaxes(1.0 + 0.1 * c, 2, 3).astype(np.float32)  # [S, T, x, y]
        f["pressure"] = ones.astype(np.float32)
        f["Vx"] = (ones * velocity[:, 0, None, None, None]).astype(np.float32)
        f["Vy"] = (ones * velocity[:, 1, None, None, None]).astype(np.float32)
        f["t-coordinate"] = np.append(t, t[-1] + (t[1] - t[0]))
        f["x-coordinate"], f["y-coordinate"] = x, y
        f.attrs["eta"], f.attrs["zeta"] = 1e-2, 1e-2
    return _h5(Path(path), write)


def the_well(path, rng, count=6, nx=48, ny=32, times=11) -> Path:
    """The Well's layout: ``t0_fields/tracer`` (traj, T, X, Y), ``t1_fields/velocity`` (traj, T,
    X, Y, 2), ``dimensions/x|y|time``, ``boundary_conditions/x_periodic|y_periodic``,
    ``scalars/diffusivity``; periodic advection-diffusion on a 48 x 32 rectangle."""
    kappa = 2e-3
    c, velocity, x, y, t = advection_diffusion(count, ny, nx, times, rng, kappa=kappa)

    def write(f):
        f.attrs.update(dataset_name="advection_diffusion", grid_type="cartesian", n_spatial_dims=2,
                       n_trajectories=count)
        f["t0_fields/tracer"] = np.swapaxes(c, 2, 3).astype(np.float32)  # [traj, T, x, y]
        v = np.broadcast_to(velocity[:, None, None, None, :], (count, times, nx, ny, 2))
        f["t1_fields/velocity"] = v.astype(np.float32)
        f.create_group("t2_fields")
        f["dimensions/x"], f["dimensions/y"], f["dimensions/time"] = x, y, t
        for axis in ("x", "y"):
            g = f.create_group(f"boundary_conditions/{axis}_periodic")
            g.attrs.update(bc_type="PERIODIC", associated_dims=[axis])
        f["scalars/diffusivity"] = kappa
    return _h5(Path(path), write)


def neuraloperator_darcy(path, rng, count=32, n=32) -> Path:
    """neuraloperator's Darcy files: a ``torch.save``'d dict ``{'x': a, 'y': u}``, (S, N, N)."""
    import torch

    a, u = darcy(count, n, rng)
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"x": torch.tensor(a, dtype=torch.float32), "y": torch.tensor(u, dtype=torch.float32)}, tmp)
    return path


def neuraloperator_ns(path, rng, count=8, n=32, times=11) -> Path:
    """neuraloperator's time-dependent layout: ``{'x': initial (S, N, N), 'y': (S, N, N, T)}``,
    axes ``[sample, x, y, time]`` (a periodic tracer, as the vorticity of their NS data)."""
    import torch

    c, _, _, _, _ = advection_diffusion(count, n, n, times, rng)
    c = np.swapaxes(c, 2, 3)  # [S, T, x, y]
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"x": torch.tensor(c[:, 0], dtype=torch.float32),
                    "y": torch.tensor(np.moveaxis(c, 1, -1), dtype=torch.float32)}, tmp)
    return path


def npz_rectangular(path, rng, count=48, ny=24, nx=40) -> Path:
    """A plain ``.npz``: ``f`` and ``u`` (S, ny, nx), ``x`` and ``y``: the rectangular Poisson problem."""
    f, u = rectangular_poisson(count, ny, nx, rng)
    h = 1.0 / (ny - 1)
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, f=f.astype(np.float32), u=u.astype(np.float32), x=np.arange(nx) * h, y=np.arange(ny) * h)
    return path


def netcdf_advection(path, rng, count=8, n=32, times=11) -> Path:
    """A netCDF file through xarray: ``c`` with dims (sample, time, y, x), coordinates x, y, time."""
    import xarray as xr

    c, velocity, x, y, t = advection_diffusion(count, n, n, times, rng)
    ds = xr.Dataset({"c": (("sample", "time", "y", "x"), c.astype(np.float32)),
                     "vx": (("sample",), velocity[:, 0]), "vy": (("sample",), velocity[:, 1])},
                    coords={"x": x, "y": y, "time": t})
    path = Path(path)
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp)
    return path


#: Layout name -> (writer, file name, shipped card in datasets/cards/).
EXAMPLES = {
    "pdebench-diffusion-reaction": (pdebench_diffusion_reaction, "2D_diff-react_NA_NA.h5",
                                    "pdebench-diffusion-reaction.yaml"),
    "pdebench-shallow-water": (pdebench_shallow_water, "2D_rdb_NA_NA.h5", "pdebench-shallow-water.yaml"),
    "pdebench-navier-stokes": (pdebench_navier_stokes, "2D_CFD_periodic_Train.hdf5", "pdebench-navier-stokes.yaml"),
    "the-well": (the_well, "advection_diffusion_train_00.hdf5", "the-well.yaml"),
    "neuraloperator-darcy": (neuraloperator_darcy, "darcy_train_32.pt", "neuraloperator-darcy.yaml"),
    "neuraloperator-ns": (neuraloperator_ns, "nsforcing_train_32.pt", "neuraloperator-ns.yaml"),
    "npz": (npz_rectangular, "poisson_rectangle.npz", "npz-rectangle.yaml"),
    "netcdf": (netcdf_advection, "advection.nc", "netcdf-advection.yaml"),
}


def write_example(layout: str, folder, seed: int = 0, **sizes) -> Path:
    """Write the example file of ``layout`` (a key of :data:`EXAMPLES`) into ``folder``.

    Raises:
        ValueError: an unknown layout (listing them).
    """
    if layout not in EXAMPLES:
        raise ValueError(f"layout={layout!r} is not known; expected one of {sorted(EXAMPLES)}")
    writer, name, _ = EXAMPLES[layout]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return writer(folder / name, np.random.default_rng(seed), **sizes)


#: The shipped cards (the repository's ``datasets/cards``).
CARDS = Path(__file__).resolve().parents[2] / "datasets" / "cards"


def example_card(layout: str, folder, seed: int = 0, **sizes) -> Path:
    """Write the example file of ``layout`` and, beside it, ``card.yaml``: the shipped card with
    only ``files`` changed. Returns the card's path."""
    import yaml

    path = write_example(layout, folder, seed, **sizes)
    shipped = CARDS / EXAMPLES[layout][2]
    if not shipped.is_file():
        raise ValueError(f"layout={layout!r}: the shipped card {shipped} is missing; expected a checkout of pdediff "
                         "with datasets/cards")
    data = yaml.safe_load(shipped.read_text())
    data["files"] = path.name
    card = Path(folder) / "card.yaml"
    from pdediff.data.atomic import write_text

    write_text(card, yaml.safe_dump(data, sort_keys=False))
    return card


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pdediff.data.examples", description=__doc__.split("\n")[0])
    parser.add_argument("layout", choices=sorted(EXAMPLES), help="the layout (the card of datasets/cards/ it fits)")
    parser.add_argument("folder", help="where to write the file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--card", action="store_true", help="also write card.yaml beside it: the shipped card "
                        "with only files changed")
    args = parser.parse_args(argv)
    path = write_example(args.layout, args.folder, args.seed)
    print(f"wrote {path} (read it with datasets/cards/{EXAMPLES[args.layout][2]}, files: {path.name})")
    if args.card:
        print(f"wrote {example_card(args.layout, args.folder, args.seed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
