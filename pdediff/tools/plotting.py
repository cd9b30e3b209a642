"""Pictures a person would rather look at than read: source, solution, reference, error."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pdediff.data.atomic import atomic_path


def plot_rows(path, rows, title: str = "", names: tuple[str, str] = ("rho (source)", "phi")) -> None:
    """One row per sample: a condition field, pdediff's solution, the reference and their difference.

    Args:
        path: output PNG (written atomically).
        rows: sequence of ``(label, rho, phi, ref)`` with (N, N) arrays.
        title: figure title.
        names: the titles of the condition field's panel and of the solution.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 4, figsize=(15, 3.4 * len(rows)), constrained_layout=True, squeeze=False)
    for r, (label, rho, phi, ref) in enumerate(rows):
        first = "cividis" if np.all(rho > 0) else "RdBu_r"  # a coefficient is positive: not a signed map
        panels = [(rho, names[0], first), (phi, f"{names[1]}, pdediff", "viridis"),
                  (ref, f"{names[1]}, reference", "viridis"), (phi - ref, "error", "RdBu_r")]
        for ax, (a, name, cmap) in zip(axes[r], panels):
            signed = cmap == "RdBu_r"
            vmax = float(np.abs(a).max()) or 1.0
            im = ax.imshow(a, origin="lower", extent=(0, 1, 0, 1), cmap=cmap,
                           vmin=-vmax if signed else None, vmax=vmax if signed else None)
            ax.set_title(name, fontsize=10)
            ax.set_xticks([0, 1])
            ax.set_yticks([0, 1])
            fig.colorbar(im, ax=ax, shrink=0.85, format="%.1e" if name == "error" else None)
        axes[r, 0].set_ylabel(f"{label}\ny" if label else "y", fontsize=10)
    if title:
        fig.suptitle(title)
    save_figure(fig, path, dpi=90)


def save_figure(fig, path, dpi: int = 100) -> None:
    """Write a matplotlib figure to ``path`` atomically (a temporary name, then renamed; the
    format from the suffix) and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path, suffix=Path(path).suffix or ".png") as tmp:
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
