"""Tests of pdediff.physics.sources: shapes, reproducibility, documented parameter ranges; and the named
cases of pdediff.data.cases, drawn from these families."""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from pdediff.data.cases import CASES, cases_for
from pdediff.physics.problems import DEFAULT_PROBLEM, PROBLEMS, Grid
from pdediff.physics.sources import BOUNDARIES, SOURCES, Blobs, Mixture, draw, gaussian_sum, get_boundary, get_source

GRID = Grid(33)
FAMILIES = {**{f"source-{k}": v for k, v in SOURCES.items()}, **{f"boundary-{k}": v for k, v in BOUNDARIES.items()}}


def rngs(count, seed=0):
    return [np.random.default_rng([seed, k]) for k in range(count)]


@pytest.mark.parametrize("name", FAMILIES)
def test_fields_are_finite_reproducible_and_batch_consistent(name):
    family = FAMILIES[name]
    single = family(GRID, np.random.default_rng(7))
    assert single.shape == (33, 33) and single.dtype == np.float64
    assert np.all(np.isfinite(single))
    np.testing.assert_array_equal(single, family(GRID, np.random.default_rng(7)))
    batch = family.sample(GRID, rngs(6))
    assert batch.shape == (6, 33, 33)
    np.testing.assert_allclose(batch[2], family(GRID, rngs(6)[2]), rtol=1e-12, atol=1e-12)
    assert not np.array_equal(batch[0], batch[1]) or name in ("boundary-zero", "source-unit")
    assert family.params()["name"] == family.name


def test_blob_parameters_within_documented_ranges():
    blobs = SOURCES["blobs"]
    draws = [blobs.draw(rng) for rng in rngs(300)]
    used = np.array([np.count_nonzero(d["charges"]) for d in draws])
    assert set(used) == {1, 2, 3, 4}
    charges = np.concatenate([d["charges"][d["charges"] != 0] for d in draws])
    widths = np.concatenate([d["widths"][d["charges"] != 0] for d in draws])
    centres = np.concatenate([d["centres"][d["charges"] != 0] for d in draws])
    assert np.all((np.abs(charges) >= 0.025) & (np.abs(charges) <= 0.1))
    assert 0.3 < np.mean(charges > 0) < 0.7
    assert np.all((widths >= 0.03) & (widths <= 0.15))
    assert np.all((centres >= 0.15) & (centres <= 0.85))


def test_blob_density_has_documented_peak_and_charge():
    grid = Grid(129)
    q, w = 0.07, 0.05
    rho = gaussian_sum(grid, np.array([[[0.5, 0.5]]]), np.array([[w]]), np.array([[q]]))[0]
    assert rho.max() == pytest.approx(q / (2 * np.pi * w**2), rel=1e-12)
    assert rho.sum() * grid.h**2 == pytest.approx(q, rel=1e-6)


def test_blob_fields_bounded_by_their_peaks():
    fields = SOURCES["blobs"].sample(GRID, rngs(200))
    peak_bound = 4 * 0.1 / (2 * np.pi * 0.03**2)
    assert np.abs(fields).max() <= peak_bound
    assert np.abs(fields).max(axis=(1, 2)).min() > 0.025 / (2 * np.pi * 0.15**2) * 0.1


def test_grf_rms_in_documented_range_and_resolution_independent():
    grf = SOURCES["grf"]
    fields = grf.sample(GRID, rngs(100))
    rms = np.sqrt(np.mean(fields**2, axis=(1, 2)))
    assert np.all((rms >= 5 - 1e-9) & (rms <= 15 + 1e-9))
    assert abs(fields.mean()) < 0.3 * rms.mean()
    coarse, fine = grf(Grid(17), np.random.default_rng(1)), grf(Grid(33), np.random.default_rng(1))
    correlation = np.corrcoef(coarse.ravel(), fine[::2, ::2].ravel())[0, 1]
    assert correlation > 0.999


