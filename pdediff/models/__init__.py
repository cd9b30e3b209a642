"""The models shipped with pdediff, by name: ``pdediff.load_solver(NAME)``.

Each is one safetensors checkpoint in this folder that carries its config, normalisation and
dataset card; the configs and the commands that trained them are in ``configs/``.
"""

from __future__ import annotations

from pathlib import Path

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
