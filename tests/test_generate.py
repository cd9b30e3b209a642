"""Tests of pdediff.data.generate and generate_data.py: files, determinism, shards, resume, CLI errors."""

import dataclasses
import json
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from pdediff.data import load_arrays
from pdediff.data.generate import DatasetCard, generate_dataset, make_card, parse_shard, split_filename
from pdediff.physics.problems import PROBLEMS


def small_card(count=40, block_size=8, **kw):
    """A 17 x 17 card with tiny blocks so that every run spans several blocks."""
    kw = {"source": "mixture", "boundary": "smooth", "seed": 5, "valid_count": 4, "test_count": 4, **kw}
    return dataclasses.replace(make_card("poisson", 17, count, **kw), block_size=block_size)


def arrays(path):
    return load_arrays(path, dtype=None)


def run_cli(capsys, *args):
    """generate_data.py's ``main`` in this process: its exit status, stdout and stderr."""
    import generate_data

    capsys.readouterr()
    try:
        returncode = generate_data.main(["--quiet", *map(str, args)])
    except SystemExit as exc:  # argparse's error(): status 2
        returncode = exc.code
    out = capsys.readouterr()
    return SimpleNamespace(returncode=returncode, stdout=out.out, stderr=out.err)


@pytest.mark.parametrize("dtype, tol", [("float32", 1e-5), ("float64", 1e-12)])
def test_round_trip_solves_the_problem(tmp_path, dtype, tol):
    card = small_card(dtype=dtype)
    results = generate_dataset(tmp_path, card)
    assert {s: r.count for s, r in results.items()} == {"train": 40, "valid": 4, "test": 4}
    data = arrays(tmp_path / "train.h5")
    assert all(a.dtype == np.dtype(dtype) and a.shape == (40, 17, 17) for a in data.values())
    assert PROBLEMS["poisson"].relative_residual(data["phi"], data["rho"], data["g"]).max() < tol
    with h5py.File(tmp_path / "valid.h5") as f:
        attrs = dict(f.attrs)
        assert f["phi"].chunks == (1, 17, 17) and f["phi"].compression == "gzip"
    for key in ("problem", "N", "h", "source", "boundary", "seed", "split", "shard", "params_json", "version"):
        assert key in attrs
    assert attrs["split"] == "valid" and attrs["N"] == 17 and attrs["h"] == 1 / 16
    assert json.loads(attrs["params_json"])["boundary"]["name"] == "smooth"
    saved = DatasetCard.load(tmp_path)
    assert saved == card == DatasetCard.from_json(attrs["card_json"])
    assert saved.fields == ["rho", "g", "phi"] and saved.counts["valid"] == 4


def test_splits_have_distinct_samples(tmp_path):
    generate_dataset(tmp_path, small_card())
    train, test = arrays(tmp_path / "train.h5"), arrays(tmp_path / "test.h5")
    assert not np.array_equal(train["rho"][:4], test["rho"])


def test_worker_count_does_not_change_the_data(tmp_path):
    card = small_card()
    generate_dataset(tmp_path / "one", card, workers=1)
    generate_dataset(tmp_path / "two", card, workers=2)
    for split in ("train", "test"):
        one, two = arrays(tmp_path / "one" / f"{split}.h5"), arrays(tmp_path / "two" / f"{split}.h5")
        for name in one:
            np.testing.assert_array_equal(one[name], two[name])


def test_shards_are_distinct_deterministic_and_read_as_one(tmp_path):
    whole = tmp_path / "whole"
    generate_dataset(whole, small_card())
    sharded = tmp_path / "sharded"
    card = small_card(shards=3)
    for k in range(3):
        generate_dataset(sharded, card, shard=(k, 3))
    names = sorted(p.name for p in sharded.glob("train-*.h5"))
    assert names == [split_filename("train", (k, 3)) for k in range(3)]
    parts = [arrays(sharded / name)["rho"] for name in names]
    assert [len(p) for p in parts] == [13, 13, 14]
    assert not np.array_equal(parts[0][:13], parts[1][:13])
    combined, reference = arrays(sharded), arrays(whole / "train.h5")
    for name in reference:
        np.testing.assert_array_equal(combined[name], reference[name])
    again = tmp_path / "again"
    generate_dataset(again, card, shard=(1, 3))
    np.testing.assert_array_equal(arrays(again / names[1])["phi"], arrays(sharded / names[1])["phi"])


@pytest.mark.parametrize("text", ["3/2", "1/0", "-1/4", "x", "1/2/3"])
def test_bad_shard_text(text):
    with pytest.raises(ValueError, match="shard="):
        parse_shard(text)


