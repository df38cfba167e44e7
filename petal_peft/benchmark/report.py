"""The report of a run: a markdown table, the results JSON, CMC curves and the forgetting chart.

Every table and figure carries its data label (``results["data_tag"]``: synthetic identities, or real faces
and their terms).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation import plots
from ..files import to_jsonable, write_file_atomic, write_json_atomic
from .sources.synthetic import SYNTHETIC_NOTE

__all__ = ["data_tag", "format_table", "plot_benchmark_cmc", "plot_forgetting", "write_json", "write_outputs"]

TRAINED_BASELINES = ("pretrained", "full", "lora")


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write through a temporary sibling, then rename; the file gets the umask's mode."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Strict JSON (NaN and infinities written as null), atomically."""
    return write_json_atomic(path, to_jsonable(obj))


def data_tag(results: dict[str, Any]) -> str:
    if results.get("data_tag"):
        return str(results["data_tag"])
    return SYNTHETIC_NOTE if not results.get("real_faces") else "real faces"


def _fmt(ms: Any, sign: bool = False) -> str:
    if ms is None:
        return "—"
    m, sd = ms
    if m is None or not math.isfinite(m):
        return "—"
    return f"{m:+.2f} ± {sd:.2f}" if sign else f"{m:.2f} ± {sd:.2f}"


