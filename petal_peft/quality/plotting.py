"""Histogram of the quality scores of two image sets with the gate's threshold (and curve) marked."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ..files import write_file_atomic
from .gate import QualityGate


def _values(x: torch.Tensor | Sequence[float], name: str) -> list[float]:
    values = torch.as_tensor(x, dtype=torch.float64).flatten()
    if values.numel() == 0:
        raise ValueError(f"`{name}` is empty; nothing to plot.")
    if not torch.isfinite(values).all():
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    return values.tolist()


def plot_quality_histogram(
    first: torch.Tensor | Sequence[float],
    second: torch.Tensor | Sequence[float],
    path: str | os.PathLike,
    *,
    threshold: float | None = None,
    gate: QualityGate | None = None,
    labels: tuple[str, str] = ("gallery (high quality)", "probe (low quality)"),
    xlabel: str = "quality score",
    title: str | None = None,
    bins: int = 40,
) -> Path:
    """Save a PNG with overlaid histograms of two score sets, the threshold as a line, and the gate's q(score).

    ``threshold`` defaults to ``gate.threshold`` when a gate is given. Written atomically; returns the path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a, b = _values(first, "first"), _values(second, "second")
    if threshold is None and gate is not None:
        threshold = gate.threshold
    low, high = min(min(a), min(b)), max(max(a), max(b))
    if threshold is not None:
        low, high = min(low, threshold), max(high, threshold)
    span = (high - low) or 1.0
    edges = torch.linspace(low - 0.02 * span, high + 0.02 * span, bins + 1).tolist()

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    ax.hist(a, bins=edges, alpha=0.55, label=f"{labels[0]} (n={len(a)})", color="tab:blue")
    ax.hist(b, bins=edges, alpha=0.55, label=f"{labels[1]} (n={len(b)})", color="tab:orange")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1.2, label=f"threshold = {threshold:.4g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("images")
    if gate is not None:
        grid = torch.linspace(edges[0], edges[-1], 400, dtype=torch.float32)
        twin = ax.twinx()
        twin.plot(grid.tolist(), gate(grid).tolist(), color="tab:green", linewidth=1.5, label="gate q(score)")
        twin.set_ylim(-0.02, 1.02)
        twin.set_ylabel("q (1 = high quality)")
        twin.legend(loc="center right", fontsize=8, frameon=False)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    if title:
        ax.set_title(title)
    fig.tight_layout()

    path = Path(path)
    try:
        write_file_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
    return path
