"""Tests of external dataset cards: other people's HDF5 files read by every reader of pdediff.

The files are built here in the exact layout of PDEBench's 2D Darcy flow
(``2D_DarcyFlow_beta*_Train.hdf5``: ``nu`` (S, N, N) and ``tensor`` (S, 1, N, N), both with axes
[sample, x, y], ``x-coordinate``/``y-coordinate`` cell centres and a ``beta`` attribute), small.
"""

import copy
import json
import re
import shutil

import h5py
import numpy as np
import pytest
import torch
import yaml

from pdediff.data.cards import ExternalCard
from pdediff.data import (
    PDEDataset,
    ShardReader,
    find_card,
    load_arrays,
    open_dataset,
    read_card,
    resolve_paths,
)

S, N = 12, 16
BETAS = (0.1, 1.0)


def write_pdebench(path, beta, count=S, n=N, seed=0):
    """A file in PDEBench's Darcy layout; returns (a, u) as pdediff reads them: [sample, y, x]."""
    rng = np.random.default_rng(seed)
    nu = rng.uniform(0.1, 1.0, (count, n, n)).astype(np.float32)  # [sample, x, y]
    tensor = rng.standard_normal((count, 1, n, n)).astype(np.float32)  # [sample, t, x, y]
    centres = (np.arange(n) + 0.5) / n
    with h5py.File(path, "w") as f:
        f["nu"] = nu
        f["tensor"] = tensor
        f["x-coordinate"] = centres.astype(np.float32)
        f["y-coordinate"] = centres.astype(np.float32)
        f.attrs["beta"] = beta
    return nu.transpose(0, 2, 1), tensor[:, 0].transpose(0, 2, 1)


@pytest.fixture
def pdebench(tmp_path, repo_root):
    """The shipped card in cards/, beside two PDEBench-layout files in pdebench-darcy/."""
    (tmp_path / "cards").mkdir()
    (tmp_path / "pdebench-darcy").mkdir()
    card = tmp_path / "cards" / "pdebench-darcy.yaml"
    shutil.copy(repo_root / "datasets" / "cards" / "pdebench-darcy.yaml", card)
    a, u = zip(*(write_pdebench(tmp_path / "pdebench-darcy" / f"2D_DarcyFlow_beta{b}_Train.hdf5", b, seed=k)
                 for k, b in enumerate(BETAS)))
    f = np.concatenate([np.full((S, N, N), b, np.float32) for b in BETAS])
    return card, {"a": np.concatenate(a), "u": np.concatenate(u), "f": f}


def card_dict(files="data.h5", **changes):
    """A card for one file written by write_pdebench, with top-level ``changes``."""
    data = {
        "files": files,
        "problem": "darcy",
        "fields": {
            "a": {"key": "nu", "axes": ["sample", "x", "y"], "role": "condition", "kind": "coefficient"},
            "u": {"key": "tensor", "index": {1: 0}, "axes": ["sample", "x", "y"], "role": "solution"},
        },
        "constants": {"f": {"attribute": "beta", "kind": "source"}},
        "grid": {"kind": "cell", "x": "x-coordinate", "y": "y-coordinate"},
        "splits": {"train": 0.5, "valid": 0.25, "test": 0.25, "seed": 7},
    }
    data.update(changes)
    return data


