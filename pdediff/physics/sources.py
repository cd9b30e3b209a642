"""Random families of right-hand sides (:data:`SOURCES`) and Dirichlet data (:data:`BOUNDARIES`).

Every family is a frozen dataclass whose fields are its parameters (``params()`` gives them as
a JSON-ready dict, stored with every generated dataset). Calling a family as
``family(grid, rng)`` returns one (N, N) float64 field; ``family.sample(grid, rngs)`` returns a
(B, N, N) stack, one field per generator, evaluated in one vectorised pass. Each sample's
random draws come from its own generator only, in a fixed order, so a sample does not depend
on which other samples share its batch.

Families (amplitudes are chosen so that the sources have comparable peak values, O(1-20)):

* ``blobs``: 1-4 Gaussian charges, centres in [0.15, 0.85]^2, widths w in [0.03, 0.15],
  charges q = +-U[0.5, 2] * 0.05, density q / (2 pi w^2) exp(-|r - c|^2 / (2 w^2)).
* ``grf``: a smooth Gaussian random field, cosine series with amplitudes
  (pi^2 (k^2 + l^2) + tau^2)^(-alpha/2), alpha = 3, tau = 3, 24 x 24 modes, rescaled so that
  its RMS over the nodes is U[5, 15].
* ``rough``: a rough random field (the ``grf`` series with 48 x 48 modes and a spectral
  exponent alpha ~ U[0, 1] per sample, from white noise to 1/f), RMS U[5, 15]: training breadth
  across the operator's whole spectrum.
* ``plane_waves``, ``point_charges``, ``segments``, ``cells``: training breadth across the
  operator's spectrum (plane waves and wave packets down to 6 nodes a period; single-node and
  Gaussian charges and dipoles; line and ring charges at any angle; Voronoi piecewise-constant
  fields), each wider than the out-of-distribution family nearest to it.
* ``mixture``: each sample draws its family uniformly from ``blobs`` and ``grf``; any comma
  list such as ``"blobs,grf,disks_rects"`` names a mixture too (see :func:`get_source`).
* ``point_dipoles`` (out of distribution): 1-4 point charges or dipoles, Gaussians 1-2 nodes
  wide, charges as in ``blobs``, dipole separation 3-6 nodes.
* ``disks_rects`` (out of distribution): 1-4 indicator functions of disks (radius 0.05-0.2)
  or axis-aligned rectangles (half-sides 0.05-0.2), amplitudes +-U[1, 10].
* ``lines``, ``waves``, ``checkerboard``, ``deltas`` (out of distribution): line charges one
  node wide; sums of 1-3 sine modes with wavenumbers 4-10; checkerboards of blocks 2-8 nodes
  wide, +-U[1, 10]; 1-4 charges on single nodes (q / h^2) or dipoles of such.

Boundary families return g with zeros at the interior nodes:

* ``zero``: g = 0.
* ``smooth``: g = sum_{p,q<=3} c_pq cos(p pi x) cos(q pi y) / (1 + p^2 + q^2), c_pq ~ N(0, 1),
  evaluated on the ring and rescaled so that max |g| on the ring is U[0.1, 1]. Being a
  function of (x, y), it is continuous around the corners.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np

from pdediff.physics.problems import Grid


class Family:
    """A random family of (N, N) fields; subclasses are frozen dataclasses of parameters."""

    name: ClassVar[str] = ""

    def params(self) -> dict:
        """The family's name and parameters as a JSON-ready dict."""
        return {"name": self.name, **_jsonable(dataclasses.asdict(self))}

    def sample(self, grid: Grid, rngs: Sequence[np.random.Generator]) -> np.ndarray:
        """Draw one field per generator; returns a (len(rngs), N, N) float64 array."""
        raise NotImplementedError

    def __call__(self, grid: Grid, rng: np.random.Generator) -> np.ndarray:
        """Draw one (N, N) float64 field from ``rng``."""
        return self.sample(grid, [rng])[0]


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _uniform(rng: np.random.Generator, bounds: tuple[float, float], size=None):
    return rng.uniform(bounds[0], bounds[1], size)


