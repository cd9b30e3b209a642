"""Robust I/O (issue 10): the output lock of generate_data.py, Ctrl-C with worker processes, and
exit status 2 with a message naming the argument or file for bad paths, files and readers."""

import fcntl
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import generate_data
import pdediff
import pdediff.data.generate
import solve
from pdediff.data import PDEDataset, ShardReader, inspect_file, load_arrays, open_dataset, read_card
from pdediff.data.generate import generate_dataset, make_card, output_lock
from pdediff.physics.problems import PROBLEMS

SMALL = ["--n", "9", "--count", "5", "--quiet"]
needs_proc = pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")


def run_main(main, argv, capsys):
    """Call a CLI's ``main(argv)``; return ``(exit status, last line of stderr)``."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    except KeyboardInterrupt:  # not pytest's to catch: it would end the session
        pytest.fail("KeyboardInterrupt escaped main")
    err = capsys.readouterr().err.strip()
    return code, err.splitlines()[-1] if err else ""


def wait_for(condition, what, timeout=60.0, proc=None):
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"process exited with {proc.returncode} while waiting for {what}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def same_files(a: Path, b: Path, names=("train.h5", "valid.h5", "test.h5", "card.json")):
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


# ---------------------------------------------------------------------------- the output lock
def test_a_live_writer_is_never_touched(tmp_path, capsys):
    """Another process's lock on OUT/.lock refuses every mode, --overwrite included, before
    anything in OUT is opened or deleted; the message names the lock and the writer's pid."""
    out = tmp_path / "d"
    out.mkdir()
    partial = out / "train.h5.partial"
    partial.write_bytes(b"the live writer's half-written file")
    fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, b"4242\n")
        for mode in (["--overwrite"], ["--resume"], []):
            code, err = run_main(generate_data.main, [*SMALL, "--out", out, *mode], capsys)
            assert code == 2, mode
            assert "pid 4242" in err and ".lock" in err and "--overwrite" not in err, err
            assert partial.read_bytes() == b"the live writer's half-written file"
            assert sorted(p.name for p in out.iterdir()) == [".lock", "train.h5.partial"]
    finally:
        os.close(fd)
    # the lock alone refused it: released, the same command replaces the partial file
    assert run_main(generate_data.main, [*SMALL, "--out", out, "--overwrite"], capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["card.json", "test.h5", "train.h5", "valid.h5"]
    assert load_arrays(out)["phi"].shape == (5, 9, 9)


def test_lock_is_per_shard_and_not_inherited(tmp_path):
    card = make_card("poisson", 9, 6, valid_count=0, test_count=0, shards=2)
    with output_lock(tmp_path, (0, 2)) as lock:
        assert lock.read_text() == f"{os.getpid()}\n"
        with pytest.raises(ValueError, match=rf"out=.* another .*pid {os.getpid()}"):
            generate_dataset(tmp_path, card, shard=(0, 2))
        generate_dataset(tmp_path, card, shard=(1, 2))  # another shard: runs alongside
        if Path("/proc/self/fd").is_dir():  # a forked worker must not keep the lock alive
            ctx = multiprocessing.get_context("fork")
            queue = ctx.SimpleQueue()
            child = ctx.Process(target=_report_open_files, args=(queue,))
            child.start()
            child.join(30)
            assert child.exitcode == 0
            assert str(lock) not in queue.get()
    assert not lock.exists()
    assert not (tmp_path / "train-00000-of-00002.h5").exists()
    assert (tmp_path / "train-00001-of-00002.h5").exists()


def _report_open_files(queue):
    fds = Path("/proc/self/fd")
    queue.put([os.path.realpath(fds / name) for name in os.listdir(fds)])


GATED_RUN = textwrap.dedent("""
    import pathlib, sys, time
    import generate_data, pdediff.data.generate as g
    go, waiting = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    compute, calls = g.compute_block, []
    def gated(block):  # after the first block is written, wait until the test says go
        calls.append(block)
        if len(calls) == 2:
            waiting.touch()
            while not go.exists():
                time.sleep(0.02)
        return compute(block)
    g.compute_block = gated
    sys.exit(generate_data.main(sys.argv[3:]))
""")


def test_concurrent_overwrite_is_refused_and_the_first_run_completes(tmp_path, repo_root, capsys):
    """Two real processes: a second generate_data.py --overwrite while the first is writing."""
    out, go, waiting = tmp_path / "d", tmp_path / "go", tmp_path / "waiting"
    args = ["--n", "17", "--count", "600", "--valid-count", "0", "--test-count", "0", "--quiet", "--out", str(out)]
    first = subprocess.Popen([sys.executable, "-c", GATED_RUN, str(go), str(waiting), *args], cwd=repo_root,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(waiting.exists, "the first run's first block", proc=first)
        partial = out / "train.h5.partial"
        before = partial.read_bytes()
        assert (out / ".lock").read_text().strip() == str(first.pid)
        second = subprocess.run([sys.executable, str(repo_root / "generate_data.py"), *args, "--overwrite"],
                                cwd=repo_root, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert f"pid {first.pid}" in second.stderr and "Traceback" not in second.stderr
        assert partial.read_bytes() == before
    finally:
        go.touch()
        first.wait(120)
    assert first.returncode == 0, first.stderr.read()
    assert sorted(p.name for p in out.iterdir()) == ["card.json", "train.h5"]
    reference = tmp_path / "reference"
    assert run_main(generate_data.main, [*args[:-1], reference], capsys)[0] == 0
    same_files(out, reference, ("train.h5", "card.json"))


# ---------------------------------------------------------------------------- Ctrl-C
def test_sigint_stops_the_cli_and_resume_is_byte_identical(tmp_path, monkeypatch, capsys):
    """A real SIGINT to this process in the middle of a run (workers 1, in-process).

    A launcher that ignores SIGINT (background jobs, nohup, some CI runners) hands it to the
    suite ignored; the test sets Python's own handler, as an interactive start has it, and puts
    the launcher's back afterwards."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _sigint_run(tmp_path, monkeypatch, capsys)
    finally:
        signal.signal(signal.SIGINT, previous)


def _sigint_run(tmp_path, monkeypatch, capsys):
    args = ["--n", "17", "--count", "600", "--valid-count", "3", "--test-count", "3", "--quiet"]
    compute, calls = pdediff.data.generate.compute_block, []

    def interrupted(block):
        calls.append(block)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return compute(block)

    monkeypatch.setattr(pdediff.data.generate, "compute_block", interrupted)
    code, err = run_main(generate_data.main, [*args, "--out", tmp_path / "d"], capsys)
    assert code == 130 and "interrupted" in err and "--resume" in err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["train.h5.partial"]
    with h5py.File(tmp_path / "d" / "train.h5.partial") as f:
        assert 0 < f.attrs["completed"] < 600
    monkeypatch.setattr(pdediff.data.generate, "compute_block", compute)
    assert run_main(generate_data.main, [*args, "--out", tmp_path / "d", "--resume"], capsys)[0] == 0
    assert run_main(generate_data.main, [*args, "--out", tmp_path / "ref"], capsys)[0] == 0
    same_files(tmp_path / "d", tmp_path / "ref")


def test_interrupt_with_workers_stops_the_pool(tmp_path):
    card = make_card("poisson", 17, 600, valid_count=3, test_count=3)

    def interrupt(info):
        if info["event"] == "block":
            raise KeyboardInterrupt

    before, started = set(multiprocessing.active_children()), time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(tmp_path / "d", card, workers=2, callback=interrupt)
    assert time.monotonic() - started < 60
    assert set(multiprocessing.active_children()) <= before  # the pool's workers are gone
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["train.h5.partial"]
    generate_dataset(tmp_path / "d", card, workers=2, resume=True)
    generate_dataset(tmp_path / "ref", card)
    same_files(tmp_path / "d", tmp_path / "ref")


def _sigint_as_a_terminal_has_it():
    """In the child before exec: SIGINT at its default, so that Python installs its
    KeyboardInterrupt handler even when this suite was launched with SIGINT ignored (nohup,
    background jobs, some CI runners), which a child would otherwise inherit."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_ctrl_c_with_workers_exits_and_resumes_byte_identically(tmp_path, repo_root, capsys):
    """Ctrl-C as a terminal sends it: SIGINT to the whole process group, workers included."""
    out = tmp_path / "d"
    args = ["--n", "65", "--count", "3000", "--valid-count", "30", "--test-count", "30", "--quiet", "--workers", "2"]
    proc = subprocess.Popen([sys.executable, str(repo_root / "generate_data.py"), *args, "--out", str(out)],
                            cwd=repo_root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=_sigint_as_a_terminal_has_it)
    partial = out / "train.h5.partial"
    try:
        wait_for(lambda: partial.exists() and partial.stat().st_size > 100_000, "the first block", proc=proc)
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    err = proc.stderr.read()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err, err
    assert sorted(p.name for p in out.iterdir()) == ["train.h5.partial"]
    assert run_main(generate_data.main, [*args, "--out", out, "--resume"], capsys)[0] == 0
    assert run_main(generate_data.main, [*args[:-2], "--out", tmp_path / "ref"], capsys)[0] == 0
    same_files(out, tmp_path / "ref")


# ---------------------------------------------------------------------------- CLI paths and files
@needs_proc
def test_generate_out_that_cannot_be_a_folder_exits_2(tmp_path, capsys):
    regular = tmp_path / "file"
    regular.write_text("not a folder")
    for out in (regular, "/proc/pdediff-x"):
        code, err = run_main(generate_data.main, [*SMALL, "--out", out], capsys)
        assert code == 2 and f"out={str(out)!r}" in err and "writable folder" in err, err
    assert regular.read_text() == "not a folder"


@pytest.fixture
def solve_cli(tmp_path, monkeypatch, capsys):
    """solve.main in tmp_path with a stand-in solver: only its problem is used before the output."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pdediff, "load_solver", lambda *a, **k: types.SimpleNamespace(problem=PROBLEMS["poisson"]))
    np.save(tmp_path / "rho.npy", np.zeros((2, 17, 17)))
    return lambda *argv: run_main(solve.main, argv, capsys)


def _no_loading(*args, **kwargs):
    raise AssertionError("the model must not be loaded for a refused output or device")


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--out", "dir.npy"], "--out='dir.npy' is a folder; expected a file path"),
        pytest.param(["--out", "/proc/pdediff-x.npy"], "--out='/proc/pdediff-x.npy': folder '/proc' is not writable",
                     marks=needs_proc),
        (["--out", "adir"], "--out='adir' has suffix ''"),
        (["--out", "o.npy", "--device", "gpu"], "--device='gpu' is not a torch device"),
        pytest.param(["--out", "o.npy", "--device", "cuda"], "--device='cuda' is not available",
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")),
    ],
)
def test_solve_refuses_outputs_and_devices_before_loading(solve_cli, monkeypatch, tmp_path, argv, expected):
    (tmp_path / "dir.npy").mkdir()
    (tmp_path / "adir").mkdir()
    monkeypatch.setattr(pdediff, "load_solver", _no_loading)
    code, err = solve_cli("--rho", "rho.npy", *argv)
    assert code == 2 and expected in err, err


def _write_inputs(folder: Path):
    rng = np.random.default_rng(0)
    np.savez(folder / "empty.npz")
    with h5py.File(folder / "g.h5", "w") as f:
        f.create_group("grp").create_dataset("rho", data=np.zeros((17, 17)))
    for name in ("rand.npy", "rand.npz", "rand.h5"):
        (folder / name).write_bytes(rng.bytes(4096))
    np.save(folder / "cut.npy", np.zeros((2, 17, 17)))
    (folder / "cut.npy").write_bytes((folder / "cut.npy").read_bytes()[:1000])
    pickled = folder / "objects.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("g.h5:grp", "'g.h5:grp': 'grp' is an HDF5 group, not a dataset"),
        ("empty.npz", "'empty.npz' is an empty .npz archive; expected at least one array"),
        ("rand.npy", "'rand.npy' is not a .npy file"),
        ("rand.npz", "'rand.npz' is not a .npz file"),
        ("rand.h5", "'rand.h5' could not be read as an HDF5 file"),
        ("cut.npy", "'cut.npy' could not be read as a .npy array"),
        ("objects.npy", "'objects.npy' could not be read as a .npy array"),
    ],
)
def test_solve_bad_input_files_exit_2_naming_the_file(solve_cli, tmp_path, spec, expected):
    _write_inputs(tmp_path)
    code, err = solve_cli("--rho", spec, "--out", "o.npy")
    assert code == 2 and err.startswith("solve.py: error: ") and expected in err, err
    assert not (tmp_path / "o.npy").exists()


@needs_proc
def test_solve_write_failure_exits_2(solve_cli, monkeypatch, tmp_path):
    """A write that fails after the checks (here: the folder turns read-only) is an exit 2 too."""
    import pdediff.tools.cli

    monkeypatch.setattr(pdediff.tools.cli, "check_writable", lambda *args: None)
    info = types.SimpleNamespace(nfe=0, seconds=0.0)
    solver = types.SimpleNamespace(problem=PROBLEMS["poisson"], solve=lambda **kw: (np.zeros((2, 17, 17)), info))
    monkeypatch.setattr(pdediff, "load_solver", lambda *a, **k: solver)
    code, err = solve_cli("--rho", "rho.npy", "--out", "/proc/pdediff-x.npy")
    assert code == 2 and "--out='/proc/pdediff-x.npy' could not be written" in err, err


# ---------------------------------------------------------------------------- readers
@pytest.mark.parametrize("reader", [open_dataset, load_arrays, PDEDataset, read_card, ShardReader])
@pytest.mark.parametrize("value", [42, None, b"train.h5", 1.5])
def test_readers_refuse_non_paths(reader, value):
    with pytest.raises(ValueError, match=r"path_or_paths=.* expected a dataset folder, a file"):
        reader(value)


def test_readers_refuse_a_list_holding_a_non_path(tiny_dataset):
    with pytest.raises(ValueError, match=r"path_or_paths=\[.*\] holds 42, not a path"):
        open_dataset([tiny_dataset / "train.h5", 42])


def _external_link(f):
    del f["phi"]
    f["phi"] = h5py.ExternalLink("missing.h5", "/phi")


def _dangling_link(f):
    del f["phi"]
    f["phi"] = h5py.SoftLink("/nowhere")


def _fields_not_text(f):
    f.attrs["condition_fields"] = 5


def _fields_not_json(f):
    f.attrs["condition_fields"] = "rho, g"


@pytest.mark.parametrize("damage", [_external_link, _dangling_link, _fields_not_text, _fields_not_json])
def test_damaged_files_raise_value_error_naming_the_file(tiny_dataset, tmp_path, damage):
    """h5py raises KeyError, the JSON reader TypeError or ValueError: all become one clear error."""
    broken = tmp_path / "broken.h5"
    shutil.copy(tiny_dataset / "test.h5", broken)
    with h5py.File(broken, "r+") as f:
        damage(f)
    with pytest.raises(ValueError, match=f"^{re.escape(str(broken))}: not a readable pdediff dataset"):
        inspect_file(broken)
    with pytest.raises(ValueError, match=f"^{re.escape(str(broken))}: "):
        load_arrays(broken)
