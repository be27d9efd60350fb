"""Heatmaps of quantization tables: learned ones beside the standard JPEG tables."""

from __future__ import annotations

from pathlib import Path

import torch


def plot_tables(panels: dict[str, torch.Tensor], path: str | Path, title: str = "") -> Path:
    """Draw each 8×8 table as an annotated heatmap, one panel per entry, into a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..fileio import atomic_open

    columns = len(panels)
    fig, axes = plt.subplots(1, columns, figsize=(3.3 * columns, 3.6), squeeze=False)
    for ax, (name, table) in zip(axes[0], panels.items()):
        values = table.detach().float().cpu().numpy()
        image = ax.imshow(values, cmap="viridis")
        for (row, col), value in ((rc, values[rc]) for rc in ((r, c) for r in range(8) for c in range(8))):
            ax.text(col, row, f"{value:.0f}" if value >= 10 else f"{value:.1f}", ha="center", va="center",
                    fontsize=6, color="white" if value < values.max() * 0.6 else "black")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return path
