"""Small tensor helpers shared by the maths modules and the networks."""

from __future__ import annotations

import torch


def append_dims(x: torch.Tensor, target_dims: int) -> torch.Tensor:
    """Append trailing singleton axes to ``x`` until it has ``target_dims`` axes.

    Broadcasts a per-sample quantity of shape (B,) (or a 0-d tensor) against a state (B, ...).

    Raises:
        ValueError: if ``x`` already has more than ``target_dims`` axes.
    """
    missing = target_dims - x.ndim
    if missing < 0:
        raise ValueError(f"input has {x.ndim} dims but target_dims is {target_dims}, which is less")
    return x[(...,) + (None,) * missing]