def write_card(folder, data, name="card.yaml"):
    path = folder / name
    path.write_text(json.dumps(data) if name.endswith(".json") else yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def single(tmp_path):
    """One PDEBench-layout file and the expected arrays; write a card beside it with write_card."""
    a, u = write_pdebench(tmp_path / "data.h5", 2.5)
    return tmp_path, {"a": a, "u": u, "f": np.full((S, N, N), 2.5, np.float32)}


# ---------------------------------------------------------------------------- the shipped card
def test_shipped_card_reads_the_pdebench_layout(pdebench):
    card, expected = pdebench
    seen = []
    for split, count in (("train", 22), ("valid", 1), ("test", 1)):  # round(24 * [0.9, 0.95, 1])
        ds = open_dataset(card, split=split)
        assert set(ds.data_vars) == {"a", "f", "u"}
        assert ds["u"].dims == ("sample", "y", "x") and ds["u"].shape == (count, N, N)
        assert ds["u"].variable._in_memory is False
        np.testing.assert_allclose(ds["x"], (np.arange(N) + 0.5) / N, rtol=1e-6)
        np.testing.assert_allclose(ds["y"], (np.arange(N) + 0.5) / N, rtol=1e-6)
        source = ds["source_index"].values
        for name in ("a", "u", "f"):
            np.testing.assert_array_equal(ds[name].values, expected[name][source])
        assert ds.attrs["problem"] == "darcy" and ds.attrs["grid"] == "cell" and ds.attrs["split"] == split
        assert ds.attrs["count"] == count and "beta" not in ds.attrs  # beta differs between the files
        seen.append(source)
    together = np.concatenate(seen)
    assert sorted(together) == list(range(2 * S))  # disjoint and covering


def test_shipped_card_is_described_for_the_trainer(pdebench):
    card, _ = pdebench
    info = read_card(card)
    assert info["problem"] == "darcy" and info["n"] == N and info["h"] == pytest.approx(1 / N)
    assert info["fields"] == ["a", "f", "u"]
    assert info["condition_fields"] == ["a", "f"] and info["solution_field"] == "u"
    assert info["dirichlet_field"] is None and info["constants"] == ["f"]
    assert info["roles"] == {"a": "condition", "u": "solution", "f": "condition"}
    assert info["kinds"] == {"a": "coefficient", "u": None, "f": "source"}
    assert info["grid"]["kind"] == "cell" and info["grid"]["x"] == pytest.approx([0.5 / N, 1 - 0.5 / N])
    assert info["counts"] == {"train": 22, "valid": 1, "test": 1} and info["count"] == 24
    assert [p.split("/")[-1] for p in info["files"]] == [f"2D_DarcyFlow_beta{b}_Train.hdf5" for b in BETAS]
    assert info["card"] == json.loads(ExternalCard.load(card).to_json()) and "PDEBench" in info["note"]
    assert json.loads(json.dumps(info)) == info  # JSON-ready, as checkpoints embed it
    assert ExternalCard.from_dict(info["card"]) == ExternalCard.load(card)
    # what training.py reads from a ShardReader
    reader = ShardReader(card, "valid")
    assert reader.infos[0].problem == "darcy" and reader.fields == ("a", "f", "u") and reader.n == N
    assert len(reader) == 1 and json.loads(reader.infos[0].attrs["card_json"]).get("params", {}) == {}
    assert resolve_paths(card) == ExternalCard.load(card).paths()


def test_load_arrays_and_pdedataset(pdebench):
    card, expected = pdebench
    train = ShardReader(card).selection
    arrays = load_arrays(card)
    assert set(arrays) == {"a", "f", "u"} and arrays["u"].dtype == np.float32
    for name in arrays:
        np.testing.assert_array_equal(arrays[name], expected[name][train])
    shares = [load_arrays(card, fields=["u"], limit=10, rank=r, world=3)["u"] for r in range(3)]
    np.testing.assert_array_equal(np.concatenate(shares), expected["u"][train[:10]])
    dataset = PDEDataset(card, fields=["a", "u"], indices=[5, 0, 5])
    assert dataset.reader._handles is None and len(dataset) == 3
    item = dataset[0]
    assert set(item) == {"a", "u"} and item["a"].dtype == torch.float32 and item["a"].shape == (N, N)
    np.testing.assert_array_equal(item["u"].numpy(), expected["u"][train[5]])
    np.testing.assert_array_equal(dataset.read(slice(None))["a"], expected["a"][train[[5, 0, 5]]])
    assert dataset.card == ExternalCard.load(card)
    loader = torch.utils.data.DataLoader(PDEDataset(card), batch_size=5, num_workers=2)
    u = torch.cat([batch["u"] for batch in loader]).numpy()
    np.testing.assert_array_equal(u, expected["u"][train])


def test_lazy_views_slice_like_arrays(pdebench):
    card, expected = pdebench
    ds = open_dataset(card)
    train = ds["source_index"].values
    u = expected["u"][train]
    np.testing.assert_array_equal(ds["u"].isel(sample=slice(1, 9, 3), x=4).values, u[1:9:3, :, 4])
    np.testing.assert_array_equal(ds["u"].isel(y=slice(None, None, -2)).values, u[:, ::-2])
    assert float(ds["u"][3, 2, 7]) == u[3, 2, 7]
    assert float(ds["f"][0, 0, 0]) == expected["f"][train[0], 0, 0]


# ---------------------------------------------------------------------------- layouts and grids
def test_axis_order_and_index_forms(single):
    folder, expected = single
    plain = open_dataset(write_card(folder, card_dict(fields={
        "a": {"key": "nu", "role": "condition"},  # default axes [sample, y, x]: read as stored
        "u": {"key": "tensor", "index": [None, 0, None, None], "axes": ["sample", "x", "y"], "role": "solution"},
    }, splits=None), "plain.yaml"))
    np.testing.assert_array_equal(plain["a"].values, expected["a"].transpose(0, 2, 1))
    np.testing.assert_array_equal(plain["u"].values, expected["u"])
    # samples last (as Julia or MATLAB write them), the extra axis in between
    with h5py.File(folder / "data.h5") as f:
        nu, tensor = f["nu"][()], f["tensor"][()]
    with h5py.File(folder / "last.h5", "w") as f:
        f["nu"] = nu.transpose(2, 1, 0)  # [y, x, sample]
        f["tensor"] = tensor.transpose(2, 3, 1, 0)  # [x, y, t, sample]
        f.attrs["beta"] = 2.5
    last = card_dict("last.h5", fields={
        "a": {"key": "nu", "axes": ["y", "x", "sample"], "role": "condition"},
        "u": {"key": "tensor", "index": {2: 0}, "axes": ["x", "y", "sample"], "role": "solution"},
    }, grid={"kind": "cell"}, splits={"train": [0, S]})
    arrays = load_arrays(write_card(folder, last, "last.yaml"), fields=["a", "u"])
    np.testing.assert_array_equal(arrays["a"], expected["a"])
    np.testing.assert_array_equal(arrays["u"], expected["u"])


def test_grid_coordinates_and_constant_values(single):
    folder, _ = single
    cell = open_dataset(write_card(folder, card_dict(grid={"kind": "cell"}, splits=None)))
    np.testing.assert_allclose(cell["x"], (np.arange(N) + 0.5) / N)
    node = card_dict(grid={"kind": "node", "spacing": "1e-2"}, splits=None,
                     constants={"f": {"value": -3, "kind": "source"}, "g": {"value": 0.0, "kind": "dirichlet"}})
    ds = open_dataset(write_card(folder, node, "node.yaml"))
    np.testing.assert_allclose(ds["x"], np.arange(N) * 0.01)
    assert set(ds.data_vars) == {"a", "f", "g", "u"}
    assert (ds["f"].values == -3).all() and (ds["g"].values == 0).all()
    assert read_card(folder / "node.yaml")["dirichlet_field"] == "g"
    default = card_dict(grid={"kind": "node"}, splits=None)
    np.testing.assert_allclose(open_dataset(write_card(folder, default, "d.yaml"))["y"], np.linspace(0, 1, N))


# ---------------------------------------------------------------------------- splits
def test_fraction_splits_are_seeded_disjoint_and_covering(single):
    folder, _ = single
    card = write_card(folder, card_dict())
    first = {s: ShardReader(card, s).selection for s in ("train", "valid", "test")}
    again = {s: ShardReader(card, s).selection for s in ("train", "valid", "test")}
    assert all(np.array_equal(first[s], again[s]) for s in first)
    assert [len(first[s]) for s in ("train", "valid", "test")] == [6, 3, 3]
    assert sorted(np.concatenate(list(first.values()))) == list(range(S))
    np.testing.assert_array_equal(np.concatenate(list(first.values())), np.random.default_rng(7).permutation(S))
    other = write_card(folder, card_dict(splits={"train": 0.5, "valid": 0.25, "test": 0.25, "seed": 8}), "o.yaml")
    assert not np.array_equal(ShardReader(other).selection, first["train"])
    with pytest.raises(ValueError, match=r"card.yaml: split='holdout' is not in splits; expected one of "
                                         r"\['train', 'valid', 'test'\]"):
        open_dataset(card, split="holdout")


def test_range_splits(single):
    folder, expected = single
    card = write_card(folder, card_dict(splits={"train": [0, 8], "valid": [8, 10], "test": [10, 12]}))
    np.testing.assert_array_equal(load_arrays(card, split="valid")["u"], expected["u"][8:10])
    assert read_card(card)["counts"] == {"train": 8, "valid": 2, "test": 2}
    beyond = write_card(folder, card_dict(splits={"train": [0, 8], "test": [8, 20]}), "beyond.yaml")
    with pytest.raises(ValueError, match=r"beyond.yaml: splits.test: found \[8, 20\], but the files hold 12 samples"):
        ShardReader(beyond, "test")
    assert len(ShardReader(write_card(folder, card_dict(splits=None), "all.yaml"))) == S  # no splits: train = all


def test_glob_over_two_files_in_sorted_order(tmp_path):
    a2, _ = write_pdebench(tmp_path / "part-2.h5", 2.0, count=5, seed=2)
    a1, _ = write_pdebench(tmp_path / "part-1.h5", 1.0, count=7, seed=1)
    card = write_card(tmp_path, card_dict("part-*.h5", splits={"train": [0, 12]}))
    ds = open_dataset(card)
    np.testing.assert_array_equal(ds["a"].values, np.concatenate([a1, a2]))
    np.testing.assert_array_equal(ds["f"].values[:, 0, 0], [1.0] * 7 + [2.0] * 5)
    assert [p.name for p in ExternalCard.load(card).paths()] == ["part-1.h5", "part-2.h5"]
    listed = write_card(tmp_path, card_dict(["part-2.h5", "part-1.h5"], splits=None), "listed.yaml")
    np.testing.assert_array_equal(load_arrays(listed)["a"], np.concatenate([a2, a1]))


# ---------------------------------------------------------------------------- round trips, detection
def test_yaml_and_json_round_trip(single, tmp_path):
    folder, expected = single
    card = ExternalCard.load(write_card(folder, card_dict(note="made elsewhere", params={"k": 2})))
    assert ExternalCard.from_dict(yaml.safe_load(card.to_yaml())) == card
    assert ExternalCard.from_dict(json.loads(card.to_json())) == card  # JSON keys of index are strings
    saved = card.save(folder / "again.json")
    assert ExternalCard.load(saved) == card and json.loads(saved.read_text())["fields"]["u"]["index"] == {"1": 0}
    assert ExternalCard.load(card.save(folder / "again.yml")) == card
    for path in (folder / "card.yaml", saved):
        np.testing.assert_array_equal(load_arrays(path, split="test")["u"], load_arrays(folder / "card.yaml",
                                                                                        split="test")["u"])


def test_cards_are_detected_by_suffix_content_and_folder(single, tiny_dataset):
    folder, expected = single
    text = yaml.safe_dump(card_dict(splits=None))
    (folder / "darcy.card").write_text(text)
    np.testing.assert_array_equal(load_arrays(folder / "darcy.card")["u"], expected["u"])
    assert find_card([folder / "darcy.card"]) is not None and find_card(folder / "data.h5") is None
    (folder / "card.yaml").write_text(text)
    np.testing.assert_array_equal(load_arrays(folder)["a"], expected["a"])  # a folder holding card.yaml
    # a native card.json is not an external card: its folder is read
    assert find_card(tiny_dataset / "card.json") is None
    np.testing.assert_array_equal(load_arrays(tiny_dataset / "card.json", split="valid")["phi"],
                                  load_arrays(tiny_dataset, split="valid")["phi"])
    with pytest.raises(ValueError, match="holds the dataset card .* among other paths"):
        load_arrays([folder / "card.yaml", folder / "data.h5"])


# ---------------------------------------------------------------------------- errors
def _error(folder, data, reader=open_dataset, name="bad.yaml", split="train"):
    path = write_card(folder, data, name)
    with pytest.raises(ValueError) as info:
        reader(path, split=split)
    message = str(info.value)
    assert message.startswith(str(path)), message  # names the card
    return message


def test_card_not_fitting_its_files(single):
    folder, _ = single
    fields = card_dict()["fields"]

    msg = _error(folder, card_dict(fields={**fields, "u": {**fields["u"], "key": "solution"}}))
    assert "fields.u.key='solution': no such dataset in" in msg
    assert "datasets present: ['nu', 'tensor', 'x-coordinate', 'y-coordinate']" in msg

    msg = _error(folder, card_dict(fields={**fields, "u": {k: v for k, v in fields["u"].items() if k != "index"}}))
    assert "fields.u: 'tensor' in" in msg and "has shape (12, 1, 16, 16); expected 3 axes" in msg

    msg = _error(folder, card_dict(fields={**fields, "a": {**fields["a"], "axes": ["x", "y", "sample"]}}))
    assert "fields.a.axes: 'nu' in" in msg and "has shape (12, 16, 16), read with axes ['x', 'y', 'sample'] " \
        "as sample=16, y=16, x=12; expected an N x N grid" in msg

    msg = _error(folder, card_dict(fields={**fields, "u": {**fields["u"], "index": {1: 3}}}))
    assert "fields.u.index: index 3 on axis 1 is out of range for 'tensor' of shape (12, 1, 16, 16)" in msg

    msg = _error(folder, card_dict("nothing-*.h5"))
    assert "files: 'nothing-*.h5' matches no file" in msg

    msg = _error(folder, card_dict(constants={"f": {"attribute": "alpha"}}))
    assert "constants.f.attribute='alpha': no such attribute in" in msg and "attributes present: ['beta']" in msg

    msg = _error(folder, card_dict(grid={"kind": "cell", "x": "x-coordinate", "y": "y-coords"}))
    assert "grid.y='y-coords': no such dataset" in msg

    with h5py.File(folder / "short.h5", "w") as f:
        f["nu"] = np.ones((4, 16, 16), np.float32)
        f["tensor"] = np.ones((5, 1, 16, 16), np.float32)
        f.attrs["beta"] = 1.0
    msg = _error(folder, card_dict("short.h5", grid={"kind": "cell"}))
    assert "fields: the fields disagree in" in msg and "a: 4 samples of 16 x 16, u: 5 samples of 16 x 16" in msg

    (folder / "text.h5").write_text("not hdf5")
    assert "files: " in _error(folder, card_dict("text.h5"), reader=load_arrays)


@pytest.mark.parametrize("change, key, found", [
    ({"colour": "red"}, "card", r"unknown key\(s\) \['colour'\]"),
    ({"fields": {"u": {"key": "tensor", "role": "solution", "shape": 3}}}, "fields.u", r"unknown key\(s\) \['shape'\]"),
    ({"fields": {"u": {"key": "tensor", "role": "answer"}}}, "fields.u.role", "found 'answer'"),
    ({"fields": {"u": {"key": "tensor", "role": "solution", "axes": ["sample", "y", "z"]}}}, "fields.u.axes",
     r"found \['sample', 'y', 'z'\]"),
    ({"fields": {"u": {"key": "tensor", "role": "solution", "index": [0, None]}}}, "fields.u.index", "found"),
    ({"fields": {"a": {"key": "nu", "role": "solution"}, "u": {"key": "tensor", "role": "solution"}}}, "fields",
     r"found solution\(s\) \[.a., .u.\] and state\(s\) \[\] for problem"),
    ({"constants": {"f": {"attribute": "beta", "value": 1.0}}}, "constants.f", "expected exactly one of"),
    ({"constants": {"u": {"value": 1.0}}}, "constants", "named both as fields and as constants"),
    ({"grid": {"kind": "edge"}}, "grid.kind", "found 'edge'"),
    ({"grid": {"kind": "cell", "spacing": 0.1, "x": "x", "y": "y"}}, "grid", "found both spacing and"),
    ({"splits": {"train": 0.8, "valid": 0.1, "test": 0.05, "seed": 0}}, "splits", "sum to 0.95; expected 1"),
    ({"splits": {"train": 0.5, "test": 0.5}}, "splits.seed", "missing"),
    ({"splits": {"train": [0, 8], "valid": [6, 10]}}, "splits", r"ranges train and valid overlap \(samples \[6, 8\)"),
    ({"splits": {"train": [0, 8], "valid": 0.5}}, "splits", "expected all fractions or all"),
    ({"splits": {"train": [5, 2]}}, "splits.train", "expected 0 <= start <= stop"),
])
def test_invalid_cards_name_the_key(tmp_path, change, key, found):
    data = card_dict(**change)
    if "fields" in change and "u" not in change["fields"]:
        data["fields"] = {**copy.deepcopy(card_dict()["fields"]), **change["fields"]}
    path = write_card(tmp_path, data)
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: {re.escape(key)}: .*{found}"):
        ExternalCard.load(path)
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: {re.escape(key)}: "):
        load_arrays(path)


def test_unreadable_cards(tmp_path):
    (tmp_path / "broken.yaml").write_text("files: [unclosed\n")
    with pytest.raises(ValueError, match="broken.yaml: not a valid YAML dataset card"):
        read_card(tmp_path / "broken.yaml")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="broken.json: cannot read a dataset card"):
        PDEDataset(tmp_path / "broken.json")
    with pytest.raises(ValueError, match="missing.yaml: cannot read a dataset card"):
        open_dataset(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="list.yaml: card: found list"):
        load_arrays(tmp_path / "list.yaml")


