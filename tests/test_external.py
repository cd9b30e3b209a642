"""Other people's layouts through the shipped cards, data-driven models, rollouts (issue 24)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

import pdediff
from pdediff.data.cards import ExternalCard
from pdediff.data.examples import EXAMPLES, advection_diffusion, example_card, diffusion_reaction, rectangular_poisson, write_example
from pdediff.data.external import read_fields
from pdediff.learning.fields import FieldTask
from pdediff.learning.networks import build_network
from pdediff.tools.fit import fit

CARDS = Path(__file__).resolve().parents[1] / "datasets" / "cards"
TINY = {"model_channels": 8, "channel_mult": [1, 2], "attention_levels": []}


def shipped(layout: str, folder: Path, **sizes) -> Path:
    """The example file of ``layout`` and the shipped card with only ``files`` changed, in ``folder``."""
    return example_card(layout, folder, **sizes)


# ---------------------------------------------------------------------------- layouts
EXPECTED = {  # layout -> (field, dims, a value check on the first training sample)
    "pdebench-diffusion-reaction": ({"u", "v"}, ("sample", "time", "y", "x")),
    "pdebench-shallow-water": ({"h"}, ("sample", "time", "y", "x")),
    "pdebench-navier-stokes": ({"density", "pressure", "Vx", "Vy"}, ("sample", "time", "y", "x")),
    "the-well": ({"tracer", "vx", "vy", "diffusivity"}, ("sample", "time", "y", "x")),
    "neuraloperator-darcy": ({"a", "u"}, ("sample", "y", "x")),
    "neuraloperator-ns": ({"w"}, ("sample", "time", "y", "x")),
    "npz": ({"f", "u"}, ("sample", "y", "x")),
    "netcdf": ({"c", "vx", "vy"}, ("sample", "time", "y", "x")),
}


def test_every_layout_has_a_shipped_card_and_an_example():
    assert set(EXAMPLES) == set(EXPECTED)
    for layout, (_, _, card) in EXAMPLES.items():
        assert (CARDS / card).is_file(), card
        ExternalCard.load(CARDS / card)  # valid as shipped


@pytest.mark.parametrize("layout", sorted(EXPECTED))
def test_shipped_cards_read_their_layout(tmp_path, layout):
    card = shipped(layout, tmp_path)
    ExternalCard.load(card).check()
    ds = read_fields(card, split=None)
    names, dims = EXPECTED[layout]
    assert set(ds.data_vars) == names
    first = next(n for n in names if ds[n].ndim > 1)
    assert ds[first].dims == dims
    # the axis order is right: pdediff's [.., y, x] against the raw arrays of the file
    raw = _raw(layout, tmp_path)
    if raw is not None:
        name, array = raw
        np.testing.assert_allclose(ds[name].values, array, rtol=1e-6)


def _raw(layout, folder):
    """The first field of each example in pdediff's [sample, (time,) y, x], read without the card."""
    path = folder / EXAMPLES[layout][1]
    if layout == "pdebench-diffusion-reaction":
        with h5py.File(path) as f:
            return "v", np.stack([np.swapaxes(f[g]["data"][..., 1], 1, 2) for g in sorted(f)])
    if layout == "the-well":
        with h5py.File(path) as f:
            return "vy", np.swapaxes(f["t1_fields/velocity"][..., 1], 2, 3)
    if layout == "neuraloperator-ns":
        y = torch.load(path, weights_only=True)["y"].numpy()
        return "w", np.swapaxes(np.moveaxis(y, -1, 1), 2, 3)
    if layout == "npz":
        with np.load(path) as z:
            return "u", z["u"]
    return None


def test_pdebench_times_and_coordinates(tmp_path):
    ds = read_fields(shipped("pdebench-navier-stokes", tmp_path), split=None)
    with h5py.File(tmp_path / EXAMPLES["pdebench-navier-stokes"][1]) as f:
        t = f["t-coordinate"][()]
        assert t.size == ds.sizes["time"] + 1  # PDEBench stores one more time than it has fields
        np.testing.assert_allclose(ds["time"], t[:-1])
        np.testing.assert_allclose(ds["x"], f["x-coordinate"][()])
    assert json.loads(ds.attrs["periodic"]) == ["y", "x"]


