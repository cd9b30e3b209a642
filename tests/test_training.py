"""Training: the loss falls, checkpoints round-trip bit for bit, resume is exact, DDP stays in sync."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pdediff.data.checkpoint import group, load_checkpoint
from pdediff.learning.conditioning import fit_normalisation
from pdediff.learning.config import Config
from pdediff.data import load_arrays
from pdediff.data.generate import generate_dataset, make_card
from pdediff.solver import Solver
from pdediff.tools.training import Trainer, export_checkpoint, train


def tiny_config(dataset, steps=20, **train_kw) -> Config:
    c = Config(name="t")
    c.data.train = [str(dataset / "train.h5")]
    c.data.valid = [str(dataset / "valid.h5")]
    c.model.network_kwargs = {"model_channels": 8, "channel_mult": [1, 2], "attention_levels": []}
    c.train.steps = steps
    c.train.batch_size = 8
    c.train.warmup_steps = 5
    c.train.log_every = 5
    c.train.valid_every = 0
    c.train.valid_samples = 4
    c.train.checkpoint_every = 10
    c.train.threads = 1
    for k, v in train_kw.items():
        setattr(c.train, k, v)
    return c


def _fixed_batch_loss(trainer: Trainer) -> float:
    gen = torch.Generator().manual_seed(123)
    x0, cond = trainer._batch()
    with torch.no_grad():
        return float(trainer.loss_fn(trainer.model, x0, cond, generator=gen).mean())


def loss_before_and_after_training(trainer: Trainer) -> tuple[float, float]:
    """The mean loss on the same three batches before and after ``trainer.run()``."""
    trainer.index_gen.manual_seed(7)
    before = np.mean([_fixed_batch_loss(trainer) for _ in range(3)])
    trainer.index_gen.manual_seed(0)
    trainer.run()
    trainer.index_gen.manual_seed(7)
    after = np.mean([_fixed_batch_loss(trainer) for _ in range(3)])
    return before, after


def test_tiny_model_lowers_the_loss(tiny_dataset, tmp_path):
    c = tiny_config(tiny_dataset, steps=150, lr=3e-3, batch_size=16)
    before, after = loss_before_and_after_training(Trainer(c, tmp_path / "run", progress=False))
    assert after < 0.5 * before, (before, after)


@pytest.mark.parametrize("loss", ["vp", "subvp", "ve"])
def test_song_sde_losses_train_through_the_same_denoiser(tiny_dataset, tmp_path, loss):
    c = tiny_config(tiny_dataset, steps=3, loss=loss)
    trainer = Trainer(c, tmp_path / loss, progress=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    assert np.isfinite(_fixed_batch_loss(trainer))
    trainer.run()
    after = trainer.model.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values())
    assert [k for k in before if not torch.equal(before[k], after[k])]  # the loss's gradients reached the weights
    meta = load_checkpoint(tmp_path / loss / "checkpoint.safetensors")[1]
    assert trainer.step == meta["step"] == 3 and meta["config"]["train"]["loss"] == loss


def test_unknown_loss_is_named(tiny_dataset, tmp_path):
    with pytest.raises(ValueError, match="train.loss='l1'"):
        Trainer(tiny_config(tiny_dataset, loss="l1"), tmp_path / "x", progress=False)


def test_checkpoint_round_trip_and_exact_resume(tiny_dataset, tmp_path):
    c = tiny_config(tiny_dataset, steps=20)
    full = train(c, tmp_path / "full", progress=False)
    train(c, tmp_path / "half", progress=False, until=10)  # as if killed after step 10
    resumed = train(c, tmp_path / "half", resume=True, progress=False)
    a, meta_a = load_checkpoint(full)
    b, meta_b = load_checkpoint(resumed)
    assert meta_a["step"] == meta_b["step"] == 20
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k

    # the checkpoint holds the run's config, normalisation and dataset card, and the solver
    # rebuilt from it reproduces the in-memory EMA model bit for bit
    trainer = Trainer(c, tmp_path / "full", resume=True, progress=False)
    assert trainer.step == 20
    for k, v in trainer.ema.state_dict().items():
        assert torch.equal(v, group(a, "ema")[k])
    assert meta_a["card"]["n"] == 17 and Config.from_dict(meta_a["config"]) == c
    solver = Solver.from_checkpoint(full)
    x = torch.randn(2, 1, 17, 17)
    cond = torch.randn(2, 3, 17, 17)
    sigma = torch.tensor([0.5, 3.0])
    # the solver holds the EMA weights exactly; it runs them channels-last, which reorders the
    # convolutions' sums (round-off apart)
    for k, v in solver.denoiser.state_dict().items():
        assert torch.equal(v, trainer.ema.state_dict()[k]), k
    with torch.no_grad():
        torch.testing.assert_close(solver.denoiser(x, sigma, cond), trainer.ema(x, sigma, cond), rtol=1e-5, atol=1e-5)


def test_init_fine_tunes_from_a_checkpoint_and_refuses_another_network(tiny_dataset, tmp_path):
    base = train(tiny_config(tiny_dataset, steps=10), tmp_path / "base", progress=False)
    tensors, meta = load_checkpoint(base)
    c = tiny_config(tiny_dataset, steps=10, init=str(base), lr=1e-3)
    tuned = Trainer(c, tmp_path / "tuned", progress=False)
    # starts from the base run's EMA weights and normalisation, with a fresh step count
    assert tuned.step == 0 and tuned.norm.to_dict() == meta["normalisation"]
    for k, v in tuned.model.state_dict().items():
        assert torch.equal(v, group(tensors, "ema")[k]), k
    for k, v in tuned.ema.state_dict().items():
        assert torch.equal(v, group(tensors, "ema")[k]), k
    # an exported (EMA-only) checkpoint, such as the shipped model, works as well
    exported = export_checkpoint(base, tmp_path / "exported.safetensors")
    again = Trainer(tiny_config(tiny_dataset, init=str(exported)), tmp_path / "again", progress=False)
    for k, v in again.model.state_dict().items():
        assert torch.equal(v, group(tensors, "ema")[k]), k
    tuned.run()
    moved = [k for k, v in tuned.model.state_dict().items() if not torch.equal(v, group(tensors, "ema")[k])]
    assert moved  # and it trains

    other = tiny_config(tiny_dataset, init=str(base))
    other.model.network_kwargs = {**other.model.network_kwargs, "model_channels": 16}
    with pytest.raises(ValueError, match=r"train.init=.*model.network_kwargs"):
        Trainer(other, tmp_path / "other", progress=False)
    with pytest.raises(ValueError, match="train.init="):
        Trainer(tiny_config(tiny_dataset, init=str(tmp_path / "missing.safetensors")), tmp_path / "m",
                progress=False)


def test_train_cli_refuses_to_overwrite_and_bad_configs(tiny_dataset, tmp_path, monkeypatch, capsys):
    import train as train_cli

    c = tiny_config(tiny_dataset, steps=2)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(c.to_yaml())
    monkeypatch.chdir(tmp_path)

    def run(*argv):
        """train.py's ``main`` in this process: (exit status, stdout, stderr)."""
        try:
            code = train_cli.main(list(argv))
        except SystemExit as exc:  # argparse's exit(): status 2 with a message
            code = exc.code
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, err = run("--config", str(cfg), "--out", "r", "--no-progress")
    assert code == 0, err
    ckpt = tmp_path / "r" / "checkpoint.safetensors"
    assert out.splitlines()[-1] == f"checkpoint: {Path('r') / 'checkpoint.safetensors'}"
    assert load_checkpoint(ckpt)[1]["step"] == 2
    written = ckpt.read_bytes()
    code, _, err = run("--config", str(cfg), "--out", "r", "--no-progress")
    assert code == 2 and "--resume or --overwrite" in err
    assert ckpt.read_bytes() == written  # refused before touching the run
    code, _, err = run("--config", "nope.yaml")
    assert code == 2 and "nope.yaml" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {network: resnet}\n" + "data: {train: [%s]}\n" % c.data.train[0])
    code, _, err = run("--config", str(bad), "--out", "b", "--no-progress")
    assert code == 2 and "resnet" in err and not (tmp_path / "b").exists()


