"""Robust training: bad input exits 2 before any work, run files survive kills, hostile files are refused."""

import json
import re
import shutil
import struct

import h5py
import pytest
import torch
import yaml
from safetensors.torch import save_file

import pdediff.data.checkpoint
import pdediff.tools.training
import train as train_cli
from pdediff.data.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from pdediff.learning.conditioning import Normalisation
from pdediff.learning.config import Config
from pdediff.data.generate import generate_dataset, make_card
from pdediff.learning.model import build_denoiser
from pdediff.physics.problems import get_problem
from pdediff.solver import Solver
from pdediff.tools.training import CHECKPOINT, METRICS, Trainer, check_run, export_checkpoint, train
from test_training import tiny_config

KWARGS = {"model_channels": 8, "channel_mult": [1, 2], "attention_levels": []}


def cli(capsys, *argv) -> tuple[int, str]:
    """Run train.py in-process: (exit status, stderr); a traceback would propagate and fail the test."""
    try:
        code = train_cli.main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def write_config(path, config: Config, changes: dict | None = None):
    """Write ``config`` as YAML with ``{dotted key: value}`` changes applied to its dict."""
    d = config.to_dict()
    for key, value in (changes or {}).items():
        *sections, name = key.split(".")
        target = d
        for section in sections:
            target = target[section]
        target[name] = value
    path.write_text(yaml.safe_dump(d))
    return path


def steps_logged(out) -> list[int]:
    return [json.loads(line)["step"] for line in (out / METRICS).read_text().splitlines()]


def edited_checkpoint(src, dst, **meta_changes):
    """A copy of checkpoint ``src`` at ``dst`` with some metadata replaced."""
    tensors, meta = load_checkpoint(src)
    meta.update(meta_changes)
    return save_checkpoint(dst, tensors, meta)


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    """A 10-step run (checkpoint with optimiser state) and an export of it."""
    out = tmp_path_factory.mktemp("trained") / "run"
    ckpt = train(tiny_config(tiny_dataset, steps=10), out, progress=False)
    exported = export_checkpoint(ckpt, out.parent / "exported.safetensors")
    return ckpt, exported


# ----------------------------------------------------------------------------- A, D: bad settings
@pytest.mark.parametrize("key, value, match", [
    ("train.device", "bogus", r"train.device='bogus' is not a torch device"),
    ("train.device", "meta", r"train.device='meta' is not supported"),
    ("model.sampler", "bogus", r"model.sampler='bogus' is unknown"),
    ("train.loss", "l1", r"train.loss='l1' is unknown"),
    ("train.threads", -1, r"train.threads=-1 is invalid; expected an integer >= 1"),
    ("data.max_train_samples", 0, r"data.max_train_samples=0 is invalid; expected an integer >= 1"),
    ("train.ema_decay", "0.9", r"train.ema_decay='0.9' has type str; expected a float"),
    ("train.steps", True, r"train.steps=True has type bool; expected an integer"),
    ("train.batch_size", 8.0, r"train.batch_size=8.0 has type float; expected an integer"),
    ("model.precond", 1, r"model.precond=1 has type int; expected a string"),
    ("data.train", [1], r"data.train=\[1\] has type list; expected a list of strings or a string"),
    ("train.init", False, r"train.init=False has type bool; expected a string or null"),
    ("notes", [1], r"notes=\[1\] has type list; expected a mapping"),
    ("model.network_kwargs", {**KWARGS, "model_channels": 200000},
     r"model.network_kwargs.model_channels=200000 is too large; expected values of at most 4096"),
    ("model.network_kwargs", {"model_channels": 4096, "channel_mult": [1, 2, 4, 4]},
     r"model.network_kwargs=.* give a unet of [\d,]+ parameters; expected at most"),
    ("model.network_kwargs", {**KWARGS, "channel_mult": [1] * 20},
     r"model.network_kwargs.channel_mult has 20 entries"),
    ("name", "../../x", r"name='../../x' is invalid; expected a plain run name"),
    ("name", "..", r"name='..' is invalid"),
    ("name", "a/b", r"name='a/b' is invalid"),
    ("name", "", r"name='' is invalid"),
])
def test_bad_settings_exit_2_before_any_work(tiny_dataset, tmp_path, capsys, monkeypatch, key, value, match):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pdediff.tools.training, "load_arrays", lambda *a, **k: pytest.fail("data loaded"))
    cfg = write_config(tmp_path / "c.yaml", tiny_config(tiny_dataset, steps=2), {key: value})
    code, err = cli(capsys, "--config", cfg, "--no-progress")  # default folder: runs/<name>
    assert code == 2 and re.search(match, err), err
    assert not (tmp_path / "runs").exists()