def _size(n: int) -> str:
    return "—" if n == 0 else (f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB")


def _table_row(label: str, r: dict[str, Any]) -> str:
    params = "0" if not r["trainable_parameters"] else f"{r['trainable_parameters']:,} ({r['trainable_percent']:.2f}%)"
    cells = [
        label,
        _fmt(r.get("eval/rank-1")),
        _fmt(r.get("eval/rank-5")),
        _fmt(r.get("eval/rank-10")),
        _fmt(r.get("eval/mAP")),
        _fmt(r.get("eval/delta_rank-1"), True),
        _fmt(r.get("eval/hr_verification")),
        _fmt(r.get("eval/delta_hr_verification"), True),
        _fmt(r.get("val/rank-1")),
        params,
        _size(r["file_bytes"]),
    ]
    return "| " + " | ".join(cells) + " |"


def run_summary(results: dict[str, Any], written: list[Any]) -> str:
    """What a benchmark script prints at the end: the table, the selected variant, the calibration, the files."""
    return "\n".join(
        [
            "",
            format_table(results),
            f"selected variant (by validation rank-1): {results['selected_variant']}",
            f"gate calibration: {results['gate_calibration']}",
            f"runtime: {results['runtime_s']:.0f} s",
            "wrote:\n  " + "\n  ".join(str(p) for p in written),
        ]
    )


def format_table(results: dict[str, Any]) -> str:
    """Markdown: one row per (method, mode), mean ± std over seeds, eval group (and val rank-1 for selection)."""
    rows = results["rows"]
    sel = results.get("selected_variant")
    seeds = max(r["seeds"] for r in rows.values())
    lines = [
        f"Data: {results.get('data', '')}. Mean ± std over {seeds} seed(s). LR = degraded probes vs sharp gallery "
        f"with distractors (rank-k and mAP, %); HR = sharp 1:1 verification, 10-fold accuracy (%); Δ vs the "
        f"untouched base, paired by seed. Val rank-1 = validation identities (used to pick the best variant, "
        f"marked *).",
        "",
        "| method | LR rank-1 | LR rank-5 | LR rank-10 | LR mAP | Δ rank-1 | HR verif. | Δ HR | val rank-1 | "
        "trainable params (% of base) | weights file |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, r in rows.items():
        lines.append(_table_row(r["label"] + (" *" if key == sel else ""), r))
    if sel and results.get("real_faces"):
        lines.append(_table_row(f"ours, best variant on validation ({rows[sel]['label']})", rows[sel]))
    if results.get("comparisons"):
        lines += ["", "Paired differences (same seed), eval group, mean ± std over seeds:", ""]
        lines += [f"- {k}: {_fmt(v, True)}" for k, v in results["comparisons"].items()]
    note = results.get("synthetic_note") or results.get("data", "")
    if note and "not faces" in str(note):
        lines += ["", f"All numbers above are on {SYNTHETIC_NOTE}."]
    if results.get("terms"):
        lines += ["", str(results["terms"])]
    return "\n".join(lines) + "\n"


def _is_reference(r: dict[str, Any]) -> bool:
    return str(r["method"]).endswith("-reference")


def plot_benchmark_cmc(results: dict[str, Any], path: Path, max_rank: int = 20) -> Path:
    """CMC (eval group, mean over seeds) per (method, mode): dotted references, dashed trained baselines."""
    rows = [r for r in results["rows"].values() if "eval/cmc" in r]
    curves = {r["label"]: np.asarray(r["eval/cmc"]) / 100.0 for r in rows}
    styles = {r["label"]: ":" if _is_reference(r) else "--" if r["method"] in TRAINED_BASELINES else "-" for r in rows}
    title = f"Low-res probes vs high-res gallery, CMC\n({data_tag(results)})"
    return Path(plots.plot_cmc(curves, path, title, max_rank, styles=styles, small=True))


def _bar_colour(r: dict[str, Any]) -> str:
    if _is_reference(r):
        return "tab:green"
    return {"full": "tab:red", "lora": "tab:gray"}.get(r["method"], "tab:blue")


def plot_forgetting(results: dict[str, Any], path: Path) -> Path:
    """Two panels: change of LR rank-1 and of HR verification accuracy vs the untouched base (error = std)."""
    plt = plots.pyplot()
    rows = [r for r in results["rows"].values() if r["method"] != "pretrained" and "eval/delta_rank-1" in r]
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.9 + 0.42 * max(len(rows), 4)))
    labels = [r["label"] for r in rows]
    y = np.arange(len(rows))
    for ax, metric, title in (
        (axes[0], "eval/delta_rank-1", "LR rank-1 change vs the base (points)"),
        (axes[1], "eval/delta_hr_verification", "HR verification change vs the base (points)"),
    ):
        means = [r[metric][0] for r in rows]
        stds = [r[metric][1] for r in rows]
        ax.barh(y, means, xerr=stds, color=[_bar_colour(r) for r in rows], alpha=0.8, capsize=3)
        ax.axvline(0, color="k", lw=0.8)
        if "hr" in metric:
            ax.axvline(-0.5, color="k", lw=0.8, ls=":", label="-0.5 points")
            ax.legend(loc="lower left", fontsize=7)
        ax.set_yticks(y)
        ax.set_yticklabels(labels if ax is axes[0] else [], fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.invert_yaxis()
    fig.suptitle(f"Gain on low resolution vs forgetting on high resolution ({data_tag(results)})", fontsize=10)
    out = Path(plots.save_png(fig, path))
    plt.close(fig)
    return out


def write_outputs(
    results: dict[str, Any],
    out: str | os.PathLike,
    docs_dir: str | os.PathLike | None = None,
    prefix: str = "benchmark",
) -> list[Path]:
    """``<prefix>_table.md``, ``_results.json``, ``_cmc.png``, ``_forgetting.png`` into ``out`` (and ``docs_dir``,
    where the JSON leaves out the per-seed runs)."""
    written = []
    for folder in [Path(out)] + ([Path(docs_dir)] if docs_dir else []):
        folder.mkdir(parents=True, exist_ok=True)
        written.append(write_text_atomic(folder / f"{prefix}_table.md", format_table(results)))
        slim = {k: v for k, v in results.items() if k != "runs"} if docs_dir and folder == Path(docs_dir) else results
        written.append(write_json(folder / f"{prefix}_results.json", slim))
        written.append(plot_benchmark_cmc(results, folder / f"{prefix}_cmc.png"))
        written.append(plot_forgetting(results, folder / f"{prefix}_forgetting.png"))
    return written
