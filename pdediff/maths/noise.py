"""Random draws from explicit generators: the one place the engine makes noise.

A ``generator`` may be ``None``, one ``torch.Generator``, or a sequence of B generators (one per
sample, as in NVlabs/edm) so that a sample's noise does not depend on the batch it is drawn in.
"""

from __future__ import annotations

from typing import Sequence, Union

import torch

Generator = Union[None, torch.Generator, Sequence[torch.Generator]]


def _draw(fn, shape, generator: Generator, device, dtype) -> torch.Tensor:
    """Draw ``fn(shape)`` (``torch.randn`` or ``torch.rand``) from one or per-sample generators."""
    shape = tuple(shape)
    dtype = dtype if dtype is not None else torch.get_default_dtype()
    device = torch.device(device) if device is not None else torch.device("cpu")
    if generator is None or isinstance(generator, torch.Generator):
        # Draw on the generator's own device so the bytes do not depend on where x lives.
        gen_device = generator.device if generator is not None else device
        return fn(shape, generator=generator, device=gen_device, dtype=dtype).to(device)
    generators = list(generator)
    if len(shape) == 0 or len(generators) != shape[0]:
        raise ValueError(
            f"got {len(generators)} per-sample generators for a draw of shape {shape}; "
            "pass one generator per sample (the first axis)"
        )
    draws = [fn(shape[1:], generator=g, device=g.device, dtype=dtype) for g in generators]
    return torch.stack(draws).to(device)


def randn(shape, generator: Generator = None, device=None, dtype=None) -> torch.Tensor:
    """Standard normal draw of ``shape`` from ``generator`` (one, or one per sample)."""
    return _draw(torch.randn, shape, generator, device, dtype)


def rand(shape, generator: Generator = None, device=None, dtype=None) -> torch.Tensor:
    """Uniform [0, 1) draw of ``shape`` from ``generator`` (one, or one per sample)."""
    return _draw(torch.rand, shape, generator, device, dtype)


def randn_like(x: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    """Standard normal draw with the shape, dtype and device of ``x``."""
    return randn(x.shape, generator, device=x.device, dtype=x.dtype)


def generators(seed: int, first_index: int, count: int, stream: int) -> list[torch.Generator]:
    """One CPU generator per sample, seeded from (seed, sample index, stream), so that results
    do not depend on batching. Stream 0 draws the initial noise, stream 1 the sampler's noise."""
    import numpy as np

    out = []
    for k in range(count):
        state = np.random.SeedSequence([int(seed), first_index + k, stream]).generate_state(1, np.uint64)[0]
        out.append(torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF))
    return out
