"""The export card: what a deployment needs to know about the exported graphs, as JSON and a short README."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from petal_peft.embedding.loading import describe_model

CARD_NAME = "export_card.json"
CARD_FORMAT = "petal-peft-onnx-export"
EXPORTER = "torch.onnx.export(dynamo=True)"


def io_spec(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Names, element types and shapes (``batch`` for the dynamic one) of a saved model's inputs and outputs."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def spec(values: Any) -> list[dict[str, Any]]:
        out = []
        for value in values:
            tensor = value.type.tensor_type
            dims = [d.dim_param or d.dim_value for d in tensor.shape.dim]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
            out.append({"name": value.name, "dtype": dtype, "shape": dims})
        return out

    return {"inputs": spec(model.graph.input), "outputs": spec(model.graph.output)}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"torch": torch.__version__}
    for name in ("petal-peft", "onnx", "onnxscript", "onnxruntime", "transformers", "peft"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def build_card(
    base_source: str,
    base_model: nn.Module,
    adapter: Any,
    settings: dict[str, Any],
    transform: Any,
    opset: int,
    entries: dict[str, dict[str, Any]],
    skipped: dict[str, str],
    tolerance: float,
    checked: bool,
) -> dict[str, Any]:
    dims = {e["outputs"][0]["shape"][-1] for e in entries.values() if e.get("outputs")}
    return {
        "format": CARD_FORMAT,
        "format_version": 1,
        "exporter": EXPORTER,
        "opset": int(opset),
        "versions": _versions(),
        "source": {
            "base_model": base_source,
            "base_architecture": describe_model(base_model),
            "adapter": None if adapter is None else os.path.abspath(os.fspath(adapter)),
            "gate_settings": settings,
        },
        "preprocessing": {
            "color": "RGB",
            "image_size": list(transform.size),
            "resize": "bilinear to image_size",
            "image_mean": list(transform.mean),
            "image_std": list(transform.std),
            "formula": "pixel_values = (rgb / 255 - image_mean) / image_std, layout [batch, 3, height, width]",
        },
        "embedding": {
            "dim": next(iter(dims)) if len(dims) == 1 else sorted(dims),
            "normalised": False,
            "compare": "flip test as petal-peft embeds: add the embeddings of the image and of its mirror, "
            "L2-normalise, compare by inner product (or squared L2 distance)",
        },
        "models": entries,
        "skipped": skipped,
        "parity": {
            "checked": checked,
            "measure": "max |onnx - torch| / max |torch| per output, onnxruntime CPU",
            "inputs": "random normal and smooth images, per-image qualities mixed in one batch, batch 5 and 1",
            "tolerance": tolerance,
        },
    }


def render_card_markdown(card: dict[str, Any]) -> str:
    """A short human-readable card for the export folder."""
    pre = card["preprocessing"]
    lines = [
        "# ONNX export (petal-peft)",
        "",
        f"Base model: `{card['source']['base_model']}` ({card['source']['base_architecture']}); adapter: "
        f"`{card['source']['adapter']}`. Exported with {card['exporter']}, opset {card['opset']}, dynamic batch.",
        "",
        f"Input: RGB {pre['image_size'][0]}x{pre['image_size'][1]}, `{pre['formula']}` with mean "
        f"{pre['image_mean']} and std {pre['image_std']}.",
        "",
        "| file | inputs | outputs | notes |",
        "|---|---|---|---|",
    ]
    for entry in card["models"].values():
        ins = ", ".join(f"`{i['name']}` {i['shape']}" for i in entry["inputs"])
        outs = ", ".join(f"`{o['name']}` {o['shape']}" for o in entry["outputs"])
        note = entry["what"]
        if "merged_quality" in entry:
            note += f" at q = {entry['merged_quality']}"
        if "max_relative_difference_vs_torch" in entry:
            worst = max(entry["max_relative_difference_vs_torch"].values())
            note += f"; max relative difference vs PyTorch {worst:.1e}"
        lines.append(f"| `{entry['file']}` | {ins} | {outs} | {note} |")
    for part, why in card.get("skipped", {}).items():
        lines += ["", f"Not exported: `{part}`: {why}"]
    lines += [
        "",
        "Embeddings are not normalised: " + card["embedding"]["compare"] + ".",
        "",
    ]
    return "\n".join(lines)


def load_export_card(folder: str | os.PathLike) -> dict[str, Any]:
    """The card of an export folder (raises FileNotFoundError naming the folder)."""
    path = Path(folder) / CARD_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a petal-peft ONNX export: it has no {CARD_NAME}.")
    return json.loads(path.read_text(encoding="utf-8"))
