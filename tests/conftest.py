"""Shared fixtures."""

from pathlib import Path

import pytest

from pdediff.data.generate import generate_dataset, make_card

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


def _png_pixels(path, width: int, height: int):
    """The RGB pixels of the PNG at ``path``, after checking that it is ``width`` x ``height``
    pixels and not blank: more than one colour, and some in colour (curves, images), not only the
    black, grey and white of axes and text."""
    import matplotlib.image
    import numpy as np

    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (height, width), (path, image.shape)
    rgb = np.round(image[..., :3] * 255).astype(np.int32)
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 1, f"{path} is one colour"
    chromatic = (rgb.max(axis=-1) - rgb.min(axis=-1)) > 40
    assert chromatic.mean() > 0.001, f"{path} has nothing in colour: no curve or image was drawn"
    return rgb


@pytest.fixture(scope="session")
def png_pixels():
    """``png_pixels(path, width, height)``: the PNG's RGB pixels, after checking its size in
    pixels and that it is not blank (see :func:`_png_pixels`)."""
    return _png_pixels


@pytest.fixture
def record_plot_rows(monkeypatch):
    """``record_plot_rows(module, draw=True)``: make ``module.plot_rows`` record what it is asked
    to draw, returning a list that fills with one ``(path, rows)`` per call (``rows`` as
    :func:`pdediff.tools.plotting.plot_rows` takes them); with ``draw=False`` no figure is written
    (matplotlib takes seconds for a gallery)."""
    from pdediff.tools import plotting

    calls = []

    def watch(module, draw: bool = True):
        def recording(path, rows, title=""):
            rows = list(rows)
            calls.append((Path(path), rows))
            if draw:
                plotting.plot_rows(path, rows, title)

        monkeypatch.setattr(module, "plot_rows", recording)
        return calls

    return watch
