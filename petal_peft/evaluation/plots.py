"""Plots of evaluation results (matplotlib Agg, PNG): CMC, ROC on a log-FAR axis, quality histograms."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from petal_peft.files import write_file_atomic


def pyplot():
    """matplotlib's pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: str | os.PathLike) -> str:
    """Write ``fig`` as a PNG, atomically, with the umask's mode."""
    write_file_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    return os.fspath(path)


def log_spaced_roc(fpr: np.ndarray, tpr: np.ndarray, num: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """A few hundred ROC points, evenly spaced in log FAR, keeping the step shape (for plots and JSON)."""
    fpr, tpr = np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64)
    positive = fpr[fpr > 0]
    if len(fpr) <= num or len(positive) == 0:
        return fpr, tpr
    grid = np.logspace(np.log10(positive.min()), 0.0, num)
    # Best TAR reachable at FAR <= each grid value: the last ROC index with fpr <= g.
    idx = np.searchsorted(fpr, grid, side="right") - 1
    idx = np.unique(np.clip(idx, 0, len(fpr) - 1))
    return fpr[idx], tpr[idx]


def plot_cmc(
    curves: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    title: str = "CMC",
    max_rank: int = 50,
    *,
    styles: Mapping[str, str] | None = None,
    small: bool = False,
) -> str:
    """CMC curves (identification rate in % against rank), one line per embedding mode or method.

    Args:
        curves: label -> identification rate (a fraction) at ranks 1, 2, ...
        path: the PNG to write.
        title: the plot's title.
        max_rank: the last rank drawn.
        styles: label -> matplotlib line style (default: solid lines).
        small: a wider figure with small legend and title fonts, for many curves.

    Returns:
        ``path``.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5) if small else (5.5, 4))
    for label, cmc in curves.items():
        cmc = np.asarray(cmc)[:max_rank]
        ax.plot(
            np.arange(1, len(cmc) + 1),
            100.0 * cmc,
            (styles or {}).get(label, "-"),
            marker="o",
            markersize=2.5,
            label=f"{label} (R1 {100 * cmc[0]:.{1 if small else 2}f})",
        )
    ax.set_xlabel("rank")
    ax.set_ylabel("identification rate (%)")
    ax.set_title(title, fontsize=9 if small else None)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=7 if small else None)
    path = save_png(fig, path)
    plt.close(fig)
    return path


def plot_roc(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: str | os.PathLike,
    title: str = "ROC",
    mark_fars: tuple[float, ...] = (),
) -> str:
    """ROC curves with FAR on a log axis (points at FAR = 0 cannot be drawn there and are left out)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for label, (fpr, tpr) in curves.items():
        fpr, tpr = log_spaced_roc(fpr, tpr)
        keep = fpr > 0
        few = int(keep.sum()) < 20  # a near-perfect ROC has very few points: show them
        ax.step(fpr[keep], 100.0 * tpr[keep], where="post", marker="o" if few else None, label=label)
    for far in mark_fars:
        ax.axvline(far, color="grey", lw=0.5, ls=":")
    ax.set_xscale("log")
    ax.set_ylim(0.0, 101.0)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right")
    path = save_png(fig, path)
    plt.close(fig)
    return path


def plot_q_by_group(
    groups: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    title: str = "quality q per image",
    bins: int = 30,
) -> str:
    """Histograms of q in [0, 1] per group (e.g. gallery vs probe), overlaid and normalised to densities."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    edges = np.linspace(0.0, 1.0, bins + 1)
    for label, values in groups.items():
        values = np.asarray(values, dtype=np.float64)
        ax.hist(
            values,
            bins=edges,
            alpha=0.5,
            density=True,
            label=f"{label} (n={len(values)}, mean {values.mean():.3f})",
        )
    ax.set_xlabel("q (1 = high quality)")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend()
    path = save_png(fig, path)
    plt.close(fig)
    return path
