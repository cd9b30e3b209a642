"""``pdediff.data.describe``: an unknown HDF5 file's arrays and a draft card that reads it, and
``ExternalCard.check``."""

import io
import subprocess
import sys

import h5py
import numpy as np
import pytest
import yaml

import pdediff.data
from pdediff.data import ExternalCard, describe, open_dataset


def _pdebench_darcy(path, samples=6, n=16):
    rng = np.random.default_rng(0)
    nu = np.where(rng.random((samples, n, n)) < 0.5, 0.1, 1.0)
    u = rng.random((samples, 1, n, n))
    with h5py.File(path, "w") as f:
        f["nu"], f["tensor"] = nu, u
        f["x-coordinate"] = f["y-coordinate"] = (np.arange(n) + 0.5) / n
        f.attrs["beta"] = 1.0
    return nu, u


def test_the_draft_of_a_pdebench_layout_reads_the_file(tmp_path):
    nu, u = _pdebench_darcy(tmp_path / "darcy.h5")
    out = io.StringIO()
    card = describe(tmp_path / "darcy.h5", file=out)
    text = out.getvalue()
    assert "nu" in text and "(6, 1, 16, 16)" in text and "attribute beta = 1.0" in text
    assert card["fields"]["tensor"]["role"] == "solution" and card["fields"]["tensor"]["index"] == {1: 0}
    assert card["fields"]["nu"]["kind"] == "coefficient" and card["grid"]["kind"] == "cell"
    # the draft, written as YAML beside the file, is a card that reads it
    (tmp_path / "card.yaml").write_text(yaml.safe_dump({**card, "splits": {"train": 0.5, "valid": 0.5, "seed": 0}}))
    loaded = ExternalCard.load(tmp_path / "card.yaml")
    assert loaded.check() is loaded
    ds = open_dataset(tmp_path / "card.yaml", split="train")
    s = ds["sample"].values  # the split's sample indices in the file, or positions: compare by content
    got = ds["nu"].values
    assert got.shape == (3, 16, 16)
    stored = nu.transpose(0, 2, 1)  # stored [sample, x, y], read [sample, y, x]
    assert all(any(np.array_equal(g, t) for t in stored) for g in got), s
    np.testing.assert_allclose(ds["beta"].values, 1.0)


def test_a_draft_of_per_seed_groups_says_so(tmp_path):
    with h5py.File(tmp_path / "rd.h5", "w") as f:
        for seed in ("0000", "0001"):
            f[f"{seed}/data"] = np.zeros((5, 16, 16, 2))
            f[f"{seed}/grid/x"] = f[f"{seed}/grid/y"] = np.linspace(0, 1, 16)
    card = describe(tmp_path / "rd.h5", file=io.StringIO())
    notes = io.StringIO()
    describe(tmp_path / "rd.h5", file=notes)
    assert "2 top-level groups named by number" in notes.getvalue() and card["layout"] == "groups"
    spec = card["fields"]["data1"]  # (T, X, Y, C): time, space on axes 1, 2, the second of two channels
    assert spec == {"key": "data", "role": "state", "axes": ["time", "x", "y"], "index": {3: 1}}


def test_check_names_the_key_that_does_not_fit(tmp_path):
    _pdebench_darcy(tmp_path / "darcy.h5")
    card = describe(tmp_path / "darcy.h5", file=io.StringIO())
    card["fields"]["tensor"]["key"] = "missing"
    with pytest.raises(ValueError, match=r"fields\.tensor.*missing"):
        ExternalCard.from_dict(card, path=tmp_path / "card.yaml").check()


def test_describe_refuses_what_it_cannot_read(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"path=.*notes\.txt.*not a readable HDF5 file"):
        describe(tmp_path / "notes.txt")
    with h5py.File(tmp_path / "flat.h5", "w") as f:
        f["x"] = np.zeros(4)
    with pytest.raises(ValueError, match=r"no array with 3 or more dimensions"):
        describe(tmp_path / "flat.h5")
    done = subprocess.run([sys.executable, "-m", "pdediff.data.draft", str(tmp_path / "notes.txt")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "not a readable HDF5 file" in done.stderr


def test_the_cli_writes_the_draft(tmp_path):
    _pdebench_darcy(tmp_path / "darcy.h5")
    (tmp_path / "cards").mkdir()
    done = subprocess.run([sys.executable, "-m", "pdediff.data.draft", str(tmp_path / "darcy.h5"), "--out",
                           str(tmp_path / "cards" / "card.yaml")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    card = ExternalCard.load(tmp_path / "cards" / "card.yaml")  # in another folder than the file
    assert card.files == "../darcy.h5" and card.check().solution_field == "tensor"
    assert pdediff.data.describe is describe


@pytest.mark.parametrize("layout", ["pdebench-diffusion-reaction", "pdebench-navier-stokes", "the-well"])
def test_drafts_of_time_dependent_layouts_read_their_files(tmp_path, layout):
    from pdediff.data.examples import write_example
    from pdediff.data.external import read_fields

    path = write_example(layout, tmp_path)
    card = describe(path, file=io.StringIO())
    (tmp_path / "card.yaml").write_text(yaml.safe_dump(card))
    ds = read_fields(tmp_path / "card.yaml", split=None)
    states = [k for k, r in ExternalCard.load(tmp_path / "card.yaml").roles.items() if r == "state"]
    assert states and all(ds[k].dims == ("sample", "time", "y", "x") for k in states)
    assert ds.sizes["time"] == 11
    if layout == "the-well":
        assert card["grid"]["periodic"] == ["x", "y"] and {"velocity0", "velocity1", "tracer"} <= set(card["fields"])