def test_the_well_is_rectangular_and_reads_scalars(tmp_path):
    ds = read_fields(shipped("the-well", tmp_path), split=None)
    assert (ds.sizes["y"], ds.sizes["x"]) == (32, 48)
    np.testing.assert_allclose(ds["diffusivity"], 2e-3)


# ---------------------------------------------------------------------------- bad input
def _card(tmp_path, layout, edit) -> Path:
    card = shipped(layout, tmp_path)
    data = yaml.safe_load(card.read_text())
    edit(data)
    card.write_text(yaml.safe_dump(data))
    return card


def test_time_axis_shorter_than_the_step(tmp_path):
    card = _card(tmp_path, "pdebench-diffusion-reaction", lambda d: d["time"].update(step=11))
    with pytest.raises(ValueError, match=r"card\.yaml: time\.step: asked step=11 .*key 'data'.* has 11 point"):
        read_fields(card)
    card = shipped("pdebench-diffusion-reaction", tmp_path)
    with pytest.raises(ValueError, match=r"card\.yaml: time\.step: asked step=20"):
        fit(card, tmp_path / "m.safetensors", steps=1, step=20, progress=False)


def test_channel_count_differing_between_files(tmp_path):
    write_example("pdebench-diffusion-reaction", tmp_path)
    data, centres, t = diffusion_reaction(2, 32, 11, np.random.default_rng(1))
    with h5py.File(tmp_path / "second.h5", "w") as f:  # one channel, where the first file has two
        for s in range(2):
            f[f"{s:04d}/data"] = data[s, ..., :1]
            f[f"{s:04d}/grid/x"], f[f"{s:04d}/grid/y"], f[f"{s:04d}/grid/t"] = centres, centres, t
    d = yaml.safe_load((CARDS / "pdebench-diffusion-reaction.yaml").read_text())
    d["files"] = [EXAMPLES["pdebench-diffusion-reaction"][1], "second.h5"]
    d["fields"] = {"u": d["fields"]["u"]}
    (tmp_path / "card.yaml").write_text(yaml.safe_dump(d))
    with pytest.raises(ValueError, match=r"card\.yaml: fields\.u\.key='data': .*second\.h5 holds \[1\] channel.* \[2\]"):
        read_fields(tmp_path / "card.yaml")


def test_periodic_axis_on_a_problem_with_a_dirichlet_ring(tmp_path):
    data = yaml.safe_load((CARDS / "pdebench-darcy.yaml").read_text())
    data["grid"]["periodic"] = ["x"]
    with pytest.raises(ValueError, match=r"^card: grid\.periodic: found \['x'\] on problem 'darcy'.*Dirichlet ring"):
        ExternalCard.from_dict(data)


def test_fields_that_do_not_cover_the_model(tmp_path):
    card = shipped("pdebench-diffusion-reaction", tmp_path)
    model = fit(card, tmp_path / "m.safetensors", steps=2, batch=2, progress=False, network_kwargs=TINY)
    solver = pdediff.load_solver(model)
    first = read_fields(card, split="test").isel(sample=0, time=0)
    with pytest.raises(ValueError, match=r"card\.yaml: initial lacks fields\.v \(key 'data'\)"):
        solver.rollout(first[["u"]], steps=1)
    # resuming on a card that lacks one of the model's channels
    other = _card(tmp_path / "other", "pdebench-diffusion-reaction", lambda d: d["fields"].pop("v"))
    with pytest.raises(ValueError, match=r"other/card\.yaml: fields: .* do not cover the model's channels"):
        fit(other, model, resume=True, steps=4, progress=False)


def test_groups_that_differ_in_shape(tmp_path):
    write_example("pdebench-diffusion-reaction", tmp_path)
    with h5py.File(tmp_path / EXAMPLES["pdebench-diffusion-reaction"][1], "a") as f:
        g = f["0003"]
        data = g["data"][()]
        del g["data"]
        g["data"] = data[:7]  # 7 times where the others hold 11
    d = yaml.safe_load((CARDS / "pdebench-diffusion-reaction.yaml").read_text())
    d["files"] = EXAMPLES["pdebench-diffusion-reaction"][1]
    (tmp_path / "card.yaml").write_text(yaml.safe_dump(d))
    with pytest.raises(ValueError, match=r"card\.yaml: fields\.u\.key='data': group '0003' .* shape \(7, 32, 32\) "
                                         r"but group '0000' \(11, 32, 32\)"):
        read_fields(tmp_path / "card.yaml")