def _signed(rng: np.random.Generator, bounds: tuple[float, float], size=None):
    """Magnitude U[bounds] with a random sign."""
    return _uniform(rng, bounds, size) * rng.choice((-1.0, 1.0), size)


def gaussian_sum(grid: Grid, centres: np.ndarray, widths: np.ndarray, charges: np.ndarray):
    """Sum of normalised 2-D Gaussians, q / (2 pi w^2) exp(-|r - c|^2 / (2 w^2)).

    Args:
        grid: node grid.
        centres: (B, C, 2) centres (x, y).
        widths: (B, C) standard deviations w > 0.
        charges: (B, C) total charges q (0 for unused slots).

    Returns:
        (B, N, N) float64 densities. The Gaussian factorises in x and y, so the sum costs
        O(B C N^2) multiply-adds and B C N exponentials.
    """
    x = grid.x
    two_w2 = 2.0 * widths[..., None] ** 2
    ex = np.exp(-((x - centres[..., 0:1]) ** 2) / two_w2)
    ey = np.exp(-((x - centres[..., 1:2]) ** 2) / two_w2)
    peak = charges / (2.0 * np.pi * widths**2)
    return np.einsum("bc,bci,bcj->bij", peak, ey, ex)


@dataclass(frozen=True)
class Blobs(Family):
    """1-4 Gaussian charges; see the module docstring for the ranges."""

    name: ClassVar[str] = "blobs"
    count: tuple[int, int] = (1, 4)
    centre: tuple[float, float] = (0.15, 0.85)
    width: tuple[float, float] = (0.03, 0.15)
    charge: tuple[float, float] = (0.5, 2.0)
    charge_scale: float = 0.05

    def draw(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Draw one sample's charges, padded to ``count[1]`` slots with zero charge.

        Returns:
            ``centres`` (C, 2), ``widths`` (C,) and ``charges`` (C,) with C = ``count[1]``.
        """
        slots = self.count[1]
        k = int(rng.integers(self.count[0], self.count[1] + 1))
        centres = np.full((slots, 2), 0.5)
        widths = np.full(slots, self.width[1])
        charges = np.zeros(slots)
        centres[:k] = _uniform(rng, self.centre, (k, 2))
        widths[:k] = _uniform(rng, self.width, k)
        charges[:k] = _signed(rng, self.charge, k) * self.charge_scale
        return {"centres": centres, "widths": widths, "charges": charges}

    def sample(self, grid, rngs):
        if not len(rngs):
            return np.zeros((0, grid.n, grid.n))
        draws = [self.draw(rng) for rng in rngs]
        stack = {key: np.stack([d[key] for d in draws]) for key in draws[0]}
        return gaussian_sum(grid, stack["centres"], stack["widths"], stack["charges"])


def _cosine_series(grid: Grid, coeff: np.ndarray, rms: np.ndarray) -> np.ndarray:
    """sum_kl coeff[b, k, l] cos(k pi x) cos(l pi y) at the nodes, rescaled to node RMS ``rms[b]``."""
    k = np.arange(coeff.shape[-1])
    basis = np.cos(np.pi * grid.x[:, None] * k[None, :])
    field = basis @ coeff @ basis.T
    return field * (rms / np.sqrt(np.mean(field**2, axis=(-2, -1))))[:, None, None]


@dataclass(frozen=True)
class GaussianRandomField(Family):
    """Smooth zero-mean Gaussian random field with a power-law cosine spectrum.

    f(x, y) = sum_{k,l < modes} xi_kl (pi^2 (k^2 + l^2) + tau^2)^(-alpha/2) cos(k pi x) cos(l pi y),
    xi_kl ~ N(0, 1), then rescaled to a node RMS drawn from U[rms]. The modes are fixed, so
    the same generator gives the same continuous field at every N.
    """

    name: ClassVar[str] = "grf"
    alpha: float = 3.0
    tau: float = 3.0
    modes: int = 24
    rms: tuple[float, float] = (5.0, 15.0)

    def sample(self, grid, rngs):
        k = np.arange(self.modes)
        spectrum = (np.pi**2 * (k[:, None] ** 2 + k[None, :] ** 2) + self.tau**2) ** (-self.alpha / 2)
        xi = np.empty((len(rngs), self.modes, self.modes))
        target = np.empty(len(rngs))
        for b, rng in enumerate(rngs):
            xi[b] = rng.standard_normal((self.modes, self.modes))
            target[b] = _uniform(rng, self.rms)
        return _cosine_series(grid, xi * spectrum, target)


@dataclass(frozen=True)
class RoughField(Family):
    """Rough zero-mean random field: a :class:`GaussianRandomField` whose spectral exponent is
    drawn per sample from U[alpha], with modes up to ``modes``.

    alpha = 0 is band-limited white noise; with alpha in [0, 1] the ratio of the solution's size
    to the source's covers the operator's spectrum from the shortest resolved wavelengths to the
    longest, which smooth fields (alpha = 3) never reach. It is a family for training breadth,
    not a physical model.
    """

    name: ClassVar[str] = "rough"
    alpha: tuple[float, float] = (0.0, 1.0)
    tau: float = 3.0
    modes: int = 48
    rms: tuple[float, float] = (5.0, 15.0)

    def sample(self, grid, rngs):
        k = np.arange(self.modes)
        wave = np.pi**2 * (k[:, None] ** 2 + k[None, :] ** 2) + self.tau**2
        coeff = np.empty((len(rngs), self.modes, self.modes))
        target = np.empty(len(rngs))
        for b, rng in enumerate(rngs):
            alpha = _uniform(rng, self.alpha)
            coeff[b] = rng.standard_normal((self.modes, self.modes)) * wave ** (-alpha / 2)
            target[b] = _uniform(rng, self.rms)
        return _cosine_series(grid, coeff, target)


@dataclass(frozen=True)
class PointDipoles(Family):
    """1-4 sharp point charges or dipoles, a few nodes wide (out-of-distribution tests).

    Widths and dipole separations are in node spacings h, so the features stay sharp at
    every N; charges are drawn as in :class:`Blobs`.
    """

    name: ClassVar[str] = "point_dipoles"
    count: tuple[int, int] = (1, 4)
    centre: tuple[float, float] = (0.2, 0.8)
    width_nodes: tuple[float, float] = (1.0, 2.0)
    separation_nodes: tuple[float, float] = (3.0, 6.0)
    charge: tuple[float, float] = (0.5, 2.0)
    charge_scale: float = 0.05

    def sample(self, grid, rngs):
        slots = 2 * self.count[1]
        centres = np.full((len(rngs), slots, 2), 0.5)
        widths = np.ones((len(rngs), slots))
        charges = np.zeros((len(rngs), slots))
        for b, rng in enumerate(rngs):
            for item in range(int(rng.integers(self.count[0], self.count[1] + 1))):
                centre = _uniform(rng, self.centre, 2)
                width = _uniform(rng, self.width_nodes) * grid.h
                q = _signed(rng, self.charge) * self.charge_scale
                angle = rng.uniform(0.0, 2.0 * np.pi)
                offset = 0.5 * _uniform(rng, self.separation_nodes) * grid.h
                if rng.random() < 0.5:  # point charge: one slot
                    centres[b, 2 * item] = centre
                    widths[b, 2 * item] = width
                    charges[b, 2 * item] = q
                else:  # dipole: +q and -q a few nodes apart
                    shift = offset * np.array([np.cos(angle), np.sin(angle)])
                    centres[b, 2 * item : 2 * item + 2] = (centre + shift, centre - shift)
                    widths[b, 2 * item : 2 * item + 2] = width
                    charges[b, 2 * item : 2 * item + 2] = (q, -q)
        return gaussian_sum(grid, centres, widths, charges)


@dataclass(frozen=True)
class DisksRects(Family):
    """1-4 discontinuous indicators of disks and axis-aligned rectangles (out of distribution)."""

    name: ClassVar[str] = "disks_rects"
    count: tuple[int, int] = (1, 4)
    centre: tuple[float, float] = (0.2, 0.8)
    size: tuple[float, float] = (0.05, 0.2)
    amplitude: tuple[float, float] = (1.0, 10.0)

    def sample(self, grid, rngs):
        slots = self.count[1]
        shape = (len(rngs), slots)
        centres, sizes = np.zeros(shape + (2,)), np.ones(shape + (2,))
        amplitudes, is_disk = np.zeros(shape), np.zeros(shape, dtype=bool)
        for b, rng in enumerate(rngs):
            k = int(rng.integers(self.count[0], self.count[1] + 1))
            centres[b, :k] = _uniform(rng, self.centre, (k, 2))
            sizes[b, :k] = _uniform(rng, self.size, (k, 2))
            amplitudes[b, :k] = _signed(rng, self.amplitude, k)
            is_disk[b, :k] = rng.random(k) < 0.5
        xx, yy = grid.mesh()
        dx = np.abs(xx - centres[..., 0, None, None])
        dy = np.abs(yy - centres[..., 1, None, None])
        inside_disk = dx**2 + dy**2 <= sizes[..., 0, None, None] ** 2
        inside_rect = (dx <= sizes[..., 0, None, None]) & (dy <= sizes[..., 1, None, None])
        inside = np.where(is_disk[..., None, None], inside_disk, inside_rect)
        return np.einsum("bc,bcij->bij", amplitudes, inside.astype(np.float64))


@dataclass(frozen=True)
class LineCharges(Family):
    """1-3 straight line charges one node wide (out of distribution): horizontal, vertical or
    diagonal segments carrying a line density q, i.e. rho = q / h on their nodes."""

    name: ClassVar[str] = "lines"
    count: tuple[int, int] = (1, 3)
    margin: float = 0.15
    length: tuple[float, float] = (0.3, 0.7)
    charge: tuple[float, float] = (0.5, 2.0)
    charge_scale: float = 0.2

    def sample(self, grid, rngs):
        n = grid.n
        out = np.zeros((len(rngs), n, n))
        for b, rng in enumerate(rngs):
            for _ in range(int(rng.integers(self.count[0], self.count[1] + 1))):
                steps = max(2, int(round(_uniform(rng, self.length) / grid.h)))
                lo = int(np.ceil(self.margin / grid.h))
                hi = n - 1 - lo - steps
                i, j = rng.integers(lo, max(lo + 1, hi + 1), 2)
                di, dj = [(0, 1), (1, 0), (1, 1), (1, -1)][int(rng.integers(4))]
                if dj < 0:
                    j = n - 1 - j
                q = _signed(rng, self.charge) * self.charge_scale
                for t in range(steps):
                    out[b, i + di * t, j + dj * t] += q / grid.h
        return out


@dataclass(frozen=True)
class Waves(Family):
    """Sums of 1-3 sine modes sin(pi k1 x + a) sin(pi k2 y + b) with wavenumbers k from 4 to 10
    (short waves, out of distribution); the same continuous field at every N."""

    name: ClassVar[str] = "waves"
    modes: tuple[int, int] = (1, 3)
    wavenumber: tuple[int, int] = (4, 10)
    amplitude: tuple[float, float] = (10.0, 100.0)

    def sample(self, grid, rngs):
        xx, yy = grid.mesh()
        out = np.zeros((len(rngs), grid.n, grid.n))
        for b, rng in enumerate(rngs):
            for _ in range(int(rng.integers(self.modes[0], self.modes[1] + 1))):
                k1, k2 = rng.integers(self.wavenumber[0], self.wavenumber[1] + 1, 2)
                a, c = rng.uniform(0.0, 2.0 * np.pi, 2)
                out[b] += _signed(rng, self.amplitude) * np.sin(np.pi * k1 * xx + a) * np.sin(np.pi * k2 * yy + c)
        return out


@dataclass(frozen=True)
class Checkerboard(Family):
    """Checkerboards of square blocks 2-8 nodes wide, values +-A alternating, A ~ U[1, 10], at
    a random offset (out of distribution: piecewise constant and as short-waved as a grid
    allows)."""

    name: ClassVar[str] = "checkerboard"
    block_nodes: tuple[int, int] = (2, 8)
    amplitude: tuple[float, float] = (1.0, 10.0)

    def sample(self, grid, rngs):
        i = np.arange(grid.n)
        out = np.empty((len(rngs), grid.n, grid.n))
        for b, rng in enumerate(rngs):
            size = int(rng.integers(self.block_nodes[0], self.block_nodes[1] + 1))
            di, dj = rng.integers(0, size, 2)
            parity = ((i[:, None] + di) // size + (i[None, :] + dj) // size) % 2
            out[b] = _signed(rng, self.amplitude) * (1.0 - 2.0 * parity)
        return out


@dataclass(frozen=True)
class Deltas(Family):
    """1-4 charges each on one node (density q / h^2), alone or as dipoles with the partner 1-3
    nodes away along a grid axis, in [0.1, 0.9]^2 (out of distribution)."""

    name: ClassVar[str] = "deltas"
    count: tuple[int, int] = (1, 4)
    centre: tuple[float, float] = (0.1, 0.9)
    separation_nodes: tuple[int, int] = (1, 3)
    charge: tuple[float, float] = (0.5, 2.0)
    charge_scale: float = 0.05

    def sample(self, grid, rngs):
        out = np.zeros((len(rngs), grid.n, grid.n))
        for b, rng in enumerate(rngs):
            for _ in range(int(rng.integers(self.count[0], self.count[1] + 1))):
                i, j = np.clip(np.rint(_uniform(rng, self.centre, 2) / grid.h).astype(int), 1, grid.n - 2)
                q = _signed(rng, self.charge) * self.charge_scale / grid.h**2
                out[b, i, j] += q
                if rng.random() < 0.5:  # the partner stays inside (on a coarse grid, nearer)
                    d = int(rng.integers(self.separation_nodes[0], self.separation_nodes[1] + 1))
                    di, dj = [(d, 0), (0, d), (-d, 0), (0, -d)][int(rng.integers(4))]
                    out[b, np.clip(i + di, 1, grid.n - 2), np.clip(j + dj, 1, grid.n - 2)] -= q
        return out


# Training families for the operator's whole spectrum (configs/default64-spectrum.yaml). Each
# is wider than the out-of-distribution test family nearest to it (``point_dipoles``, ``lines``,
# ``waves``, ``disks_rects``), so that those stay unseen draws of a covered kind.


@dataclass(frozen=True)
class PlaneWaves(Family):
    """Sums of 1-6 plane waves cos(pi kappa (x cos t + y sin t) + a), any direction t, |kappa|
    log-uniform from ``wavenumber[0]`` to ``wavenumber[1]`` times N (N / 3: periods down to 6
    nodes, twice the wavenumber N / 6 of the ``waves`` test family), half of them under a
    Gaussian envelope (wave packets): the operator's eigenmodes from the longest wavelengths to
    the short ones."""

    name: ClassVar[str] = "plane_waves"
    modes: tuple[int, int] = (1, 6)
    wavenumber: tuple[float, float] = (1.0, 1.0 / 3.0)
    envelope: tuple[float, float] = (0.08, 0.4)
    amplitude: tuple[float, float] = (1.0, 20.0)

    def sample(self, grid, rngs):
        xx, yy = grid.mesh()
        top = np.log(max(self.wavenumber[1] * grid.n, self.wavenumber[0] * 1.5))
        out = np.zeros((len(rngs), grid.n, grid.n))
        for b, rng in enumerate(rngs):
            for _ in range(int(rng.integers(self.modes[0], self.modes[1] + 1))):
                kappa = np.exp(rng.uniform(np.log(self.wavenumber[0]), top))
                t, a = rng.uniform(0.0, 2.0 * np.pi, 2)
                wave = np.cos(np.pi * kappa * (xx * np.cos(t) + yy * np.sin(t)) + a)
                if rng.random() < 0.5:
                    c, w = _uniform(rng, (0.1, 0.9), 2), _uniform(rng, self.envelope)
                    wave *= np.exp(-((xx - c[0]) ** 2 + (yy - c[1]) ** 2) / (2 * w**2))
                out[b] += _signed(rng, self.amplitude) * wave
        return out


@dataclass(frozen=True)
class PointCharges(Family):
    """1-8 point sources anywhere inside: a charge q on one node (density q / h^2) or a Gaussian
    0.5-3 nodes wide, each alone or as a dipole whose partner is 1-8 nodes away."""

    name: ClassVar[str] = "point_charges"
    count: tuple[int, int] = (1, 8)
    width_nodes: tuple[float, float] = (0.5, 3.0)
    separation_nodes: tuple[int, int] = (1, 8)
    charge: tuple[float, float] = (0.5, 2.0)
    charge_scale: float = 0.05

    def sample(self, grid, rngs):
        n, h = grid.n, grid.h
        xx, yy = grid.mesh()
        out = np.zeros((len(rngs), n, n))
        for b, rng in enumerate(rngs):
            for _ in range(int(rng.integers(self.count[0], self.count[1] + 1))):
                q = _signed(rng, self.charge) * self.charge_scale
                i, j = rng.integers(1, n - 1, 2)
                places = [(i, j, q)]
                if rng.random() < 0.5:  # dipole
                    d = int(rng.integers(self.separation_nodes[0], self.separation_nodes[1] + 1))
                    angle = rng.uniform(0.0, 2.0 * np.pi)
                    i2 = int(np.clip(round(i + d * np.sin(angle)), 1, n - 2))
                    j2 = int(np.clip(round(j + d * np.cos(angle)), 1, n - 2))
                    places.append((i2, j2, -q))
                width = _uniform(rng, self.width_nodes) * h if rng.random() < 0.5 else 0.0
                for pi, pj, pq in places:
                    if width:
                        r2 = (xx - pj * h) ** 2 + (yy - pi * h) ** 2
                        out[b] += pq / (2 * np.pi * width**2) * np.exp(-r2 / (2 * width**2))
                    else:
                        out[b, pi, pj] += pq / h**2
        return out


@dataclass(frozen=True)
class Segments(Family):
    """1-4 line charges one node wide at any angle (straight segments 0.05-0.9 long, or circles
    of radius 0.05-0.35), carrying a line density q (q / h on the nodes they cross)."""

    name: ClassVar[str] = "segments"
    count: tuple[int, int] = (1, 4)
    length: tuple[float, float] = (0.05, 0.9)
    radius: tuple[float, float] = (0.05, 0.35)
    charge: tuple[float, float] = (0.5, 2.0)
    charge_scale: float = 0.2

    def sample(self, grid, rngs):
        n, h = grid.n, grid.h
        out = np.zeros((len(rngs), n, n))
        for b, rng in enumerate(rngs):
            for _ in range(int(rng.integers(self.count[0], self.count[1] + 1))):
                start = _uniform(rng, (0.05, 0.95), 2)
                if rng.random() < 0.7:
                    angle, length = rng.uniform(0.0, 2.0 * np.pi), _uniform(rng, self.length)
                    t = np.linspace(0.0, length, max(2, int(np.ceil(2 * length / h)) + 1))
                    px, py = start[0] + t * np.cos(angle), start[1] + t * np.sin(angle)
                else:
                    radius = _uniform(rng, self.radius)
                    t = np.linspace(0.0, 2.0 * np.pi, max(8, int(np.ceil(4 * np.pi * radius / h))), endpoint=False)
                    px, py = start[0] + radius * np.cos(t), start[1] + radius * np.sin(t)
                cols, rows = np.rint(px / h).astype(int), np.rint(py / h).astype(int)
                inside = (cols >= 1) & (cols <= n - 2) & (rows >= 1) & (rows <= n - 2)
                nodes = np.unique(np.stack([rows[inside], cols[inside]], axis=1), axis=0)
                if len(nodes):
                    out[b, nodes[:, 0], nodes[:, 1]] += _signed(rng, self.charge) * self.charge_scale / h
        return out


@dataclass(frozen=True)
class Cells(Family):
    """Piecewise-constant fields: the Voronoi cells of 2-24 random sites, each with its own value
    +-U[1, 10] (sharp jumps along straight edges at every angle)."""

    name: ClassVar[str] = "cells"
    sites: tuple[int, int] = (2, 24)
    amplitude: tuple[float, float] = (1.0, 10.0)

    def sample(self, grid, rngs):
        xx, yy = grid.mesh()
        out = np.empty((len(rngs), grid.n, grid.n))
        for b, rng in enumerate(rngs):
            k = int(rng.integers(self.sites[0], self.sites[1] + 1))
            sites = rng.uniform(0.0, 1.0, (k, 2))
            values = _signed(rng, self.amplitude, k)
            d2 = (xx[None] - sites[:, 0, None, None]) ** 2 + (yy[None] - sites[:, 1, None, None]) ** 2
            out[b] = values[np.argmin(d2, axis=0)]
        return out


@dataclass(frozen=True)
class Mixture(Family):
    """Each sample draws its family uniformly from ``components``, then samples it."""

    name: ClassVar[str] = "mixture"
    components: tuple[Family, ...] = ()

    def params(self) -> dict:
        return {"name": self.name, "components": [c.params() for c in self.components]}

    def sample(self, grid, rngs):
        choice = np.array([int(rng.integers(len(self.components))) for rng in rngs])
        out = np.empty((len(rngs), grid.n, grid.n))
        for c, component in enumerate(self.components):
            members = np.flatnonzero(choice == c)
            if members.size:
                out[members] = component.sample(grid, [rngs[b] for b in members])
        return out


@dataclass(frozen=True)
class Constant(Family):
    """The same value at every node (``unit``: 1, the constant forcing of the classic
    variable-coefficient benchmarks). Draws nothing from the generators."""

    value: float = 1.0
    name: ClassVar[str] = "unit"

    def sample(self, grid, rngs):
        return np.full((len(rngs), grid.n, grid.n), float(self.value))


@dataclass(frozen=True)
class ZeroBoundary(Family):
    """Homogeneous Dirichlet data, g = 0."""

    name: ClassVar[str] = "zero"

    def sample(self, grid, rngs):
        return np.zeros((len(rngs), grid.n, grid.n))


@dataclass(frozen=True)
class SmoothBoundary(Family):
    """Smooth random Dirichlet data on the ring; see the module docstring."""

    name: ClassVar[str] = "smooth"
    order: int = 3
    amplitude: tuple[float, float] = (0.1, 1.0)

    def sample(self, grid, rngs):
        p = np.arange(self.order + 1)
        decay = 1.0 / (1.0 + p[:, None] ** 2 + p[None, :] ** 2)
        coeffs = np.empty((len(rngs), p.size, p.size))
        target = np.empty(len(rngs))
        for b, rng in enumerate(rngs):
            coeffs[b] = rng.standard_normal((p.size, p.size))
            target[b] = _uniform(rng, self.amplitude)
        basis = np.cos(np.pi * grid.x[:, None] * p[None, :])
        g = basis @ (coeffs * decay) @ basis.T
        g[:, 1:-1, 1:-1] = 0.0
        peak = np.abs(g).max(axis=(-2, -1))
        return g * (target / peak)[:, None, None]


SOURCES: dict[str, Family] = {
    "blobs": Blobs(),
    "grf": GaussianRandomField(),
    "rough": RoughField(),
    "mixture": Mixture((Blobs(), GaussianRandomField())),
    "point_dipoles": PointDipoles(),
    "disks_rects": DisksRects(),
    "lines": LineCharges(),
    "waves": Waves(),
    "checkerboard": Checkerboard(),
    "deltas": Deltas(),
    "plane_waves": PlaneWaves(),
    "point_charges": PointCharges(),
    "segments": Segments(),
    "cells": Cells(),
    "unit": Constant(1.0),
}

BOUNDARIES: dict[str, Family] = {
    "zero": ZeroBoundary(),
    "smooth": SmoothBoundary(),
}


def _lookup(registry: dict[str, Family], spec: str, argument: str) -> Family:
    if not isinstance(spec, str):
        raise ValueError(f"{argument}={spec!r} is invalid; expected one of {sorted(registry)} or a comma-separated "
                         f"list of them")
    names = [part.strip() for part in spec.split(",")]
    for name in names:
        if name not in registry:
            raise ValueError(
                f"{argument}={spec!r}: {name!r} is not a known {argument}; expected one of "
                f"{sorted(registry)} or a comma-separated list of them"
            )
    if len(names) == 1:
        return registry[names[0]]
    return Mixture(tuple(registry[name] for name in names))


def get_source(spec: str) -> Family:
    """Return the source named ``spec``, or a :class:`Mixture` for a comma list of names.

    Raises:
        ValueError: naming the unknown entry and the known names.
    """
    return _lookup(SOURCES, spec, "source")


def get_boundary(spec: str) -> Family:
    """Return the boundary family named ``spec``, or a :class:`Mixture` for a comma list
    (``"zero,smooth"``: each sample has zero or smooth data with equal probability).

    Raises:
        ValueError: naming the unknown entry and the known names.
    """
    return _lookup(BOUNDARIES, spec, "boundary")


__all__ = [
    "BOUNDARIES",
    "draw",
    "SOURCES",
    "Blobs",
    "Constant",
    "DisksRects",
    "LineCharges",
    "Waves",
    "Family",
    "GaussianRandomField",
    "Mixture",
    "PointDipoles",
    "SmoothBoundary",
    "ZeroBoundary",
    "gaussian_sum",
    "get_boundary",
    "get_source",
]


def draw(n: int, count: int, *, source: str = "mixture", boundary: str = "zero", seed: int = 0,
         stream: int = 9_999) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``count`` fresh (rho, g) pairs on an ``n x n`` grid, (count, n, n) each.

    Sample k uses the generators ``(seed, stream, k, 0)`` for rho and ``(seed, stream, k, 1)`` for
    g; the default ``stream`` is one that the dataset generator's splits never use, so the
    draws are new samples of the family, unseen in training.
    """
    for name, value, low in (("n", n, 5), ("count", count, 0), ("seed", seed, 0), ("stream", stream, 0)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name}={value!r} is invalid; expected an integer >= {low}")
    grid = Grid(int(n))
    rho = get_source(source).sample(grid, [np.random.default_rng([seed, stream, k, 0]) for k in range(count)])
    g = get_boundary(boundary).sample(grid, [np.random.default_rng([seed, stream, k, 1]) for k in range(count)])
    return rho, g