def test_rough_field_reaches_the_short_wavelengths_that_grf_does_not():
    grid = Grid(65)
    rough = SOURCES["rough"].sample(grid, rngs(60))
    smooth = SOURCES["grf"].sample(grid, rngs(60))
    rms = np.sqrt(np.mean(rough**2, axis=(1, 2)))
    assert np.all((rms >= 5 - 1e-9) & (rms <= 15 + 1e-9))

    def rough_share(f):  # energy of the second difference relative to the field's
        d2 = np.diff(f, 2, axis=-1)
        return np.mean(d2**2, axis=(1, 2)) / np.mean(f**2, axis=(1, 2))

    assert np.median(rough_share(rough)) > 30 * np.median(rough_share(smooth))
    # the exponent varies per sample: the roughness spreads over more than a decade
    share = rough_share(rough)
    assert share.max() / share.min() > 10
    # one generator, one field, whatever N (the modes are fixed; only the RMS rescaling differs)
    coarse, fine = SOURCES["rough"](Grid(33), np.random.default_rng(2)), SOURCES["rough"](Grid(65), np.random.default_rng(2))
    fine = fine[::2, ::2]
    np.testing.assert_allclose(coarse / np.linalg.norm(coarse), fine / np.linalg.norm(fine), atol=1e-12)


def test_mixture_draws_every_family():
    mixture = get_source("blobs,grf")
    assert isinstance(mixture, Mixture) and mixture == SOURCES["mixture"]
    rms = np.sqrt(np.mean(mixture.sample(GRID, rngs(60)) ** 2, axis=(1, 2)))
    assert np.any(rms >= 5) and np.any(rms < 2)
    assert [c["name"] for c in mixture.params()["components"]] == ["blobs", "grf"]
    assert get_source("blobs") is SOURCES["blobs"] and isinstance(SOURCES["blobs"], Blobs)


def test_out_of_distribution_sources_are_sharp_or_discontinuous():
    dipoles = SOURCES["point_dipoles"].sample(GRID, rngs(20))
    assert np.abs(dipoles).max() > 10
    shapes = SOURCES["disks_rects"].sample(GRID, rngs(20))
    levels = np.abs(shapes[np.abs(shapes) > 0])
    assert levels.min() >= 1.0 - 1e-12 and levels.max() <= 40.0 + 1e-12


def test_boundary_data_lives_on_the_ring():
    ring = GRID.boundary_mask
    smooth = BOUNDARIES["smooth"].sample(GRID, rngs(50))
    assert np.all(smooth[:, ~ring] == 0)
    peaks = np.abs(smooth).max(axis=(1, 2))
    assert np.all((peaks >= 0.1 - 1e-12) & (peaks <= 1.0 + 1e-12))
    assert np.all(np.abs(np.diff(smooth[:, 0, :], axis=-1)) < 0.2)
    assert np.all(BOUNDARIES["zero"](GRID, np.random.default_rng(0)) == 0)


def test_unknown_names_raise_value_error():
    with pytest.raises(ValueError, match=r"source='blobs,nope'.*'nope'.*grf"):
        get_source("blobs,nope")
    with pytest.raises(ValueError, match=r"boundary='wavy'.*smooth"):
        get_boundary("wavy")


def test_draw_uses_one_documented_generator_per_sample_and_field():
    rho, g = draw(17, 3, source="blobs", boundary="smooth", seed=4, stream=11)
    grid = Grid(17)
    np.testing.assert_array_equal(rho[2], SOURCES["blobs"](grid, np.random.default_rng([4, 11, 2, 0])))
    np.testing.assert_array_equal(g[1], BOUNDARIES["smooth"](grid, np.random.default_rng([4, 11, 1, 1])))
    # a sample does not depend on how many are drawn with it
    np.testing.assert_array_equal(draw(17, 1, source="blobs", boundary="smooth", seed=4, stream=11)[0], rho[:1])
    with pytest.raises(ValueError, match="count=-1"):
        draw(17, -1)