@pytest.mark.parametrize("edit, key, found", [
    (lambda d: d["fields"]["u"].update(role="state", axes=["x", "y"]), "fields.u.axes", "expected a time axis"),
    (lambda d: d["fields"]["u"].update(axes=["sample", "time", "x", "y"]), "fields.u.axes",
     "a group is one sample"),
    (lambda d: d.update(groups="("), "groups", "not a regular expression"),
    (lambda d: d["time"].update(step=0), "time.step", "expected an integer >= 1"),
    (lambda d: d["grid"].update(periodic=["z"]), "grid.periodic", "found \\['z'\\]"),
    (lambda d: d["fields"]["u"].update(key="nope"), "fields.u.key='nope'", "no such array .* arrays present"),
])
def test_bad_cards_name_the_key(tmp_path, edit, key, found):
    card = _card(tmp_path, "pdebench-diffusion-reaction", edit)
    with pytest.raises(ValueError, match=f"card\\.yaml: {key.replace('.', '[.]')}: .*{found}"):
        ExternalCard.load(card).check()


def test_classic_readers_refuse_a_time_dependent_card(tmp_path):
    card = shipped("pdebench-diffusion-reaction", tmp_path)
    with pytest.raises(ValueError, match="time-dependent.*read_fields"):
        pdediff.data.open_dataset(card)


# ---------------------------------------------------------------------------- the PDEs are right
def test_example_solutions_satisfy_their_equations():
    rng = np.random.default_rng(0)
    f, u = rectangular_poisson(2, 12, 20, rng)
    h = 1.0 / 11
    lap = (u[:, 2:, 1:-1] + u[:, :-2, 1:-1] + u[:, 1:-1, 2:] + u[:, 1:-1, :-2] - 4 * u[:, 1:-1, 1:-1]) / h**2
    np.testing.assert_allclose(-lap, f[:, 1:-1, 1:-1], atol=1e-8 * np.abs(f).max())
    # advection-diffusion: a pure translation when kappa = 0 (exact in Fourier space)
    c, v, x, y, t = advection_diffusion(1, 16, 16, 3, rng, kappa=0.0, t_end=2 / 16 / 0.5)
    assert c[0, 0].sum() == pytest.approx(c[0, -1].sum(), rel=1e-10)  # mass is conserved


# ---------------------------------------------------------------------------- networks on a torus
@pytest.mark.parametrize("name, kwargs", [("unet", TINY), ("fno", {"hidden_channels": 8, "n_modes": [6, 6],
                                                                     "n_layers": 2})])
def test_periodic_networks_commute_with_shifts(name, kwargs):
    torch.manual_seed(0)
    net = build_network(name, 2, channels=1, periodic=["y", "x"], add_coords=False, **kwargs)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x, c, n = torch.randn(1, 1, 16, 24), torch.randn(1, 2, 16, 24), torch.zeros(1)
    shift = (2, 4)  # a multiple of the U-Net's stride: the torus has no edge, so the answer moves along
    out = net(torch.roll(x, shift, (-2, -1)), n, torch.roll(c, shift, (-2, -1)))
    np.testing.assert_allclose(out.detach(), torch.roll(net(x, n, c), shift, (-2, -1)).detach(), atol=1e-5)
    if name == "unet":  # the control: zero padding puts an edge into the grid, and shifts no longer commute
        plain = build_network(name, 2, channels=1, add_coords=False, **kwargs)
        plain.load_state_dict(net.state_dict())
        moved = plain(torch.roll(x, shift, (-2, -1)), n, torch.roll(c, shift, (-2, -1)))
        assert (moved - torch.roll(plain(x, n, c), shift, (-2, -1))).abs().max() > 1e-3


# ---------------------------------------------------------------------------- models
def test_task_normalises_per_channel_and_pairs_every_time(tmp_path):
    ds = read_fields(shipped("the-well", tmp_path), split="train")
    task = FieldTask.from_data(ds, step=2, history=2)
    cond, target = task.pairs(ds)
    assert cond.shape == (ds.sizes["sample"] * (11 - 2 - 1), 3 * 2 + 1, 32, 48)
    assert target.shape[1] == 3
    # the tracer channel at lag 0 is unit scale, the velocity change is not blown up by a zero std
    assert abs(cond[:, 0].std() - 1) < 0.1 and np.isfinite(target).all()
    # a velocity that never changes: its change is scaled by a thousandth of the velocity's own scale
    for v in ("vx", "vy"):
        assert task.std[f"d:{v}"] == pytest.approx(1e-3 * task.std[v])
        assert task.std[f"d:{v}"] < 0.01 * float(ds[v].std())
    back = task.decode(torch.from_numpy(target[:4]), {s: torch.zeros(4, 32, 48) for s in task.outputs})
    t0 = torch.from_numpy(np.asarray(ds["tracer"][0, 3] - ds["tracer"][0, 1]))
    np.testing.assert_allclose(back["tracer"][0], t0, atol=1e-5)  # pair 0 is trajectory 0 at t = 1 -> 3


