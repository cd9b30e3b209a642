"""Tests of pdediff.data: xarray view, lazy torch dataset, validation of foreign or broken files."""

import shutil

import h5py
import numpy as np
import pytest
import torch

from pdediff.data import PDEDataset, ShardReader, load_arrays, open_dataset, read_card
from pdediff.data.generate import DatasetCard, generate_dataset, make_card


def test_open_dataset_coords_shapes_and_laziness(tiny_dataset):
    ds = open_dataset(tiny_dataset, split="valid")
    assert set(ds.data_vars) == {"rho", "g", "phi"}
    assert ds["phi"].dims == ("sample", "y", "x") and ds["phi"].shape == (8, 17, 17)
    np.testing.assert_array_equal(ds["x"], np.linspace(0, 1, 17))
    np.testing.assert_array_equal(ds["sample"], np.arange(8))
    assert ds.attrs["problem"] == "poisson" and ds.attrs["N"] == 17 and ds.attrs["count"] == 8
    assert ds["phi"].variable._in_memory is False
    loaded = load_arrays(tiny_dataset / "valid.h5")
    np.testing.assert_array_equal(ds["rho"].isel(sample=slice(1, 7, 2), x=3).values, loaded["rho"][1:7:2, :, 3])
    assert float(ds["phi"][5, 4, 6]) == loaded["phi"][5, 4, 6]


def test_torch_dataset_reads_lazily(tiny_dataset):
    dataset = PDEDataset(tiny_dataset / "train.h5")
    assert dataset.reader._handles is None
    assert len(dataset) == 40
    item = dataset[3]
    assert set(item) == {"rho", "g", "phi"}
    assert all(isinstance(v, torch.Tensor) and v.dtype == torch.float32 and v.shape == (17, 17) for v in item.values())
    assert dataset.reader._handles is not None
    assert dataset.card == DatasetCard.load(tiny_dataset)
    with pytest.raises(IndexError):
        dataset[40]


def test_indices_fields_and_batch_reads(tiny_dataset):
    everything = load_arrays(tiny_dataset)
    subset = PDEDataset(tiny_dataset, fields=["rho", "phi"], indices=[7, 2, 30])
    assert len(subset) == 3 and set(subset[0]) == {"rho", "phi"}
    np.testing.assert_array_equal(subset[1]["phi"].numpy(), everything["phi"][2])
    batch = subset.read(slice(None))
    np.testing.assert_array_equal(batch["rho"], everything["rho"][[7, 2, 30]])
    with pytest.raises(ValueError, match="fields="):
        PDEDataset(tiny_dataset, fields=["psi"])
    with pytest.raises(ValueError, match="indices"):
        PDEDataset(tiny_dataset, indices=[40])


def test_dataloader_with_two_workers(tiny_dataset):
    dataset = PDEDataset(tiny_dataset, split="test")
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=2)
    phi = torch.cat([batch["phi"] for batch in loader]).numpy()
    np.testing.assert_array_equal(phi, load_arrays(tiny_dataset, split="test")["phi"])


def test_truncated_file_is_rejected(tiny_dataset, tmp_path):
    broken = tmp_path / "train.h5"
    shutil.copy(tiny_dataset / "train.h5", broken)
    with open(broken, "r+b") as fh:
        fh.truncate(broken.stat().st_size // 2)
    with pytest.raises(ValueError, match=f"{broken}.*truncated"):
        open_dataset(broken)


def test_foreign_and_missing_files_are_rejected(tmp_path):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["u"] = np.zeros((2, 9, 9))
    with pytest.raises(ValueError, match=f"{foreign}: not a pdediff dataset"):
        PDEDataset(foreign)
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a readable HDF5 file"):
        load_arrays(text)
    with pytest.raises(ValueError, match="no such file"):
        open_dataset(tmp_path / "missing.h5")
    with pytest.raises(ValueError, match="no train.h5"):
        open_dataset(tmp_path)


def test_inconsistent_shapes_and_incomplete_files_are_rejected(tiny_dataset, tmp_path):
    bad = tmp_path / "bad.h5"
    shutil.copy(tiny_dataset / "test.h5", bad)
    with h5py.File(bad, "r+") as f:
        del f["phi"]
        f["phi"] = np.zeros((8, 16, 16), dtype=np.float32)
    with pytest.raises(ValueError, match="'phi' has shape"):
        ShardReader(bad)
    with h5py.File(bad, "r+") as f:
        f.attrs["completed"] = 3
    with pytest.raises(ValueError, match="incomplete"):
        ShardReader(bad)


def test_mismatched_shards_are_rejected(tiny_dataset, tmp_path):
    generate_dataset(tmp_path, make_card("poisson", 9, 4, valid_count=0, test_count=0))
    with pytest.raises(ValueError, match="n=9.*must agree"):
        load_arrays([tiny_dataset / "train.h5", tmp_path / "train.h5"])
    (tmp_path / "train-00000-of-00002.h5").write_bytes(b"")
    (tmp_path / "train.h5").unlink()
    with pytest.raises(ValueError, match="expected every shard"):
        PDEDataset(tmp_path)


def test_card_json_round_trip_and_validation(tiny_dataset):
    card = DatasetCard.load(tiny_dataset / "card.json")
    assert DatasetCard.from_json(card.to_json()) == card
    with pytest.raises(ValueError, match="unknown key"):
        DatasetCard.from_dict({**card.to_dict(), "colour": "red"})
    with pytest.raises(ValueError, match="incomplete"):
        DatasetCard.from_dict({"problem": "poisson"})


def test_load_arrays_limit_and_rank_shares(tiny_dataset):
    everything = load_arrays(tiny_dataset)
    shares = [load_arrays(tiny_dataset, fields=["phi"], limit=31, rank=r, world=3)["phi"] for r in range(3)]
    assert [len(s) for s in shares] == [11, 10, 10]
    np.testing.assert_array_equal(np.concatenate(shares), everything["phi"][:31])
    with pytest.raises(ValueError, match="rank=3"):
        load_arrays(tiny_dataset, rank=3, world=3)


def test_read_card_is_a_json_ready_dict(tiny_dataset):
    card = read_card(tiny_dataset / "train.h5")
    assert card == DatasetCard.load(tiny_dataset).to_dict() and card["n"] == 17
