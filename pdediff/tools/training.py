"""Denoising score matching training with EMA, warm-up, clipping, validation and exact resume.

``train(config, out_dir)`` runs unchanged on one process or under ``torchrun`` (DDP: gloo on the
CPU, nccl on GPUs); each rank reads its own share of the training data. Everything that the
next step depends on (weights, EMA, optimiser moments, random generator states, step) goes into
the checkpoint, so ``resume=True`` continues bit for bit where the run stopped.
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import re
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from pdediff import __version__
from pdediff.physics import metrics
from pdediff.data.atomic import write_text
from pdediff.data.checkpoint import group, load_checkpoint, prefixed, read_metadata, save_checkpoint
from pdediff.learning.conditioning import (Normalisation, encode, encode_solution, fit_joint_normalisation, fit_normalisation,
                                  joint_encode, observation_channels, random_observations)
from pdediff.learning.config import Config
from pdediff.data import ShardReader, load_arrays, read_card
from pdediff.learning.losses import LOSSES
from pdediff.learning.model import build_denoiser, check_network, load_denoiser
from pdediff.maths.samplers import SAMPLERS
from pdediff.maths.sdes import SDES
from pdediff.solver import Solver

CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.jsonl"
#: Temporary files of the run folder's atomic writes (``<name>.<pid>.tmp``, pdediff.data.atomic):
#: any found when a run starts were left by a killed process.
STALE_TMP = re.compile(rf"(?:{re.escape(CHECKPOINT)}|{re.escape(METRICS)}|config\.yaml)\.\d+\.tmp")


# ----------------------------------------------------------------------------- helpers
def _distributed() -> tuple[int, int]:
    """(rank, world size); initialises the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def resolve_device(name: str) -> torch.device:
    """``train.device`` as a torch device; ``auto`` is this process's GPU when there is one, else the CPU.

    Raises:
        ValueError: ``name`` is not a device, or names one that this machine or torch build lacks.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"train.device={name!r} is not a torch device; expected 'auto', 'cpu', 'cuda' or "
                         "'cuda:K'") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA support" if torch.version.cuda is None else "no GPU is visible"
            raise ValueError(f"train.device={name!r} is not available: {why}; expected 'auto' or 'cpu'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"train.device={name!r} is not available: {torch.cuda.device_count()} GPU(s) "
                             f"are visible; expected an index below that")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"train.device={name!r} is not available on this machine; expected 'auto' or 'cpu'")
    elif device.type != "cpu":
        raise ValueError(f"train.device={name!r} is not supported; expected 'auto', 'cpu', 'cuda' or 'cuda:K'")
    return device


def hardware() -> dict:
    """A short description of the machine, recorded with each run."""
    info = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def learning_rate(config: Config, step: int) -> float:
    """Linear warm-up to ``lr``, then cosine decay to 5 % of it (or constant)."""
    t = config.train
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    if t.lr_decay == "constant":
        return t.lr
    frac = (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps)
    return t.lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac))))


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Split an optimiser's state into tensors (for safetensors) and JSON."""
    sd = opt.state_dict()
    tensors = {}
    for i, state in sd["state"].items():
        for k, v in state.items():
            tensors[f"{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return tensors, {"param_groups": sd["param_groups"]}


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        i, k = key.split(".", 1)
        state.setdefault(int(i), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _checksum(module: torch.nn.Module) -> float:
    return float(sum(p.detach().double().sum() for p in module.parameters()))


def build_loss(config: Config, sigma_data: float):
    """``train.loss``: ``edm`` (log-normal sigma, EDM weighting) or an SDE name of
    :data:`pdediff.maths.sdes.SDES` (``ve``, ``vp``, ``subvp``: t ~ U[eps, T] through its marginals,
    Song et al.'s lambda(t) = std^2 weighting), all through the same denoiser."""
    t = config.train
    if t.loss == "edm":
        return LOSSES["edm"](P_mean=t.P_mean, P_std=t.P_std, sigma_data=sigma_data, precond=config.model.precond,
                               relative_floor=t.relative_floor)
    if t.loss in SDES:
        return LOSSES["sde"](SDES[t.loss](), weighting="sigma2")
    raise ValueError(f"train.loss={t.loss!r} is unknown; expected 'edm' or one of {sorted(SDES)}")


def _init_state(config: Config, path) -> tuple[dict, Normalisation | None]:
    """Weights (EMA, else raw) and normalisation of checkpoint ``path`` to fine-tune from; the
    normalisation is None (to be fitted on this run's data) for another problem or with
    ``train.refit_normalisation``, and the weights then leave out its ``sigma_data`` buffer."""
    try:
        source = load_denoiser(path)  # validates the file, its metadata and weights
    except ValueError as exc:
        raise ValueError(f"train.init={str(path)!r} cannot be used: {exc}") from None
    mine, theirs = config.model, source.config.model
    for key in ("network", "network_kwargs", "precond", "joint"):
        if getattr(mine, key) != getattr(theirs, key):
            raise ValueError(f"train.init={str(path)!r} has model.{key}={getattr(theirs, key)!r}, but this "
                             f"config has {getattr(mine, key)!r}; expected the same network to fine-tune")
    if (mine.cond_dropout > 0) != (theirs.cond_dropout > 0):
        raise ValueError(f"train.init={str(path)!r} has model.cond_dropout={theirs.cond_dropout!r} and this config "
                         f"{mine.cond_dropout!r}: one network has the null condition's flag channel and the other "
                         "not; expected both zero or both positive")
    weights = source.denoiser.state_dict()
    if mine.operator_input != theirs.operator_input:
        if theirs.operator_input:
            raise ValueError(f"train.init={str(path)!r} takes the operator guess as an input and this config does "
                             "not (model.operator_input); expected a model without it")
        weights = _add_operator_input(weights, config, source.problem)
    if mine.observe and not theirs.observe:
        weights = _add_observation_inputs(weights, config, source.problem)
    elif mine.observe != theirs.observe:
        raise ValueError(f"train.init={str(path)!r} takes observations as inputs and this config does not "
                         "(model.observe); expected a model without them")
    if source.config.data.problem == config.data.problem:
        if not config.train.refit_normalisation:
            return weights, source.norm
        return {k: v for k, v in weights.items() if k != "sigma_data"}, None
    # Another problem: its weights are a starting point when every channel means the same kind of
    # field (a source then Dirichlet data, in both). Its statistics describe other data, so the
    # normalisation (and sigma_data, a buffer) is fitted afresh on this run's data.
    mine, theirs = config.data.make_problem(), source.problem
    mine_roles = [mine.field(n).role for n in mine.condition_fields]
    theirs_roles = [theirs.field(n).role for n in theirs.condition_fields]
    if mine_roles != theirs_roles:
        raise ValueError(f"train.init={str(path)!r} solves {source.config.data.problem!r} with condition "
                         f"fields of roles {theirs_roles}, but data.problem={config.data.problem!r} has "
                         f"{mine_roles}; expected the same roles in the same order to start from its weights")
    return {k: v for k, v in weights.items() if k != "sigma_data"}, None


def _add_observation_inputs(weights: dict, config: Config, problem) -> dict:
    """Weights of a joint model extended to take observations (``model.observe``): the input
    layer gets zero weights for the new channels, which enter before the coordinates, so the
    extended model starts as the one it came from."""
    from pdediff.learning.model import network_channels

    channels = network_channels(config, problem)
    new = 2 * channels["channels"]
    flag = int(config.model.cond_dropout > 0)  # the null condition's flag follows the observations
    return _grow_input(weights, channels["channels"] + channels["cond_channels"] - new - flag, new, flag)


def _add_operator_input(weights: dict, config: Config, problem) -> dict:
    """Weights of a forward model extended to take the operator guess (``model.operator_input``):
    the input layer gets zero weights for the new channel, the last condition (before the
    coordinates and the null condition's flag), so the extended model starts as the one it came from."""
    from pdediff.learning.model import network_channels

    flag = int(config.model.cond_dropout > 0)
    return _grow_input(weights, 1 + network_channels(config, problem)["cond_channels"] - 1 - flag, 1, flag)


def _grow_input(weights: dict, first: int, new: int, flag: int) -> dict:
    """``weights`` with ``new`` zero input channels inserted after the first ``first`` of the
    network's input layer (the U-Net's ``input_conv``, the FNO's lifting)."""
    out = {}
    for k, w in weights.items():
        if k.startswith("net.") and w.ndim == 4 and w.shape[1] - flag in (first, first + 2) and (
                k.endswith("input_conv.weight") or k.endswith("lifting.0.weight")):
            grown = w.new_zeros((w.shape[0], w.shape[1] + new, *w.shape[2:]))
            grown[:, :first] = w[:, :first]
            grown[:, first + new:] = w[:, first:]
            w = grown
        out[k] = w
    return out


def check_export(path, argument: str = "--export") -> Path:
    """Refuse an export path that cannot be written, before training rather than after it.

    Raises:
        ValueError: ``path`` lacks the ``.safetensors`` suffix, is a folder, or its folder does
            not exist or refuses a new file (checked by creating and removing a temporary one).
    """
    p = Path(path)
    if p.suffix != ".safetensors":
        raise ValueError(f"{argument}={str(path)!r} has suffix {p.suffix!r}; expected a .safetensors file")
    if p.is_dir():
        raise ValueError(f"{argument}={str(path)!r} is a folder; expected a file name")
    folder = p.parent
    if not folder.is_dir():
        raise ValueError(f"{argument}={str(path)!r}: folder {str(folder)!r} does not exist; expected an "
                         "existing, writable folder")
    probe = folder / f"{p.name}.{os.getpid()}.tmp"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"{argument}={str(path)!r}: folder {str(folder)!r} is not writable ({exc.strerror}); "
                         "expected a writable folder") from None
    return p


def read_metrics(path) -> list[tuple[str, int]]:
    """The records of a run's ``metrics.jsonl`` as ``(line, step)`` pairs.

    A last line without its newline (the write cut short by a kill) is dropped.

    Raises:
        ValueError: naming the file and line number of a line that is not a JSON object with an
            integer ``step``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot be read ({exc}); expected the run's JSON-lines metrics log") from None
    lines = text.split("\n")
    cut = lines.pop() if lines else ""  # "" when the text ends with a newline
    records = []
    for number, line in enumerate([*lines, cut], start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            step = record["step"]
            if not isinstance(step, int) or isinstance(step, bool):
                raise TypeError(f"step={step!r} is not an integer")
        except (json.JSONDecodeError, KeyError, TypeError, IndexError, RecursionError) as exc:
            if number == len(lines) + 1:  # the last write was interrupted
                break
            raise ValueError(f"{path}: line {number} is not a JSON object with an integer 'step' ({exc}); "
                             "expected one record per line: fix or delete that line") from None
        records.append((line, step))
    return records


def _check_split(key: str, paths, split: str, problem, net) -> tuple[int, int]:
    """``(N, count)`` of a data split after checking that it can be read and trained on."""
    try:
        reader = ShardReader(paths, split)
    except ValueError as exc:
        raise ValueError(f"{key}={paths!r} cannot be read: {exc}") from None
    info = reader.infos[0]
    if info.problem != problem.name:
        raise ValueError(f"{key}={paths!r} holds problem {info.problem!r}; expected data.problem={problem.name!r}")
    card_params = json.loads(info.attrs.get("card_json", "{}")).get("params", {}) if "card_json" in info.attrs else {}
    if card_params != problem.params():
        raise ValueError(f"{key}={paths!r} was made with problem parameters {card_params}; expected "
                         f"data.params={problem.params()}")
    missing = [k for k in (*problem.condition_fields, problem.solution_field) if k not in reader.fields]
    if missing:
        raise ValueError(f"{key}={paths!r} lacks field(s) {missing}; expected {list(reader.fields)} to include "
                         f"those of problem {problem.name!r}")
    try:
        net.check_grid(reader.n, reader.n)
    except ValueError as exc:
        raise ValueError(f"{key}={paths!r} has N={reader.n}, which model.network_kwargs cannot train on: "
                         f"{exc}") from None
    return reader.n, len(reader)


def _resume_metadata(config: Config, ckpt: Path, problem, net, world: int) -> dict:
    """The metadata of checkpoint ``ckpt`` after checking that this config can resume it."""
    meta = read_metadata(ckpt)
    if "optimizer" not in meta:
        raise ValueError(f"checkpoint={str(ckpt)!r} holds no optimiser state (an exported, inference-only "
                         "checkpoint), so it cannot be resumed; to fine-tune from it, set train.init to its "
                         "path and start a fresh run in another folder")
    try:
        theirs = Config.from_dict(meta["config"])
        Normalisation.from_dict(meta["normalisation"]).validate(problem)
        step, written_by = meta["step"], int(meta.get("run", {}).get("world_size", 1))
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ValueError(f"step={step!r} is not an integer >= 0")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"checkpoint={str(ckpt)!r} has invalid metadata: {exc}") from None
    differ = [k for k in ("data.problem", "model.network", "model.precond", "model.sigma_data")
              if _get(theirs, k) != _get(config, k)]
    mine = other = None  # the networks' full constructor arguments, defaults included
    if "model.network" not in differ:
        try:
            mine, other = net.config, check_network(theirs, problem).config
        except (AttributeError, ValueError):
            mine, other = config.model.network_kwargs, theirs.model.network_kwargs
        differ += [f"model.network_kwargs.{k}" for k in sorted(set(mine) | set(other)) if mine.get(k) != other.get(k)]
    if differ:
        was = ", ".join(f"{k}={_get(theirs, k, other)!r}" for k in differ)
        now = ", ".join(f"{k}={_get(config, k, mine)!r}" for k in differ)
        raise ValueError(f"checkpoint={str(ckpt)!r} was trained with {was}, but the config has {now}; resume with "
                         "the config it was trained with (config.yaml of its folder), or start a new run")
    if written_by != world:
        raise ValueError(f"checkpoint={str(ckpt)!r} was written by {written_by} process(es); resume it with "
                         f"{written_by}, not {world}")
    if (ckpt.parent / METRICS).is_file():
        read_metrics(ckpt.parent / METRICS)
    return meta


def _get(config: Config, key: str, kwargs: dict | None = None):
    """The setting ``key`` (dotted) of ``config``; network kwargs from ``kwargs`` when given."""
    section, name = key.split(".", 1)
    if section == "model" and name.startswith("network_kwargs."):
        return (kwargs if kwargs is not None else config.model.network_kwargs).get(name.split(".", 1)[1])
    return getattr(getattr(config, section), name)


def check_run(config: Config, out_dir, *, resume: bool = False, world: int | None = None) -> dict | None:
    """Check everything a run needs before any expensive work, so that it cannot fail later on input.

    Checks the config (types, ranges, run name), ``train.device``, the network (built on the
    meta device, its size bounded), the training and (with ``train.valid_every``) validation
    splits: readable, of ``data.problem``, with its fields, on one grid that the network accepts,
    with enough samples for ``world`` processes. With ``resume`` and a checkpoint in ``out_dir``:
    that it holds optimiser state, was trained with the same network, problem and process count,
    has a valid normalisation, and that ``metrics.jsonl`` is readable.

    Args:
        world: number of processes (default: ``$WORLD_SIZE``, else 1).

    Returns:
        The metadata of the checkpoint to resume from, or None for a fresh start.

    Raises:
        ValueError: naming the setting, file or key at fault and what was expected.
    """
    config.validate()
    world = int(os.environ.get("WORLD_SIZE", "1")) if world is None else world
    if config.model.sampler not in SAMPLERS:  # else the first validation would fail
        raise ValueError(f"model.sampler={config.model.sampler!r} is unknown; expected one of {sorted(SAMPLERS)}")
    build_loss(config, 1.0)  # train.loss
    resolve_device(config.train.device)
    problem = config.data.make_problem()
    net = check_network(config, problem)
    n, count = _check_split("data.train", config.data.train, "train", problem, net)
    try:
        read_card(config.data.train)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"data.train={config.data.train!r} has no valid dataset card ({exc!r}); expected files "
                         "written by generate_data.py") from None
    limit = config.data.max_train_samples
    if min(count, limit or count) < world:
        raise ValueError(f"data.train={config.data.train!r} gives {min(count, limit or count)} training sample(s) "
                         f"(data.max_train_samples={limit!r}); expected at least one per process ({world})")
    if config.train.valid_every:
        n_valid, count_valid = _check_split("data.valid", config.data.valid, "valid", problem, net)
        if n_valid != n:
            raise ValueError(f"data.valid={config.data.valid!r} has N={n_valid}, but data.train has N={n}; "
                             "expected one grid")
        if not count_valid:
            raise ValueError(f"data.valid={config.data.valid!r} holds no samples; expected at least one "
                             "(or train.valid_every: 0)")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={str(out)!r} is a file; expected a run folder")
    existing = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not os.access(existing, os.W_OK):
        raise ValueError(f"out={str(out)!r}: {str(existing)!r} is not writable; expected a writable run folder")
    ckpt = out / CHECKPOINT
    if resume and ckpt.is_file():
        return _resume_metadata(config, ckpt, problem, net, world)
    return None


def remove_stale_tmp(out_dir) -> list[Path]:
    """Delete the temporary files that a killed run left in ``out_dir`` (:data:`STALE_TMP` names only)."""
    removed = []
    for path in Path(out_dir).iterdir():
        if STALE_TMP.fullmatch(path.name) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


class Trainer:
    """One training run; see :func:`train`.

    Everything the run needs is checked (:func:`check_run`) before any data are loaded.
    """

    def __init__(self, config: Config, out_dir, *, resume: bool = False, progress: bool = True):
        self.config = config
        self.out = Path(out_dir)
        self.rank, self.world = _distributed()
        resume_from = check_run(config, self.out, resume=resume, world=self.world)
        self.device = resolve_device(config.train.device)
        if config.train.threads:
            torch.set_num_threads(config.train.threads)
        self.problem = config.data.make_problem()
        self.progress = progress and self.rank == 0
        self.ckpt_path = self.out / CHECKPOINT

        state = None
        if resume_from is not None:
            state = load_checkpoint(self.ckpt_path, device="cpu")
        self.card = read_card(config.data.train)
        init = None
        if state is None and config.train.init:
            init = _init_state(config, config.train.init)
        if state is not None:
            self.norm = Normalisation.from_dict(state[1]["normalisation"]).validate(self.problem)
        elif init is not None and init[1] is not None:
            self.norm = init[1]
        else:
            stats = load_arrays(config.data.train, limit=config.data.stats_samples)
            self.norm = (fit_joint_normalisation(self.problem, config.model.joint, stats) if config.model.joint
                         else fit_normalisation(self.problem, stats))

        # this rank's share of the training data, held in memory
        self.data = load_arrays(config.data.train, limit=config.data.max_train_samples,
                                rank=self.rank, world=self.world)
        self.fields = [*self.problem.condition_fields, self.problem.solution_field]
        self.data = {k: torch.as_tensor(self.data[k], dtype=torch.float32) for k in self.fields}
        if self.device.type == "cuda":  # held on the GPU: no host-to-device copy per step
            self.data = {k: v.to(self.device) for k, v in self.data.items()}
            torch.backends.cudnn.benchmark = True
        self.count = len(self.data[self.fields[0]])

        torch.manual_seed(config.train.seed)  # identical initial weights on every rank
        self.model = build_denoiser(config, self.problem, self.norm).to(self.device)
        self.ema = build_denoiser(config, self.problem, self.norm).to(self.device)
        if init is not None:
            # every weight from the checkpoint; sigma_data of this run's statistics where refitted
            self.model.load_state_dict({"sigma_data": self.model.sigma_data, **init[0]})
        self.ema.load_state_dict(self.model.state_dict())
        self.ema.requires_grad_(False)
        self.ddp = (torch.nn.parallel.DistributedDataParallel(self.model) if self.world > 1 else self.model)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=config.train.lr,
                                     weight_decay=config.train.weight_decay)
        self.loss_fn = build_loss(config, float(self.model.sigma_data))
        seed = np.random.SeedSequence([config.train.seed, self.rank]).generate_state(1, np.uint64)[0]
        self.index_gen = torch.Generator().manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)
        self.noise_gen = torch.Generator(device=self.device).manual_seed((int(seed) >> 1) + 1)
        self.step = 0
        self.wall = 0.0
        if state is not None:
            self._restore(*state)

    # ------------------------------------------------------------------ state
    def _restore(self, tensors: dict, meta: dict) -> None:
        try:
            self.model.load_state_dict(group(tensors, "model"))
            self.ema.load_state_dict(group(tensors, "ema"))
            _load_optimizer(self.opt, group(tensors, "optim"), meta["optimizer"])
            self.index_gen.set_state(tensors[f"rng.index.{self.rank}"])
            self.noise_gen.set_state(tensors[f"rng.noise.{self.rank}"].to(self.noise_gen.get_state().device))
            self.wall = float(meta.get("run", {}).get("wall_time_s", 0.0))
        except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"checkpoint={str(self.ckpt_path)!r} cannot be resumed: its tensors do not fit "
                             f"this run ({exc!r})") from None
        self.step = int(meta["step"])

    def _prepare_folder(self) -> None:
        """Create the run folder (rank 0), drop killed writes' temporary files, write config.yaml,
        and make metrics.jsonl agree with the step: on a fresh start it is replaced, on resume
        the records after the checkpoint's step (logged by the run that was stopped) are dropped."""
        self.out.mkdir(parents=True, exist_ok=True)
        remove_stale_tmp(self.out)
        write_text(self.out / "config.yaml", self.config.to_yaml())
        log = self.out / METRICS
        if self.step == 0:
            if log.exists():
                write_text(log, "")
        elif log.is_file():
            kept = [line for line, step in read_metrics(log) if step <= self.step]
            write_text(log, "".join(line + "\n" for line in kept))

    def _gather_rng(self, name: str, gen: torch.Generator) -> dict:
        local = gen.get_state().cpu()
        if self.world == 1:
            return {f"rng.{name}.0": local}
        out = [torch.empty_like(local) for _ in range(self.world)]
        dist.all_gather_object(out, local)
        return {f"rng.{name}.{r}": t for r, t in enumerate(out)}

    def save(self) -> None:
        """Write the checkpoint atomically (rank 0), after checking that the ranks agree."""
        rngs = {**self._gather_rng("index", self.index_gen), **self._gather_rng("noise", self.noise_gen)}
        in_sync = True
        if self.world > 1:
            sums = [None] * self.world
            dist.all_gather_object(sums, _checksum(self.model))
            in_sync = all(s == sums[0] for s in sums)
        if self.rank != 0:
            return
        opt_tensors, opt_meta = _optimizer_tensors(self.opt)
        tensors = {**prefixed("model", self.model.state_dict()), **prefixed("ema", self.ema.state_dict()),
                   **prefixed("optim", opt_tensors), **rngs}
        meta = {
            "config": self.config.to_dict(),
            "normalisation": self.norm.to_dict(),
            "card": self.card,
            "step": self.step,
            "optimizer": opt_meta,
            "version": __version__,
            "run": {"wall_time_s": self.wall, "hardware": hardware(), "world_size": self.world,
                    "ranks_in_sync": in_sync},
        }
        save_checkpoint(self.ckpt_path, tensors, meta)

    def _check_finite(self, loss: torch.Tensor) -> None:
        """Raise a ValueError naming the settings that make training diverge, when the loss or the
        weights are no longer finite."""
        weights = all(bool(torch.isfinite(p).all()) for p in self.model.parameters())
        if weights and bool(torch.isfinite(loss)):
            return
        t = self.config.train
        raise ValueError(
            f"training diverged at step {self.step}: the loss is {float(loss):.3g} and the weights are "
            f"{'finite' if weights else 'not finite'}; "
            f"expected a stable setting: lower train.lr={t.lr!r}, or check train.weight_decay={t.weight_decay!r}, "
            f"train.P_mean={t.P_mean!r}, train.P_std={t.P_std!r} and train.grad_clip={t.grad_clip!r} "
            f"(the last checkpoint is kept)"
        )

    def _log(self, record: dict) -> None:
        if self.rank != 0:
            return
        with open(self.out / METRICS, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    # ------------------------------------------------------------------ loop
    def _batch(self):
        idx = torch.randint(self.count, (self.config.train.batch_size,), generator=self.index_gen)
        idx = idx.to(self.data[self.fields[0]].device)
        fields = {k: v[idx].to(self.device) for k, v in self.data.items()}
        if self.config.model.joint:
            return self._joint_batch(fields, self.noise_gen)
        cond, s = encode(self.problem, self.norm, fields, self.config.model.operator_input)
        x0 = encode_solution(self.norm, fields[self.problem.solution_field], s)
        return x0, cond

    def _with_dropout(self, count: int, device):
        """The model as the loss calls it: with ``model.cond_dropout``, each sample given the
        null condition with that probability (classifier-free guidance's training)."""
        p = self.config.model.cond_dropout
        if not p > 0:
            return self.ddp
        null = torch.rand((count,), generator=self.noise_gen, device=device) < p
        return functools.partial(self.ddp, null=null)

    @torch.no_grad()
    def _update_ema(self) -> None:
        # warm-up of the average (as in EDM's ema_rampup): early weights are forgotten quickly
        decay = min(self.config.train.ema_decay, (1.0 + self.step) / (10.0 + self.step))
        torch._foreach_lerp_(list(self.ema.parameters()), [p.detach() for p in self.model.parameters()], 1.0 - decay)
        for e, b in zip(self.ema.buffers(), self.model.buffers()):
            e.copy_(b)

    def validate(self) -> dict:
        """Relative L2 and boundary error of the EMA model on the validation split (PF-ODE, Heun)."""
        t = self.config.train
        arrays = load_arrays(self.config.data.valid, limit=t.valid_samples, split="valid")
        if self.config.model.joint:
            return self._validate_joint(arrays)
        solver = Solver(self.ema, self.config, self.norm, self.card, device=self.device)
        names = self.problem.condition_fields
        phi = solver.solve(*(arrays[k] for k in names), steps=t.valid_steps, batch_size=64)
        rep = metrics.report(self.problem, phi, arrays, arrays[self.problem.solution_field])
        return {"valid_rel_l2": float(np.mean(rep["rel_l2"])), "valid_rel_l2_median": float(np.median(rep["rel_l2"])),
                **({"valid_boundary_err": float(np.max(rep["boundary_err"]))} if "boundary_err" in rep else {})}

    def _joint_batch(self, fields: dict, generator: torch.Generator):
        """A joint model's data and condition; with ``model.observe``, random observations of
        the data (:func:`pdediff.learning.conditioning.random_observations`) join the condition."""
        x0, cond = joint_encode(self.problem, self.norm, self.config.model.joint, fields)
        if self.config.model.observe:
            mask = random_observations(self.problem, self.config.model.joint, x0.shape, generator, x0.device)
            obs = observation_channels(x0, mask)
            cond = obs if cond is None else torch.cat([cond, obs], dim=1)
        return x0, cond

    @torch.no_grad()
    def _validate_joint(self, arrays: dict) -> dict:
        """A joint model's denoising loss on the validation split at fixed noise levels (its
        reconstructions need observations; :mod:`benchmarks.observe` measures those)."""
        fields = {k: torch.as_tensor(arrays[k], dtype=torch.float32, device=self.device) for k in self.fields}
        gen = torch.Generator(device=self.device).manual_seed(0)
        x0, cond = self._joint_batch(fields, gen)
        out = {}
        for sigma in (0.05, 0.5, 5.0):
            noise = torch.randn(x0.shape, generator=gen, device=self.device) * sigma
            d = self.ema(x0 + noise, torch.full((len(x0),), sigma, device=self.device), cond)
            out[f"valid_rel_l2_sigma{sigma:g}"] = float(((d - x0).norm() / x0.norm()).cpu())
        return out

    def fit_steps_to(self, seconds: float, probe: int = 60) -> int:
        """Set ``train.steps`` to what fits in ``seconds`` of wall time from now: train ``probe``
        steps (inside the warm-up, whose learning rate does not depend on the total), time the
        last half of them, and keep 3 % of the budget for checkpoints. Returns the new total."""
        t0 = time.perf_counter()
        t = self.config.train
        t.steps = max(t.steps, 2 * probe)
        every = t.checkpoint_every
        t.checkpoint_every = 10**9  # no checkpoint inside the probe
        self.run(until=probe // 2)
        t1 = time.perf_counter()
        self.run(until=probe)
        per_step = (time.perf_counter() - t1) / (probe - probe // 2)
        left = 0.97 * seconds - (time.perf_counter() - t0)
        t.steps = max(probe + 1, probe + int(left / per_step))
        t.checkpoint_every = every
        if self.rank == 0:
            print(f"{per_step * 1e3:.1f} ms a step: train.steps = {t.steps} to fit {seconds:g} s", flush=True)
        return t.steps

    def run(self, until: int | None = None) -> Path:
        """Train to ``config.train.steps`` (or stop early at step ``until``, checkpointing there,
        as an interrupted run would); returns the checkpoint path."""
        t = self.config.train
        stop = t.steps if until is None else min(int(until), t.steps)
        if self.rank == 0:
            self._prepare_folder()
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=t.steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        self.model.train()
        seen, window = 0, 0.0  # samples and seconds since the last log line
        while self.step < stop:
            tick = time.perf_counter()
            lr = learning_rate(self.config, self.step)
            for g in self.opt.param_groups:
                g["lr"] = lr
            try:
                x0, cond = self._batch()
                loss = self.loss_fn(self._with_dropout(len(x0), x0.device), x0, cond, generator=self.noise_gen).mean()
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
            except RuntimeError as exc:  # torch.OutOfMemoryError included
                if not _out_of_memory(exc):
                    raise
                raise ValueError(f"train.batch_size={t.batch_size} does not fit in the memory of {self.device} "
                                 f"({str(exc).splitlines()[0][:200]}); expected a smaller batch") from None
            loss = loss.detach()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
            self.opt.step()
            self._update_ema()
            self.step += 1
            seen += len(x0) * self.world
            window += time.perf_counter() - tick
            record = {}
            if self.step % t.log_every == 0 or self.step == stop:
                record = {"step": self.step, "loss": float(loss), "grad_norm": float(grad_norm), "lr": lr,
                          "samples_per_s": seen / max(window, 1e-9),
                          "wall_time_s": self.wall + time.perf_counter() - tick}
                seen, window = 0, 0.0
            if t.valid_every and (self.step % t.valid_every == 0 or self.step == stop) and self.rank == 0:
                record = {"step": self.step, **record, **self.validate()}
            if record:
                self._log(record)
                if bar is not None:
                    shown = {"loss": "loss", "samples_per_s": "samples/s", "valid_rel_l2": "val"}
                    bar.set_postfix({label: f"{record[k]:.4g}" for k, label in shown.items() if k in record})
            if bar is not None:
                bar.update(1)
            self.wall += time.perf_counter() - tick  # includes validation; saved with the checkpoint
            if self.step % t.checkpoint_every == 0 or self.step == stop:
                self._check_finite(loss)  # never save a diverged model over a good checkpoint
                self.save()
        if bar is not None:
            bar.close()
        return self.ckpt_path


def _out_of_memory(exc: RuntimeError) -> bool:
    """Whether torch raised ``exc`` because an allocation failed (CPU or GPU)."""
    text = str(exc)
    return (isinstance(exc, getattr(torch, "OutOfMemoryError", ())) or "can't allocate memory" in text
            or "out of memory" in text.lower())


def train(config: Config, out_dir, *, resume: bool = False, progress: bool = True,
          until: int | None = None) -> Path:
    """Train a conditional score model as ``config`` says, writing checkpoints to ``out_dir``.

    ``until`` stops at that step (the schedule is still that of ``config.train.steps``).
    """
    return Trainer(config, out_dir, resume=resume, progress=progress).run(until=until)


def export_checkpoint(src, dst, *, half: bool = False, config: Config | None = None) -> Path:
    """Keep only the EMA weights and metadata of a checkpoint (optionally as float16).

    With ``config``, its name, sampling defaults (``model.sampler``, ``model.steps``) and notes
    replace the trained ones: they are chosen after training, by measurement.
    """
    tensors, meta = load_checkpoint(src)
    if config is not None:
        meta["config"]["name"] = config.name
        meta["config"]["model"].update(sampler=config.model.sampler, steps=config.model.steps)
        meta["config"]["notes"] = config.notes
    ema = group(tensors, "ema")
    if half:
        ema = {k: (v.half() if v.is_floating_point() else v) for k, v in ema.items()}
    meta = {k: v for k, v in meta.items() if k not in ("optimizer", "format", "format_version")}
    return save_checkpoint(dst, prefixed("ema", ema), meta)