@pytest.mark.parametrize("name", list(CASES[DEFAULT_PROBLEM]))
def test_every_case_draws_what_sources_draw_on_its_grid(name):
    """The cases of pdediff.data.cases (demo, benchmarks, shipped-model tests) draw by role, exactly as
    sources.draw does for a source and Dirichlet data, on their grid for a model trained at n."""
    case, problem = CASES[DEFAULT_PROBLEM][name], PROBLEMS[DEFAULT_PROBLEM]
    fields = case.draw(3, 2026, problem=problem, n=17)
    assert list(fields) == list(problem.condition_fields) == ["rho", "g"]
    size = 17 * case.grid_factor
    rho, g = draw(size, 3, source=case.source, boundary=case.boundary, seed=2026)
    np.testing.assert_array_equal(fields["rho"], rho)
    np.testing.assert_array_equal(fields["g"], g)
    assert rho.shape == (3, size, size) and np.ptp(rho[0]) > 0
    np.testing.assert_array_equal(case.draw(1, 2026, problem=problem, n=17)["rho"], rho[:1])
    assert case.title(name, 17) == (name if case.grid_factor == 1 else f"N = {size} (trained at 17)")


def test_cases_refuse_what_they_cannot_draw():
    case = CASES[DEFAULT_PROBLEM]["test split"]
    problem = PROBLEMS[DEFAULT_PROBLEM]
    for kwargs, match in ((dict(count=-1, seed=0), "count=-1"), (dict(count=2, seed=1.5), "seed=1.5")):
        with pytest.raises(ValueError, match=match):
            case.draw(**kwargs, problem=problem, n=17)
    with pytest.raises(ValueError, match="n=3 is not a valid grid size"):
        case.draw(1, 0, problem=problem, n=3)
    with pytest.raises(ValueError, match="coefficient='lognormal': problem 'poisson' has no coefficient field"):
        dataclasses.replace(case, coefficient="lognormal").draw(1, 0, problem=problem, n=17)
    with pytest.raises(ValueError, match="source='charges'"):
        dataclasses.replace(case, source="charges").draw(1, 0, problem=problem, n=17)
    with pytest.raises(ValueError, match=r"problem 'heat' has no cases; expected one of \['poisson'\]"):
        cases_for(SimpleNamespace(name="heat"))
    assert cases_for(problem) is CASES[DEFAULT_PROBLEM]


def test_spectrum_training_families_reach_what_they_say():
    grid = Grid(64)
    h = grid.h
    # plane waves: periods down to about 6 nodes (|kappa| up to N / 3), in any direction
    waves = SOURCES["plane_waves"].sample(grid, rngs(80))
    spectrum = np.abs(np.fft.rfft2(waves)) ** 2
    ky, kx = np.meshgrid(np.fft.fftfreq(64), np.fft.rfftfreq(64), indexing="ij")
    peak = np.sqrt(kx**2 + ky**2).ravel()[spectrum.reshape(80, -1).argmax(axis=1)]
    assert peak.max() > 0.14 and peak.min() < 0.05  # from 1/6 of a cycle a node to long waves
    # point charges: single nodes carry q / h^2 at some samples, dipoles cancel their charge
    points = SOURCES["point_charges"].sample(grid, rngs(40))
    assert np.abs(points).max() >= 0.5 * 0.05 / h**2 - 1e-9
    single = [p for p in points if np.count_nonzero(p) <= 16]
    assert single and all(np.count_nonzero(p) >= 1 for p in single)
    # segments: one node wide, density q / h on their nodes, nothing on the ring
    lines = SOURCES["segments"].sample(grid, rngs(40))
    assert np.all(lines[:, 0, :] == 0) and np.all(lines[:, :, -1] == 0)
    levels = np.abs(lines[lines != 0]) * h  # q in 0.1-0.4, sums where segments cross
    assert np.percentile(levels, 10) >= 0.1 - 1e-9 and np.median(levels) <= 0.4
    # cells: piecewise constant with 2-24 levels of size 1-10
    cells = SOURCES["cells"].sample(grid, rngs(40))
    counts = [len(np.unique(c)) for c in cells]
    assert min(counts) >= 1 and max(counts) <= 24
    assert np.abs(cells).min() >= 1 - 1e-12 and np.abs(cells).max() <= 10 + 1e-12