def test_fit_resumes_exactly(tmp_path):
    card = shipped("netcdf", tmp_path)
    whole = fit(card, tmp_path / "whole.safetensors", steps=6, batch=4, progress=False, network_kwargs=TINY)
    part = fit(card, tmp_path / "part.safetensors", steps=6, until=3, batch=4, progress=False, network_kwargs=TINY)
    assert pdediff.data.checkpoint.read_metadata(part)["step"] == 3
    fit(card, part, resume=True, progress=False)
    a, b = (pdediff.data.checkpoint.load_checkpoint(p)[0] for p in (whole, part))
    for k in a:
        if k.startswith("model."):
            torch.testing.assert_close(a[k], b[k], msg=k)


def test_rollout_of_a_tiny_model_and_the_regressor(tmp_path):
    card = shipped("pdebench-diffusion-reaction", tmp_path)
    test = read_fields(card, split="test")
    for mode in ("diffusion", "regression"):
        model = fit(card, tmp_path / f"{mode}.safetensors", steps=40, batch=8, mode=mode, progress=False,
                    network_kwargs=TINY)
        solver = pdediff.load_solver(model)
        assert isinstance(solver, pdediff.solver.fields.FieldSolver) and solver.mode == mode
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pdediff.AccuracyWarning)
            run = solver.rollout(test.isel(sample=0, time=0), steps=3, samples=2)
        assert run["u"].dims == ("sample", "time", "y", "x") and run.sizes["time"] == 4
        np.testing.assert_allclose(run["time"], test["time"][:4])
        np.testing.assert_allclose(run["u"][0, 0], test["u"][0, 0], rtol=1e-6)  # time 0 is the initial state
        assert (run["spread"] == 0).all() == (mode == "regression")
        ev = solver.evaluate(test, steps=3)
        assert ev["error"].dims == ("field", "step") and list(ev["field"].values) == ["u", "v"]
        assert ev["error"][:, 0].max() < 1e-6 and np.isfinite(ev.attrs["correlation_time"]) | True


def test_a_drifting_rollout_warns(tmp_path):
    card = shipped("pdebench-diffusion-reaction", tmp_path)
    first = read_fields(card, split="test").isel(sample=0, time=0)
    edm = pdediff.load_solver(fit(card, tmp_path / "edm.safetensors", steps=2, batch=2, mode="edm", progress=False,
                                  network_kwargs=TINY))
    with pytest.warns(pdediff.AccuracyWarning, match="draws part by"):
        edm.rollout(first, steps=2, samples=3)  # untrained: the draws are noise
    solver = pdediff.load_solver(fit(card, tmp_path / "m.safetensors", steps=2, batch=2, progress=False,
                                     network_kwargs=TINY))
    far = first.copy()
    far["u"] = first["u"] * 20  # far outside the training range
    with pytest.warns(pdediff.AccuracyWarning, match="leaves the training range at step 0"):
        run = solver.rollout(far, steps=1)
    assert run["drift"].dims == ("sample", "time") and float(run["drift"][0, 0]) > 4
    with warnings.catch_warnings():
        warnings.simplefilter("error", pdediff.AccuracyWarning)
        assert float(solver.rollout(first, steps=1)["drift"].max()) < 4  # in range: no warning


