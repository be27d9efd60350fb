"""Report figures as PNG bytes (matplotlib, Agg backend)."""

from __future__ import annotations

import io
import textwrap
from typing import Any, Sequence

import numpy as np


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def training_curves(name: str, metrics: Sequence[dict[str, Any]]) -> bytes:
    plt = _plt()
    epochs = [m.get("epoch", i + 1) for i, m in enumerate(metrics)]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.2))
    terms = sorted({k for m in metrics for k in (m.get("train_loss") or {})})
    for term in terms:
        ax_loss.plot(epochs, [(m.get("train_loss") or {}).get(term, np.nan) for m in metrics], marker="o", label=term)
    if any("test_loss" in m for m in metrics):
        ax_loss.plot(epochs, [m.get("test_loss", np.nan) for m in metrics], marker="s", ls="--", label="test loss")
    ax_loss.set_xlabel("epoch"), ax_loss.set_ylabel("loss"), ax_loss.legend(fontsize=7)
    for key, label in (("train_accuracy", "train"), ("test_accuracy", "test")):
        if any(key in m for m in metrics):
            ax_acc.plot(epochs, [100 * m.get(key, np.nan) for m in metrics], marker="o", label=label)
    ax_acc.set_xlabel("epoch"), ax_acc.set_ylabel("accuracy (%)"), ax_acc.legend(fontsize=7)
    from matplotlib.ticker import MaxNLocator
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(name, fontsize=10)
    return _png(fig)


def eps_curves(curves: dict[str, list[tuple[float, float]]], norm: str) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, points in curves.items():
        points = sorted(points)
        ax.plot([p[0] * (255 if norm == "Linf" else 1) for p in points], [p[1] for p in points], marker="o",
                label=label)
    ax.set_xlabel("eps (×1/255)" if norm == "Linf" else "eps (L2)")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title(f"Accuracy vs eps ({norm})", fontsize=10)
    return _png(fig)


def heatmap(matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str], title: str, label: str,
            vmax: float | None = None) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(cols), 1.0 + 0.6 * len(rows)))
    im = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=vmax)
    for i in range(len(rows)):
        for j in range(len(cols)):
            if np.isfinite(matrix[i, j]):
                ax.text(j, i, f"{matrix[i, j]:.1f}" if np.isfinite(matrix[i, j]) else "n/a", ha="center", va="center",
                        fontsize=8, color="w")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_xlabel("target"), ax.set_ylabel("source")
    fig.colorbar(im, ax=ax, label=label, shrink=0.8)
    ax.set_title(title, fontsize=9)
    return _png(fig)


def jpeg_tables(name: str, tables: dict[str, list]) -> bytes:
    import tempfile
    from pathlib import Path

    import torch

    from ..jpeg import standard_tables
    from ..jpeg.plot import plot_tables
    standard = dict(zip(("luma", "chroma"), standard_tables(50)))
    panels = {}
    for kind, table in tables.items():
        panels[f"learned {kind}"] = torch.tensor(table)
        if kind in standard:
            panels[f"standard {kind} (q=50)"] = standard[kind]
    with tempfile.TemporaryDirectory() as tmp:
        path = plot_tables(panels, Path(tmp) / "tables.png", title=f"{name}: learned vs standard tables")
        return Path(path).read_bytes()


CAPTION_CHARS = 24  # characters of a caption line at 6 pt in a 1.35-inch column


def wrapped_caption(caption: str) -> str:
    """Each line of ``caption`` wrapped to :data:`CAPTION_CHARS`, at spaces where it can."""
    return "\n".join(textwrap.fill(line, CAPTION_CHARS, break_on_hyphens=False) for line in caption.split("\n"))


def adversarial_examples(clean: np.ndarray, adversarial: np.ndarray, captions: Sequence[str], title: str) -> bytes:
    """Clean images (top row), their adversarial examples (middle) and the perturbations (bottom,
    each stretched to the full grey range around mid-grey, so that a small one is visible).
    Images are N×C×H×W in [0, 1], C = 1 or 3."""
    plt = _plt()
    n = len(clean)
    # each caption wrapped to its column (long attack labels such as "pgd-20 [bpda-identity]" ran into
    # the next one); constrained layout keeps them clear of the perturbation row below
    captions = [wrapped_caption(caption) for caption in captions]
    fig, axes = plt.subplots(3, n, figsize=(1.35 * n + 0.9, 5.0), squeeze=False, layout="constrained")
    delta = adversarial - clean
    scale = np.abs(delta).reshape(n, -1).max(axis=1).clip(min=1e-12)
    rows = {"clean": clean, "adversarial": adversarial,
            "perturbation\n(stretched)": 0.5 + 0.5 * delta / scale[:, None, None, None]}
    for r, (name, images) in enumerate(rows.items()):
        for i in range(n):
            ax = axes[r][i]
            image = images[i].transpose(1, 2, 0).clip(0, 1)
            ax.imshow(image[..., 0] if image.shape[2] == 1 else image, cmap="gray" if image.shape[2] == 1 else None,
                      vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(name, fontsize=7)
            if r == 1:
                ax.set_xlabel(captions[i], fontsize=6)
    fig.suptitle(title, fontsize=9)
    return _png(fig)


ROLE_COLOURS = {"teacher": "#1f4e79", "student": "#2e8b57", "jpegdl": "#c0504d", "baseline": "#7f7f7f"}


def robustness_scatter(points: dict[str, tuple[float, float, str]], arrows: Sequence[tuple[str, str]],
                       label: str) -> bytes:
    """One point per model (clean accuracy, robust accuracy, role), an arrow from each teacher to each student."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.8))
    for start, end in arrows:
        (x0, y0, _), (x1, y1, _) = points[start], points[end]
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                    arrowprops={"arrowstyle": "->", "color": "#999999", "lw": 1, "shrinkA": 5, "shrinkB": 5})
    for role, colour in ROLE_COLOURS.items():
        mine = [(name, p) for name, p in points.items() if p[2] == role]
        if mine:
            ax.scatter([p[0] for _, p in mine], [p[1] for _, p in mine], color=colour, label=role, zorder=3)
    for name, (x, y, _) in points.items():
        ax.annotate(textwrap.shorten(name, 40), (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("clean accuracy (%)")
    ax.set_ylabel(f"robust accuracy (%), {label}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Robustness vs accuracy", fontsize=10)
    return _png(fig)