def test_run_name_cannot_leave_runs_but_out_can_be_anywhere(tiny_dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    outside = tmp_path / "outside"
    cfg = write_config(tmp_path / "c.yaml", tiny_config(tiny_dataset, steps=2), {"name": str(outside)})
    code, err = cli(capsys, "--config", cfg, "--no-progress", "--overwrite")
    assert code == 2 and "is invalid; expected a plain run name" in err and not outside.exists()
    for good in ("default64-broad", "run_1.v2"):
        Config(name=good).validate()
    # an explicit --out is the user's choice
    cfg = write_config(tmp_path / "c.yaml", tiny_config(tiny_dataset, steps=2))
    assert cli(capsys, "--config", cfg, "--no-progress", "--out", outside / "deep")[0] == 0
    assert (outside / "deep" / CHECKPOINT).is_file()


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_device_without_a_gpu_exits_2(tiny_dataset, tmp_path, capsys, monkeypatch, device):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a CPU-only build
    cfg = write_config(tmp_path / "c.yaml", tiny_config(tiny_dataset, steps=2), {"train.device": device})
    code, err = cli(capsys, "--config", cfg, "--out", tmp_path / "r", "--no-progress")
    assert code == 2 and f"train.device={device!r} is not available" in err
    assert not (tmp_path / "r").exists()


def test_network_size_is_bounded_before_allocating():
    config = Config()
    config.model.network_kwargs = {"model_channels": 200000}
    norm = Normalisation({"rho": 1.0, "g": 1.0}, 1.0, 1.0)
    with pytest.raises(ValueError, match="model.network_kwargs.model_channels=200000"):
        build_denoiser(config, get_problem("poisson"), norm)  # as a checkpoint's config is built


def test_config_types_are_checked_on_load_and_ints_become_floats():
    with pytest.raises(ValueError, match=r"train.lr='1e-3' has type str; expected a float"):
        Config.from_dict({"train": {"lr": "1e-3"}})
    with pytest.raises(ValueError, match=r"model.sigma_data=False has type bool; expected a float or null"):
        Config.from_dict({"model": {"sigma_data": False}})
    with pytest.raises(ValueError, match=r"config.train is list; expected a mapping"):
        Config.from_dict({"train": [1]})
    c = Config.from_dict({"train": {"lr": 1, "threads": None}, "data": {"train": "datasets/x"}})
    assert c.train.lr == 1.0 and isinstance(c.train.lr, float) and c.data.train == "datasets/x"
    c.train.ema_decay = "0.9"  # set in Python: validate checks types too
    with pytest.raises(ValueError, match=r"train.ema_decay='0.9' has type str"):
        c.validate()


def test_unreadable_config_files_exit_2(tmp_path, capsys):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    for path, match in [(deep, "is nested too deeply"), (binary, "is not valid YAML/JSON")]:
        code, err = cli(capsys, "--config", path)
        assert code == 2 and f"config={str(path)!r} {match}" in err, err
    nested = Config()
    doc = 1
    for _ in range(18):
        doc = [doc]
    nested.notes = {"a": doc}
    with pytest.raises(ValueError, match="notes are nested 19 levels deep; expected at most 16"):
        nested.validate()


# ----------------------------------------------------------------------------- A: --resume
def test_resume_refuses_another_network(tiny_dataset, tmp_path, capsys):
    c = tiny_config(tiny_dataset, steps=4, checkpoint_every=2)
    out = tmp_path / "run"
    assert cli(capsys, "--config", write_config(tmp_path / "c.yaml", c), "--out", out, "--steps", "2",
               "--no-progress")[0] == 0
    for changes, named in [({"model.network_kwargs": {**KWARGS, "model_channels": 16}},
                            "model.network_kwargs.model_channels=8"),
                           ({"model.network_kwargs": {**KWARGS, "attention_levels": [1]}},
                            "model.network_kwargs.attention_levels=[]"),
                           ({"model.network": "fno", "model.network_kwargs": {}}, "model.network='unet'"),
                           ({"model.precond": "x0"}, "model.precond='edm'")]:
        cfg = write_config(tmp_path / "other.yaml", c, changes)
        code, err = cli(capsys, "--config", cfg, "--out", out, "--resume", "--no-progress")
        assert code == 2 and "checkpoint=" in err and named in err, err
    assert load_checkpoint(out / CHECKPOINT)[1]["step"] == 2  # untouched
    # the same network spelt out with a default (num_blocks: 1) resumes
    cfg = write_config(tmp_path / "same.yaml", c, {"model.network_kwargs": {**KWARGS, "num_blocks": 1}})
    assert cli(capsys, "--config", cfg, "--out", out, "--resume", "--no-progress")[0] == 0
    assert load_checkpoint(out / CHECKPOINT)[1]["step"] == 4


def test_resume_from_an_exported_checkpoint_points_to_train_init(tiny_dataset, tmp_path, capsys, trained):
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(trained[1], out / CHECKPOINT)
    cfg = write_config(tmp_path / "c.yaml", tiny_config(tiny_dataset, steps=12))
    code, err = cli(capsys, "--config", cfg, "--out", out, "--resume", "--no-progress")
    assert code == 2 and "holds no optimiser state" in err and "train.init" in err


# ----------------------------------------------------------------------------- A: --export
@pytest.mark.parametrize("export, match", [
    ("missing/e.safetensors", r"folder '.*missing' does not exist"),
    ("folder.safetensors", r"is a folder"),
    ("/proc/x", r"has suffix ''; expected a .safetensors file"),
    ("/proc/x.safetensors", r"folder '/proc' is not writable"),
    ("e.pt", r"has suffix '.pt'"),
    ("run/checkpoint.safetensors", r"is the run's own checkpoint"),
])
def test_unwritable_export_exits_2_before_training(tiny_dataset, tmp_path, capsys, monkeypatch, export, match):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder.safetensors").mkdir()
    (tmp_path / "run").mkdir()
    monkeypatch.setattr(pdediff.tools.training, "load_arrays", lambda *a, **k: pytest.fail("data loaded"))
    cfg = write_config(tmp_path / "c.yaml", tiny_config(tiny_dataset, steps=2))
    code, err = cli(capsys, "--config", cfg, "--out", "run", "--export", export, "--no-progress")
    assert code == 2 and f"--export={export!r}" in err and re.search(match, err), err
    assert not list((tmp_path / "run").iterdir())


def test_export_after_training(tiny_dataset, tmp_path, capsys):
    cfg = write_config(tmp_path / "c.yaml", tiny_config(tiny_dataset, steps=2))
    code, _ = cli(capsys, "--config", cfg, "--out", tmp_path / "r", "--export", tmp_path / "e.safetensors",
                  "--half", "--no-progress")
    assert code == 0 and "optimizer" not in read_metadata(tmp_path / "e.safetensors")
    assert not list(tmp_path.glob("*.tmp"))  # the writability probe is gone
    code, err = cli(capsys, "--config", cfg, "--out", tmp_path / "r2", "--half", "--no-progress")
    assert code == 2 and "--half applies to --export" in err


# ----------------------------------------------------------------------------- B: data checked first
def _h5_without_g(src, dst):
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        del f["g"]
        f.attrs["condition_fields"] = json.dumps(["rho"])
    return dst


def test_data_problems_stop_the_run_before_step_1(tiny_dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pdediff.tools.training, "load_arrays", lambda *a, **k: pytest.fail("data loaded"))
    out = tmp_path / "run"
    other_grid = tmp_path / "n33"
    generate_dataset(other_grid, make_card("poisson", 33, 2, source="blobs", valid_count=2, test_count=0))
    cases = [
        ({"data.valid": [str(tmp_path / "nope.h5")]}, r"data.valid=.*nope.h5.* cannot be read"),
        ({"data.train": [str(tmp_path / "nope.h5")]}, r"data.train=.*nope.h5.* cannot be read"),
        ({"data.valid": str(tmp_path / "empty-folder")}, r"data.valid=.*cannot be read"),
        ({"data.valid": [str(_h5_without_g(tiny_dataset / "valid.h5", tmp_path / "no_g.h5"))]},
         r"data.valid=.*no_g.h5.* lacks field\(s\) \['g'\]"),
        ({"data.valid": [str(other_grid / "valid.h5")]}, r"data.valid=.* has N=33, but data.train has N=17"),
        ({"model.network_kwargs": {**KWARGS, "channel_mult": [1, 1, 1, 1, 1]}},
         r"data.train=.* has N=17, which model.network_kwargs cannot train on"),
    ]
    (tmp_path / "empty-folder").mkdir()
    c = tiny_config(tiny_dataset, steps=400, valid_every=200)  # the old run stopped at step 200
    for changes, match in cases:
        cfg = write_config(tmp_path / "c.yaml", c, changes)
        code, err = cli(capsys, "--config", cfg, "--out", out, "--no-progress")
        assert code == 2 and re.search(match, err), err
        assert not out.exists()
    c.data.max_train_samples = 1
    with pytest.raises(ValueError, match=r"gives 1 training sample\(s\).*expected at least one per process \(2\)"):
        check_run(c, out, world=2)


# ----------------------------------------------------------------------------- C: run files
def test_restart_after_a_kill_before_the_first_checkpoint_logs_each_step_once(tiny_dataset, tmp_path, capsys):
    cfg = write_config(tmp_path / "c.yaml", tiny_config(tiny_dataset, steps=10, checkpoint_every=100))
    for flags in (["--resume"], []):  # --resume without a checkpoint starts afresh, as a plain restart does
        out = tmp_path / f"run{len(flags)}"
        out.mkdir()
        # what a run killed at step 12 of a longer schedule left: no checkpoint, a cut last line
        (out / METRICS).write_text('{"step": 5, "loss": 9.0}\n{"step": 10, "loss": 9.0}\n{"step": 1')
        assert cli(capsys, "--config", cfg, "--out", out, "--no-progress", *flags)[0] == 0
        assert steps_logged(out) == [5, 10]
        assert all(json.loads(line)["loss"] != 9.0 for line in (out / METRICS).read_text().splitlines())


def test_resume_drops_metrics_logged_after_the_checkpoint(tiny_dataset, tmp_path, capsys):
    c = tiny_config(tiny_dataset, steps=20)
    out = tmp_path / "run"
    train(c, out, progress=False, until=10)
    with open(out / METRICS, "a") as fh:  # killed at step 17, after logging step 15
        fh.write('{"step": 15, "loss": 9.0}\n{"step": 16, "lo')
    code, _ = cli(capsys, "--config", write_config(tmp_path / "c.yaml", c), "--out", out, "--resume", "--no-progress")
    assert code == 0 and steps_logged(out) == [5, 10, 15, 20]


def test_malformed_metrics_line_is_named_with_file_and_line(tiny_dataset, tmp_path, capsys):
    c = tiny_config(tiny_dataset, steps=20)
    out = tmp_path / "run"
    train(c, out, progress=False, until=10)
    lines = (out / METRICS).read_text().splitlines()
    (out / METRICS).write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    code, err = cli(capsys, "--config", write_config(tmp_path / "c.yaml", c), "--out", out, "--resume", "--no-progress")
    assert code == 2 and re.search(r"metrics.jsonl: line 2 is not a JSON object", err), err
    (out / METRICS).write_text('{"step": 5}\n[1, 2]\n')
    code, err = cli(capsys, "--config", write_config(tmp_path / "c.yaml", c), "--out", out, "--resume", "--no-progress")
    assert code == 2 and "metrics.jsonl: line 2" in err


def test_stale_temporary_files_are_removed_at_start_and_nothing_else(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    stale = [f"{CHECKPOINT}.4242.tmp", f"{METRICS}.7.tmp", "config.yaml.99.tmp"]
    kept = ["notes.tmp", f"{CHECKPOINT}.abc.tmp", "other.safetensors.12.tmp", f"{CHECKPOINT}.12.tmp.bak"]
    for name in stale + kept:
        (out / name).write_bytes(b"partial")
    train(tiny_config(tiny_dataset, steps=2), out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == sorted([CHECKPOINT, METRICS, "config.yaml", *kept])


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_a_failed_save_leaves_no_temporary_file(tmp_path, monkeypatch, error):
    path = save_checkpoint(tmp_path / "c.safetensors", {"model.w": torch.zeros(3)}, {"step": 1})

    def fail(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"partial")
        raise error

    monkeypatch.setattr(pdediff.data.checkpoint, "save_file", fail)
    with pytest.raises(type(error)):
        save_checkpoint(path, {"model.w": torch.ones(3)}, {"step": 2})
    assert list(tmp_path.iterdir()) == [path] and read_metadata(path)["step"] == 1


# ----------------------------------------------------------------------------- D: hostile files
def _raw(header) -> bytes:
    text = header.encode() if isinstance(header, str) else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text


@pytest.mark.parametrize("depth", [100, 100_000])
def test_deeply_nested_metadata_is_refused(tmp_path, depth):
    deep = "[" * depth + "]" * depth
    doc = '{"format": "pdediff-checkpoint", "format_version": 1, "notes": ' + deep + "}"
    f = tmp_path / "deep.safetensors"
    save_file({"w": torch.zeros(1)}, str(f), metadata={"pdediff": doc})
    with pytest.raises(ValueError, match=r"deep\.safetensors.* metadata nested"):
        read_metadata(f)
    header = tmp_path / "header.safetensors"
    header.write_bytes(_raw('{"x": ' + deep + "}"))
    with pytest.raises(ValueError, match=r"header\.safetensors.* corrupt safetensors header"):
        read_metadata(header)
    odd = tmp_path / "odd.safetensors"
    odd.write_bytes(_raw({"__metadata__": [1]}))
    with pytest.raises(ValueError, match=r"odd\.safetensors.* corrupt safetensors header"):
        read_metadata(odd)


def test_resume_from_a_hostile_checkpoint_exits_2(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    deep = "[" * 100_000 + "]" * 100_000
    save_file({"w": torch.zeros(1)}, str(out / CHECKPOINT), metadata={"pdediff": deep})
    cfg = write_config(tmp_path / "c.yaml", tiny_config(tiny_dataset, steps=2))
    code, err = cli(capsys, "--config", cfg, "--out", out, "--resume", "--no-progress")
    assert code == 2 and "checkpoint.safetensors" in err and "nested" in err


GOOD = {"field_rms": {"rho": 2.0, "g": 0.5}, "solution_rms": 0.1, "sigma_data": 1.0}


@pytest.mark.parametrize("changes, match", [
    ({"field_rms": {}}, r"normalisation.field_rms=\{\} is invalid"),
    ({"field_rms": [1.0]}, r"normalisation.field_rms=\[1.0\] is invalid"),
    ({"field_rms": {"rho": "1", "g": 1.0}}, r"normalisation.field_rms.rho='1' is invalid"),
    ({"field_rms": {"rho": 0.0, "g": 1.0}}, r"normalisation.field_rms.rho=0.0 is invalid"),
    ({"solution_rms": "nan"}, r"normalisation.solution_rms='nan' is invalid; expected a finite number > 0"),
    ({"solution_rms": float("nan")}, r"normalisation.solution_rms=nan is invalid"),
    ({"sigma_data": float("inf")}, r"normalisation.sigma_data=inf is invalid"),
    ({"sigma_data": -1.0}, r"normalisation.sigma_data=-1.0 is invalid"),
    ({"sigma_data": True}, r"normalisation.sigma_data=True is invalid"),
    ({"sigma_data": None}, r"normalisation.sigma_data=None is invalid"),
])
def test_normalisation_from_dict_checks_every_value(changes, match):
    with pytest.raises(ValueError, match=match):
        Normalisation.from_dict({**GOOD, **changes})
    with pytest.raises(ValueError, match=r"normalisation lacks \['sigma_data'\]"):
        Normalisation.from_dict({k: v for k, v in GOOD.items() if k != "sigma_data"})
    with pytest.raises(ValueError, match=r"normalisation=\[\] is invalid"):
        Normalisation.from_dict([])
    assert Normalisation.from_dict(GOOD).validate(get_problem("poisson")).to_dict() == GOOD


def test_normalisation_validate_names_missing_condition_fields():
    norm = Normalisation.from_dict({**GOOD, "field_rms": {"rho": 1.0}})
    with pytest.raises(ValueError, match=r"normalisation.field_rms=\{'rho': 1.0\} lacks \['g'\]"):
        norm.validate(get_problem("poisson"))


@pytest.mark.parametrize("norm, match", [
    ({**GOOD, "field_rms": {}}, r"normalisation.field_rms=\{\} is invalid"),
    ({**GOOD, "solution_rms": "nan"}, r"normalisation.solution_rms='nan' is invalid"),
    ({**GOOD, "field_rms": {"rho": 1.0}}, r"lacks \['g'\]"),
])
def test_hostile_normalisation_in_a_checkpoint(tiny_dataset, tmp_path, capsys, trained, norm, match):
    out = tmp_path / "run"
    edited_checkpoint(trained[0], out / CHECKPOINT, normalisation=norm)
    cfg = write_config(tmp_path / "c.yaml", tiny_config(tiny_dataset, steps=12))
    code, err = cli(capsys, "--config", cfg, "--out", out, "--resume", "--no-progress")
    assert code == 2 and "checkpoint=" in err and re.search(match, err), err
    edited = edited_checkpoint(trained[1], tmp_path / "e.safetensors", normalisation=norm)
    c = tiny_config(tiny_dataset, steps=2, init=str(edited))
    with pytest.raises(ValueError, match=r"train.init=.*" + match):
        Trainer(c, tmp_path / "tuned", progress=False)
    if norm["field_rms"] != {"rho": 1.0}:  # from_dict refuses these wherever they are read
        with pytest.raises(ValueError, match=match):
            Solver.from_checkpoint(edited)