@pytest.mark.slow  # two torchrun processes: about 20 s on two cores
def test_ddp_two_cpu_processes_stay_in_sync(tiny_dataset, tmp_path, repo_root):
    c = tiny_config(tiny_dataset, steps=6, checkpoint_every=3)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(c.to_yaml())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with socket.socket() as sock:  # a free port, so that parallel or repeated runs do not collide
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port),
           str(repo_root / "train.py"), "--config", str(cfg), "--out", str(tmp_path / "ddp"), "--no-progress"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-3000:])
    tensors, meta = load_checkpoint(tmp_path / "ddp" / "checkpoint.safetensors")
    assert meta["run"]["world_size"] == 2 and meta["run"]["ranks_in_sync"] is True
    assert {"rng.index.0", "rng.index.1"} <= set(tensors)
    assert not torch.equal(tensors["rng.index.0"], tensors["rng.index.1"])  # ranks draw different batches


def test_init_from_another_problem_takes_the_weights_and_fits_its_own_normalisation(tiny_dataset, tmp_path):
    """Poisson's channels (rho: source, g: Dirichlet) mean what Helmholtz's (f, g) mean, so a
    Poisson model is a starting point for Helmholtz; its statistics are not (other data)."""
    base = train(tiny_config(tiny_dataset, steps=4), tmp_path / "base", progress=False)
    tensors, meta = load_checkpoint(base)
    helm = tmp_path / "helm17"
    generate_dataset(helm, make_card("helmholtz", 17, 24, source="mixture", boundary="smooth", params={"k": 3.0},
                                     seed=5, valid_count=4, test_count=4))
    c = tiny_config(helm, steps=2, init=str(base))
    c.data.problem, c.data.params = "helmholtz", {"k": 3.0}
    tuned = Trainer(c, tmp_path / "tuned", progress=False)
    fresh = fit_normalisation(c.data.make_problem(), load_arrays(c.data.train, limit=c.data.stats_samples))
    assert tuned.norm == fresh and sorted(tuned.norm.field_rms) == ["f", "g"]
    assert tuned.norm.to_dict() != meta["normalisation"]
    assert float(tuned.model.sigma_data) == pytest.approx(fresh.sigma_data)
    ema = group(tensors, "ema")
    for k, v in tuned.model.state_dict().items():
        if k != "sigma_data":
            assert torch.equal(v, ema[k]), k
    tuned.run()  # and it trains

    # Darcy has a coefficient channel first: Poisson's weights would read it as a source
    darcy = tmp_path / "darcy17"
    generate_dataset(darcy, make_card("darcy", 17, 24, seed=6, valid_count=4, test_count=4))
    d = tiny_config(darcy, init=str(base))
    d.data.problem = "darcy"
    with pytest.raises(ValueError, match=r"train.init=.*roles \['source', 'dirichlet'\].*'coefficient'"):
        Trainer(d, tmp_path / "d", progress=False)


def test_init_with_refit_normalisation_keeps_the_weights_and_fits_this_data(tiny_dataset, tmp_path):
    base = train(tiny_config(tiny_dataset, steps=2), tmp_path / "base", progress=False)
    tensors, meta = load_checkpoint(base)
    other = tmp_path / "other17"  # the same problem, data of another scale
    generate_dataset(other, make_card("poisson", 17, 24, source="rough", boundary="zero", seed=9,
                                      valid_count=4, test_count=4))
    c = tiny_config(other, steps=2, init=str(base), refit_normalisation=True)
    tuned = Trainer(c, tmp_path / "tuned", progress=False)
    fresh = fit_normalisation(c.data.make_problem(), load_arrays(c.data.train, limit=c.data.stats_samples))
    assert tuned.norm == fresh and tuned.norm.to_dict() != meta["normalisation"]
    ema = group(tensors, "ema")
    assert all(torch.equal(v, ema[k]) for k, v in tuned.model.state_dict().items() if k != "sigma_data")
    assert float(tuned.model.sigma_data) == pytest.approx(fresh.sigma_data)
