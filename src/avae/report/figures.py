"""Figures from tidy results (lists of dicts). Matplotlib with the Agg backend; PNG, written atomically."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from avae.io import atomic_path  # noqa: E402

plt.rcParams.update({"figure.dpi": 110, "axes.spines.top": False, "axes.spines.right": False,
                     "axes.grid": True, "grid.alpha": 0.3, "font.size": 10})


def save_figure(fig, path) -> Path:
    """Write ``fig`` to ``path`` as PNG atomically (a temporary file, then renamed) and close it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)
    return path


def loss_curve(history: list[dict], path, title: str = "") -> Path:
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train (sampled z)")
    val = np.array([h["val_loss"]["mean"] for h in history])
    sem = np.array([h["val_loss"]["sem"] for h in history])
    ax.errorbar(epochs, val, yerr=sem, fmt="s-", capsize=3, label="validation (mean z) ± s.e.")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss per image (nll + KL)")
    ax.set_title(title)
    ax.legend()
    return save_figure(fig, path)


def _to_display(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) -> (N, H, W) or (N, H, W, 3), clipped to [0, 1] for display."""
    arr = images.detach().cpu().float().clamp(0, 1).numpy()
    return arr[:, 0] if arr.shape[1] == 1 else arr.transpose(0, 2, 3, 1)


def image_rows(rows: dict[str, torch.Tensor], path, title: str = "", column_labels=None) -> Path:
    """One row of images per entry of ``rows`` (label -> (N, C, H, W)), same N in each."""
    n = max(r.shape[0] for r in rows.values())
    fig, axes = plt.subplots(len(rows), n, figsize=(0.9 * n + 1.2, 0.95 * len(rows) + 0.4), squeeze=False)
    for r, (label, images) in enumerate(rows.items()):
        shown = _to_display(images)
        for c in range(n):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(shown):
                ax.imshow(shown[c], cmap="gray", vmin=0, vmax=1)
            if c == 0:
                ax.text(-0.08, 0.5, label, transform=ax.transAxes, ha="right", va="center", fontsize=9)
            if r == 0 and column_labels is not None and c < len(column_labels):
                ax.set_title(column_labels[c], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(wspace=0.05, hspace=0.08)
    return save_figure(fig, path)


def lines_with_error(
    series: dict[str, tuple[list, list, list]],
    path,
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    dashed: tuple[str, ...] = (),
    note: str = "",
) -> Path:
    """Line plot of label -> (x, mean, standard error); labels in ``dashed`` drawn dashed."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for label, (x, mean, err) in series.items():
        x, mean, err = map(np.asarray, (x, mean, err))
        style = "--" if label in dashed else "-"
        line, = ax.plot(x, mean, style, marker="o" if label not in dashed else None, label=label, lw=1.8)
        ax.fill_between(x, mean - err, mean + err, color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    if note:
        fig.text(0.01, -0.02, note, fontsize=7, color="0.35", ha="left", va="top", wrap=True)
    return save_figure(fig, path)


def pose_histograms(angles, epochs, labels, classes, shown_epochs, path, title: str = "") -> Path:
    """Histograms of optimised training angles: one row per class, one column per epoch shown.

    angles (E, N) degrees in [0, 360); epochs (E,) 1-based; labels (N,).
    """
    angles, epochs, labels = np.asarray(angles), np.asarray(epochs), np.asarray(labels)
    rows, cols = len(classes), len(shown_epochs)
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols + 0.6, 1.25 * rows + 0.6), squeeze=False,
                             sharex=True)
    bins = np.linspace(0, 360, 37)
    for r, c in enumerate(classes):
        for k, e in enumerate(shown_epochs):
            ax = axes[r, k]
            a = angles[list(epochs).index(e)][labels == c]
            ax.hist(a[np.isfinite(a)], bins=bins, color=f"C{r % 10}", alpha=0.85)
            ax.set_yticks([])
            ax.set_xticks([0, 90, 180, 270, 360])
            if r == 0:
                ax.set_title(f"epoch {e}", fontsize=9)
            if k == 0:
                ax.set_ylabel(f'"{c}"', rotation=0, ha="right", va="center", fontsize=10)
    for ax in axes[-1]:
        ax.set_xlabel("optimised angle (deg)", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