def test_user_defined_steady_problem_without_operator(tmp_path):
    """A field pdediff never heard of, from two condition fields, on a rectangle: data only."""
    rng = np.random.default_rng(0)
    f, u = rectangular_poisson(40, 16, 24, rng)
    k = rng.uniform(0.5, 2.0, f.shape[0])
    np.savez(tmp_path / "mine.npz", forcing=f, gain=np.broadcast_to(k[:, None, None], f.shape),
             response=u * k[:, None, None])
    card = ExternalCard.from_dict({
        "files": "mine.npz", "grid": {"kind": "node"},
        "fields": {"forcing": {"key": "forcing", "role": "condition"}, "gain": {"key": "gain", "role": "condition"},
                   "response": {"key": "response", "role": "solution"}},
        "splits": {"train": 0.8, "test": 0.2, "seed": 0}}, tmp_path / "card.yaml")
    card.save(tmp_path / "card.yaml")
    card.check()
    model = fit(tmp_path / "card.yaml", tmp_path / "m.safetensors", steps=30, batch=8, progress=False,
                network_kwargs=TINY)
    solver = pdediff.load_solver(model)
    test = read_fields(tmp_path / "card.yaml", split="test")
    answer = solver.solve({"forcing": test["forcing"].values, "gain": test["gain"].values}, samples=2)
    assert answer["response"].shape == (8, 16, 24) and answer["spread"].shape == (8,)
    ev = solver.evaluate(test)
    assert list(ev["field"].values) == ["response"] and np.isfinite(ev["error_mean"])
    with pytest.raises(ValueError, match=r"fields lacks fields\.gain \(key 'gain'\)"):
        solver.solve(forcing=test["forcing"].values)
    with pytest.raises(ValueError, match="steady; call solve"):
        solver.rollout({"response": test["response"].values}, steps=1)


@pytest.mark.parametrize("layout, network, history", [
    ("pdebench-diffusion-reaction", "unet", 1), ("pdebench-shallow-water", "unet", 1),
    ("pdebench-navier-stokes", "unet", 1), ("the-well", "fno", 1), ("neuraloperator-darcy", "fno", 1),
    ("neuraloperator-ns", "unet", 2), ("npz", "unet", 1), ("netcdf", "unet", 2)])
def test_every_layout_trains_and_answers(tmp_path, layout, network, history):
    """Through each shipped card, with only files changed: a tiny model, then a rollout or a solve."""
    card = shipped(layout, tmp_path)
    kwargs = TINY if network == "unet" else {"hidden_channels": 8, "n_modes": [6, 6], "n_layers": 2}
    options = {"history": history} if ExternalCard.load(card).dynamic else {}
    solver = pdediff.load_solver(fit(card, tmp_path / "m.safetensors", steps=3, batch=4, network=network,
                                     network_kwargs=kwargs, progress=False, **options))
    test = read_fields(card, split="test")
    if solver.task.dynamic:
        run = solver.rollout(test.isel(sample=[0], time=slice(0, history)), steps=2)
        assert set(solver.task.outputs) <= set(run.data_vars) and run.sizes["time"] == 3
        assert all(np.isfinite(run[s]).all() for s in solver.task.outputs)
    else:
        answer = solver.solve({k: test[k].values[:2] for k in solver.task.conditions})
        assert answer[solver.task.outputs[0]].shape == (2, *solver.task.shape)


def test_a_card_built_in_code(tmp_path):
    from pdediff.cards import CardField, CardGrid, CardTime

    write_example("netcdf", tmp_path)
    card = ExternalCard(files=str(tmp_path / "advection.nc"),
                        fields=(CardField("c", "c", "state", axes=("sample", "time", "y", "x")),),
                        grid=CardGrid("cell", periodic=("y", "x")), time=CardTime(key="time", step=2))
    ds = read_fields(card.check(), split=None)
    assert ds["c"].shape == (8, 11, 32, 32)
    bad = ExternalCard(files=card.files, fields=card.fields, grid=card.grid, problem="poisson")
    with pytest.raises(ValueError, match=r"^card: fields: .*for problem 'poisson'"):
        bad.check()


def test_a_constant_shared_by_all_training_data_need_not_be_given(tmp_path):
    card = shipped("the-well", tmp_path)  # scalars/diffusivity: one value in the file
    solver = pdediff.load_solver(fit(card, tmp_path / "m.safetensors", steps=2, batch=2, progress=False,
                                     network_kwargs=TINY))
    assert solver.task.fixed == {"diffusivity": pytest.approx(2e-3)}
    first = read_fields(card, split="test").isel(sample=0, time=0)
    a = solver.rollout({k: first[k].values for k in ("tracer", "vx", "vy")}, steps=1)
    b = solver.rollout(first, steps=1)
    np.testing.assert_allclose(a["tracer"], b["tracer"])
