"""Pictures a person would rather look at than read: source, solution, reference, error."""

from __future__ import annotations

import numpy as np

from pdediff.atomic import atomic_path


def plot_rows(path, rows, title: str = "") -> None:
    """One row per sample: rho, pdediff's phi, the reference phi and their difference.

    Args:
        path: output PNG (written atomically).
        rows: sequence of ``(label, rho, phi, ref)`` with (N, N) arrays.
        title: figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 4, figsize=(15, 3.4 * len(rows)), constrained_layout=True, squeeze=False)
    for r, (label, rho, phi, ref) in enumerate(rows):
        panels = [(rho, "rho (source)", "RdBu_r"), (phi, "phi, pdediff", "viridis"),
                  (ref, "phi, reference", "viridis"), (phi - ref, "error", "RdBu_r")]
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
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