def test_resume_after_kill_matches_uninterrupted_run(tmp_path, repo_root, monkeypatch, capsys):
    card = small_card()
    killed = tmp_path / "killed"
    script = textwrap.dedent(f"""
        import os, signal
        from pdediff.data.generate import DatasetCard, generate_dataset
        card = DatasetCard.from_json({card.to_json()!r})
        def die(info):
            if info["event"] == "block" and info["done"] >= 16:
                os.kill(os.getpid(), signal.SIGKILL)
        generate_dataset({str(killed)!r}, card, callback=die)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=repo_root, timeout=120)
    assert proc.returncode == -9
    assert not (killed / "train.h5").exists() and not (killed / "card.json").exists()
    with h5py.File(killed / "train.h5.partial") as f:
        assert f.attrs["completed"] == 16

    refused = run_cli(capsys, "--n", 17, "--count", 40, "--out", killed)
    assert refused.returncode == 2 and "--resume" in refused.stderr

    solved = []
    fast_solve = PROBLEMS["poisson"].fast_solve
    monkeypatch.setattr(PROBLEMS["poisson"], "fast_solve", lambda rho, g: solved.append(len(rho)) or fast_solve(rho, g))
    results = generate_dataset(killed, card, resume=True)
    assert results["train"].computed == 24 and sum(solved) == 24 + 4 + 4

    fresh = tmp_path / "fresh"
    generate_dataset(fresh, card)
    for split in ("train", "valid", "test"):
        resumed, reference = arrays(killed / f"{split}.h5"), arrays(fresh / f"{split}.h5")
        for name in reference:
            np.testing.assert_array_equal(resumed[name], reference[name])
        # the resumed file is rewritten as an uninterrupted run writes it: the bytes agree too
        assert (killed / f"{split}.h5").read_bytes() == (fresh / f"{split}.h5").read_bytes()
    assert not list(killed.glob("*.partial")) and not (killed / ".lock").exists()
    assert generate_dataset(killed, card, resume=True)["train"].computed == 0


def test_interrupted_run_leaves_only_the_partial_file(tmp_path):
    def interrupt(info):
        if info["event"] == "block":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_dataset(tmp_path, small_card(), callback=interrupt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.h5.partial"]
    with pytest.raises(ValueError, match="cannot resume.*seed"):
        generate_dataset(tmp_path, small_card(seed=6), resume=True)


def test_resume_refuses_other_settings(tmp_path):
    generate_dataset(tmp_path, small_card())
    with pytest.raises(ValueError, match="card.json describes a different dataset"):
        generate_dataset(tmp_path, small_card(seed=6), resume=True)


def test_existing_output_needs_overwrite(tmp_path, capsys):
    args = ("--n", 9, "--count", 5, "--out", tmp_path)
    done = run_cli(capsys, *args)
    assert done.returncode == 0
    assert done.stdout.split("\n")[:3] == [f"{s}: {c} samples in {tmp_path / f'{s}.h5'}" for s, c in
                                            (("train", 5), ("valid", 1), ("test", 1))]
    first = load_arrays(tmp_path)
    refused = run_cli(capsys, *args)
    assert refused.returncode == 2 and "exists" in refused.stderr and "--overwrite" in refused.stderr
    assert run_cli(capsys, *args, "--overwrite").returncode == 0
    again = load_arrays(tmp_path)
    assert again["phi"].shape == (5, 9, 9)
    for name in first:  # the same seed writes the same samples again
        np.testing.assert_array_equal(again[name], first[name])


def test_unwritable_output_exits_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = run_cli(capsys, "--n", 9, "--count", 5, "--out", blocker / "data")
    assert proc.returncode == 2 and "out=" in proc.stderr and "writable" in proc.stderr


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--n", 3], "n=3"),
        (["--count", 0], "count=0"),
        (["--problem", "heat"], "problem='heat'"),
        (["--source", "blobs,foo"], "source='blobs,foo'"),
        (["--boundary", "wavy"], "boundary='wavy'"),
        (["--shard", "2/2"], "shard='2/2'"),
        (["--dtype", "float16"], "dtype='float16'"),
        (["--resume", "--overwrite"], "not allowed with"),
    ],
)
def test_cli_bad_arguments_exit_2(tmp_path, capsys, args, expected):
    base = {"--n": 9, "--count": 5, "--out": tmp_path / "out"}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    argv = [str(x) for pair in base.items() for x in pair] + [a for a in args if a in ("--resume", "--overwrite")]
    proc = run_cli(capsys, *argv)
    assert proc.returncode == 2
    assert expected in proc.stderr
    assert not (tmp_path / "out" / "train.h5").exists()
