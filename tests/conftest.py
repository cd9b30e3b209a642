"""Shared fixtures."""

from pathlib import Path

import pytest

from pdediff.generate import generate_dataset, make_card

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A 17 x 17 Poisson dataset (40 / 8 / 8 samples, mixture sources, smooth boundary data)."""
    out = tmp_path_factory.mktemp("tiny") / "poisson17"
    card = make_card("poisson", 17, 40, source="mixture", boundary="smooth", seed=3, valid_count=8, test_count=8)
    generate_dataset(out, card)
    return out


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """One intra-op thread: on small tensors, competing OpenMP threads are far slower."""
    import torch

    torch.set_num_threads(1)
