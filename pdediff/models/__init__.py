"""The models shipped with pdediff, by name, their cards, and loading: ``pdediff.load_solver(NAME)``.

Each is one safetensors checkpoint in this folder that carries its config, normalisation and
dataset card, with its model card ``NAME.md`` (how it was made, what it measures, what it is
not for) and the metrics log of its training run beside it; the configs that trained them are
in ``configs/`` (``configs/README.md``).
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

FOLDER = Path(__file__).parent

#: Model name -> checkpoint file in this folder.
MODELS: dict[str, str] = {
    "poisson": "default.safetensors",
    "poisson-smooth": "poisson-smooth.safetensors",
    "darcy": "darcy.safetensors",
    "darcy-broad": "darcy-broad.safetensors",
    "helmholtz": "helmholtz.safetensors",
    "poisson-joint": "poisson-joint.safetensors",
    "darcy-joint": "darcy-joint.safetensors",
}

#: Model name -> the shipped model its solver hands poorly answered samples to
#: (:attr:`pdediff.solver.Solver.fallback`): ``darcy`` is best on its training law, ``darcy-broad``
#: on the others (``python -m benchmarks.darcy_route``).
FALLBACKS: dict[str, str] = {"darcy": "darcy-broad"}

#: The model ``load_solver()`` loads.
DEFAULT = "poisson"


def model_path(name: str) -> Path:
    """The checkpoint file of the shipped model ``name``.

    Raises:
        ValueError: an unknown name (listing the names), or a model whose file is missing.
    """
    if name not in MODELS:
        raise ValueError(f"model={name!r} is not a shipped model; expected one of {sorted(MODELS)}")
    path = FOLDER / MODELS[name]
    if not path.is_file():
        raise ValueError(f"the shipped model {name!r} is missing ({path}); reinstall pdediff or train one with train.py")
    return path


class ModelCard(dict):
    """A model's card. As a mapping it is the training dataset's card (``card["problem"]``,
    ``card["counts"]`` ...); ``text`` is the model card's markdown, which ``str`` and notebooks
    show, and ``metadata`` its YAML front matter."""

    def __init__(self, dataset_card: dict, text: str, metadata: dict | None = None):
        super().__init__(dataset_card)
        self.text = text
        self.metadata = dict(metadata or {})

    def __str__(self) -> str:
        return self.text

    def _repr_markdown_(self) -> str:
        return self.text


def split_front_matter(text: str) -> tuple[dict, str]:
    """A markdown file's YAML front matter (between ``---`` lines at its top) and the rest."""
    if text.startswith("---\n"):
        head, sep, body = text[4:].partition("\n---\n")
        if sep:
            meta = yaml.safe_load(head) or {}
            if not isinstance(meta, dict):
                raise ValueError(f"the model card's front matter is {type(meta).__name__}; expected a mapping")
            return meta, body.lstrip("\n")
    return {}, text


def model_card(name: str | None, config, dataset_card: dict) -> ModelCard:
    """The card of a shipped model ``name`` (``pdediff/models/NAME.md``), or for any other
    checkpoint a short one made from its config and dataset card."""
    path = FOLDER / f"{name}.md" if name in MODELS else None
    if path is not None and path.is_file():
        text = path.read_text()
        return ModelCard(dataset_card, text, split_front_matter(text)[0])
    m = config.model
    lines = [f"# {config.name or 'model'} (no model card)", "",
             f"A {m.network} score model of problem {dataset_card.get('problem', config.data.problem)!r}"
             f"{' (joint: ' + ', '.join(m.joint) + ')' if m.joint else ''}, trained at N = "
             f"{dataset_card.get('n', dataset_card.get('N', '?'))}; default sampler {m.sampler} with "
             f"{m.steps} levels. Training data: {dataset_card.get('counts', {})} samples.", "",
             "Its figures are not measured here: run `python -m benchmarks` on it."]
    return ModelCard(dataset_card, "\n".join(lines) + "\n", {"model": config.name, "network": m.network})


def load_solver(model=None, *, device="cpu", **params):
    """Load a :class:`pdediff.solver.Solver`: a shipped model by name (a key of :data:`MODELS`;
    None: the default, :data:`DEFAULT`) or a checkpoint file by path. A data-driven model
    (written by ``python -m pdediff.tools.fit``) loads as a :class:`pdediff.solver.fields.FieldSolver`.

    ``params`` are problem parameters that the caller expects (e.g. ``k=8.0``); they must equal
    the model's, which it was trained with and cannot change.

    Raises:
        ValueError: an unknown model name (listing the names), a missing or invalid checkpoint,
            a device this machine lacks, or parameters that differ from the model's.
    """
    from pdediff.solver import Solver, check_device

    check_device("device", device)
    if model is None:
        model = DEFAULT
    name = None
    if isinstance(model, str) and model in MODELS:
        name, path = model, model_path(model)
    elif isinstance(model, (str, os.PathLike)) and Path(model).suffix:
        path = model
    else:
        raise ValueError(f"model={model!r} is neither a shipped model (one of {sorted(MODELS)}) nor a checkpoint "
                         f"file path (*.safetensors)")
    if name is None:
        from pdediff.data.checkpoint import read_metadata

        if read_metadata(path).get("kind") == "fields":  # a data-driven model (python -m pdediff.tools.fit)
            from pdediff.solver.fields import FieldSolver

            if params:
                raise ValueError(f"params {sorted(params)} given for a data-driven model {str(model)!r}; it has no "
                                 "problem parameters")
            return FieldSolver.from_checkpoint(path, device=device)
    solver = Solver.from_checkpoint(path, device=device, name=name)
    if name in FALLBACKS:
        solver.fallback = Solver.from_checkpoint(model_path(FALLBACKS[name]), device=device, name=FALLBACKS[name])
    theirs = solver.problem.params()
    unknown = sorted(set(params) - set(theirs))
    if unknown:
        raise ValueError(f"problem {solver.problem.name!r} has no parameter(s) {unknown}; it has {theirs or 'none'}")
    differ = {k: v for k, v in params.items() if v != theirs[k]}
    if differ:
        raise ValueError(f"{', '.join(f'{k}={v!r}' for k, v in differ.items())} differs from the model's "
                         f"{', '.join(f'{k}={theirs[k]!r}' for k in differ)}; expected the parameters it was "
                         f"trained with (train another model for others)")
    return solver
