"""Figures: RDM heatmaps and model × ROI bars with confidence intervals and the noise ceiling.

matplotlib with the Agg backend (no display needed); every function writes a PNG and returns its path.
Simulated inputs are labelled SIMULATED in the title.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .rdms import RDMs


def _pyplot():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: str | Path) -> Path:
    import io
    from .files import atomic_write_bytes
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def _rank_percentile(v: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata
    out = np.full_like(v, np.nan)
    ok = np.isfinite(v)
    out[ok] = (rankdata(v[ok]) - 1) / max(1, ok.sum() - 1) * 100
    return out


def plot_rdms(rdms: RDMs | Sequence[RDMs], path: str | Path, titles: Sequence[str] | None = None,
              percentile: bool = True, max_cols: int = 5, show_labels: bool | None = None) -> Path:
    """Heatmaps of RDMs, side by side; ``percentile`` shows rank percentiles (comparable across measures)."""
    plt = _pyplot()
    items: list[tuple[str, np.ndarray, RDMs]] = []
    for r in ([rdms] if isinstance(rdms, RDMs) else list(rdms)):
        for k in range(r.n_rdm):
            items.append((str(r.names[k]), r.vectors[k], r))
    if titles is not None:
        items = [(t, v, r) for t, (_, v, r) in zip(titles, items)]
    n = len(items)
    cols = min(max_cols, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    simulated = any(bool(r.descriptors.get("simulated")) for _, _, r in items)
    for ax, (title, vec, r) in zip(axes.flat, items):
        shown = _rank_percentile(vec) if percentile else vec
        mat = RDMs(shown, r.conditions, r.measure).matrices()[0]
        np.fill_diagonal(mat, np.nan)
        im = ax.imshow(mat, cmap="viridis", interpolation="nearest")
        ax.set_title(title, fontsize=9)
        labels = show_labels if show_labels is not None else r.n_cond <= 24
        if labels:
            ax.set_xticks(range(r.n_cond), r.conditions, rotation=90, fontsize=6)
            ax.set_yticks(range(r.n_cond), r.conditions, fontsize=6)
        else:
            ax.set_xticks([]), ax.set_yticks([])
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.7,
                 label="dissimilarity (percentile)" if percentile else "dissimilarity")
    if simulated:
        fig.suptitle("SIMULATED data", color="crimson")
    out = _save(fig, path)
    plt.close(fig)
    return out


def plot_rsa_bars(rows: Sequence[dict], path: str | Path, method: str = "", title: str = "") -> Path:
    """One panel per ROI: a bar per model with its CI, the noise ceiling as a grey band, * for p_fdr < 0.05."""
    plt = _pyplot()
    rois = list(dict.fromkeys(r["roi"] for r in rows))
    fig, axes = plt.subplots(1, len(rois), figsize=(max(4.0, 0.55 * len({r["model"] for r in rows}) + 2) * len(rois),
                                                   3.8), squeeze=False)
    for ax, roi in zip(axes[0], rois):
        sel = [r for r in rows if r["roi"] == roi]
        x = np.arange(len(sel))
        sim = np.array([r["similarity"] for r in sel])
        lo = np.array([r.get("ci_low", np.nan) for r in sel])
        hi = np.array([r.get("ci_high", np.nan) for r in sel])
        yerr = np.vstack([sim - lo, hi - sim])
        ax.bar(x, sim, color="#4c72b0", yerr=np.where(np.isfinite(yerr), yerr, 0), capsize=3)
        nl, nu = sel[0].get("noise_lower", np.nan), sel[0].get("noise_upper", np.nan)
        if np.isfinite(nl) and np.isfinite(nu):
            ax.axhspan(nl, nu, color="0.8", alpha=0.7, zorder=0, label="noise ceiling")
            ax.legend(loc="upper left", fontsize=7, frameon=False)
        for xi, r in zip(x, sel):
            q = r.get("p_fdr", np.nan)
            if np.isfinite(q) and q < 0.05:
                top = r.get("ci_high", r["similarity"])
                ax.text(xi, (top if np.isfinite(top) else r["similarity"]) + 0.01, "*", ha="center", fontsize=11)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(x, [r["model"] for r in sel], rotation=60, ha="right", fontsize=7)
        ax.set_title(roi, fontsize=10)
        ax.set_ylabel(f"RDM similarity ({method})" if method else "RDM similarity")
    if title:
        fig.suptitle(title)
    out = _save(fig, path)
    plt.close(fig)
    return out


def plot_similarity_matrix(matrix: np.ndarray, labels: Sequence[str], path: str | Path, title: str = "",
                           label: str = "RDM similarity") -> Path:
    """A square heatmap of pairwise similarities (e.g. model × model), values written in the cells."""
    plt = _pyplot()
    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * n, 0.8 + 0.7 * n))
    im = ax.imshow(matrix, cmap="magma", vmin=min(0.0, float(np.nanmin(matrix))), vmax=1.0)
    for i in range(n):
        for j in range(n):
            if np.isfinite(matrix[i, j]):
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if matrix[i, j] < 0.6 else "black")
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    fig.colorbar(im, ax=ax, shrink=0.8, label=label)
    if title:
        ax.set_title(title, fontsize=10)
    out = _save(fig, path)
    plt.close(fig)
    return out