def test_shipped_card_is_valid_without_its_files(repo_root):
    card = ExternalCard.load(repo_root / "datasets" / "cards" / "pdebench-darcy.yaml")
    assert card.problem == "darcy" and card.grid.kind == "cell" and card.field_names == ["a", "f", "u"]
    assert dict(card.splits.fractions) == {"train": 0.9, "valid": 0.05, "test": 0.05} and card.splits.seed == 0
    assert "approximately" in card.note and "data-driven" in card.note


def test_train_from_a_card_and_solve(pdebench, tmp_path):
    """A tiny model trained through the shipped card on PDEBench-layout files: data-driven on the
    cell grid (no Dirichlet ring, no residual, no polish), solved by the fields' card names."""
    import pdediff
    from pdediff.learning.config import Config
    from pdediff.tools.training import train

    card, arrays = pdebench
    config = Config.from_dict({
        "name": "card-tiny",
        "data": {"train": str(card), "valid": str(card), "problem": "darcy"},
        "model": {"network": "unet", "precond": "x0", "steps": 2, "sampler": "euler",
                  "network_kwargs": {"model_channels": 8, "channel_mult": [1, 2], "attention_levels": []}},
        "train": {"steps": 3, "batch_size": 4, "warmup_steps": 1, "log_every": 1, "valid_every": 3,
                  "valid_samples": 2, "checkpoint_every": 3},
    })
    path = train(config, tmp_path / "run", progress=False)
    solver = pdediff.load_solver(path)
    assert solver.problem.condition_fields == ("a", "f") and solver.problem.dirichlet_field is None
    assert not solver.problem.offers_residual
    a, f = arrays["a"][:2], arrays["f"][:2]
    u = solver.solve(a=a, f=f)
    assert u.shape == (2, N, N) and np.all(np.isfinite(u))
    # the coefficient's scale is divided out exactly: a / c with f / c gives the same u
    # (float32 network: a few units in the 5th digit of the largest value where u is small)
    np.testing.assert_allclose(solver.solve(a=3 * a, f=3 * f), u, rtol=1e-4, atol=2e-5 * np.abs(u).max())
    with pytest.raises(ValueError, match="data-driven"):
        solver.solve(a=a, f=f, polish=2)
    with pytest.raises(ValueError, match="data-driven"):
        solver.solve(a=a, f=f, guidance=0.5)
    with pytest.raises(ValueError, match="'g' is not a field"):
        solver.solve(a=a, f=f, g=np.zeros_like(a))
