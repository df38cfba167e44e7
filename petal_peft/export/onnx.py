"""ONNX export of an adapted face model: the two proxy encoders and the gated model, checked with onnxruntime.

Parts (each one ``.onnx`` file with a dynamic batch dimension):

* ``gallery_encoder`` / ``probe_encoder``: the adapter merged into the base at q = 1 / q = 0. Plain graphs of the
  base architecture: no adapter cost, no quality input.
* ``gated``: the live adapter; inputs ``pixel_values`` and ``quality`` (float [batch] in [0, 1], 1 = high
  quality), so every image of a batch gets its own mix of the two branches.
* ``gated_estimator``: the adapter's configured quality estimator and gate inside the graph; input
  ``pixel_values`` only, outputs the embedding, the gate value ``quality`` and the raw ``quality_score``.

The exporter is ``torch.onnx.export(dynamo=True)`` (torch.export), the one torch maintains and defaults to since
2.9. The older TorchScript tracer (``dynamo=False``) is deprecated, and on Swin it bakes batch-dependent window
shapes into the graph: its export of a tiny Swin differed from PyTorch by 3-26% at other batch sizes, while the
torch.export graph matched to 3e-7. Every exported part is run under onnxruntime against PyTorch before the
folder is published (see :mod:`.parity`).
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from petal_peft.embedding.loading import describe_model, is_quality_gated, load_adapter, load_base_model
from petal_peft.files import write_json_atomic

from .card import CARD_NAME, EXPORTER, build_card, io_spec, render_card_markdown
from .destination import README_NAME, check_export_destination, export_staging
from .parity import DEFAULT_TOLERANCE, compare_with_torch, parity_batches
from .requirements import require_onnx_exporter

logger = logging.getLogger(__name__)

#: ai.onnx opset of the exported graphs: torch's recommended opset, run by onnxruntime 1.17 and newer
DEFAULT_OPSET = 20


GALLERY_ENCODER, PROBE_ENCODER, GATED, GATED_ESTIMATOR = "gallery_encoder", "probe_encoder", "gated", "gated_estimator"
PARTS = (GALLERY_ENCODER, PROBE_ENCODER, GATED, GATED_ESTIMATOR)
#: batch used to trace; 2 rather than 1, so that torch.export does not specialise the batch dimension to 1
_TRACE_BATCH = 2


class ExportUnsupportedError(ValueError):
    """torch.onnx cannot export this architecture (or this estimator); the message names what failed and where."""


class ExportParityError(ValueError):
    """The exported graph does not compute what PyTorch computes (beyond the tolerance)."""


# ----------------------------------------------------------------------------------------------------
# What is exported: small modules with tensor-only signatures
# ----------------------------------------------------------------------------------------------------


def _default_embed_fn() -> Callable[[Any], torch.Tensor]:
    from petal_peft.embedding.extractor import pooled_embedding

    return pooled_embedding


class EmbeddingEncoder(nn.Module):
    """``pixel_values -> embedding`` for a plain (e.g. merged) model; the embedding is what evaluation uses."""

    def __init__(self, model: nn.Module, embed_fn: Callable[[Any], torch.Tensor] | None = None) -> None:
        super().__init__()
        self.model = model
        self.embed_fn = embed_fn or _default_embed_fn()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.embed_fn(self.model(pixel_values=pixel_values))


class GatedEncoder(nn.Module):
    """``(pixel_values, quality) -> embedding`` for a quality-gated PeftModel.

    The tuner takes ``quality=`` as a keyword that a forward pre-hook moves into the state every gated layer reads;
    this wrapper makes it a positional tensor input the exporter can name.
    """

    def __init__(self, peft_model: nn.Module, embed_fn: Callable[[Any], torch.Tensor] | None = None) -> None:
        super().__init__()
        self.model = peft_model
        self.embed_fn = embed_fn or _default_embed_fn()

    def forward(self, pixel_values: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        return self.embed_fn(self.model(pixel_values=pixel_values, quality=quality))


class SelfGatedEncoder(nn.Module):
    """``pixel_values -> (embedding, quality, quality_score)``: estimator and gate run inside the model."""

    def __init__(
        self,
        peft_model: nn.Module,
        estimator: nn.Module,
        gate: nn.Module,
        embed_fn: Callable[[Any], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.model = peft_model
        self.estimator = estimator
        self.gate = gate
        self.embed_fn = embed_fn or _default_embed_fn()

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        score = self.estimator(pixel_values).float()
        quality = self.gate(score).float()
        embedding = self.embed_fn(self.model(pixel_values=pixel_values, quality=quality))
        return embedding, quality, score

    def expected_given(
        self, pixel_values: torch.Tensor, graph_outputs: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What each stage computes in PyTorch from the exported graph's own previous stage.

        The score is checked against the estimator, the quality against the gate applied to the graph's score, the
        embedding against the adapter run at the graph's quality: near a steep gate's threshold a float32 rounding
        difference in the score moves the quality far more than any export error would.
        """
        score = self.estimator(pixel_values).float()
        quality = self.gate(torch.as_tensor(graph_outputs["quality_score"])).float()
        graph_quality = torch.as_tensor(graph_outputs["quality"])
        embedding = self.embed_fn(self.model(pixel_values=pixel_values, quality=graph_quality))
        return embedding, quality, score


# ----------------------------------------------------------------------------------------------------
# One module -> one .onnx file
# ----------------------------------------------------------------------------------------------------


def _export_failure_summary(err: BaseException) -> str:
    """The exception class, its first line and the user-code line that raised it, from torch.onnx's long report."""
    text = str(err)
    summary = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    match = re.search(r"## Exception summary\s*\n+(.+)", text)
    if match:
        summary = match.group(1).strip()
    where = re.search(r"The following call raised this error:\s*\n\s*(File .+?)\n\s*(.+)", text)
    if where:
        summary += f" (at {where.group(1).strip()}: {where.group(2).strip()})"
    return summary[:600]


def export_module(
    module: nn.Module,
    example_inputs: Sequence[torch.Tensor],
    path: str | os.PathLike,
    input_names: Sequence[str],
    output_names: Sequence[str],
    opset: int = DEFAULT_OPSET,
    what: str = "the model",
) -> Path:
    """Export ``module`` (tensor inputs, dimension 0 = batch on all of them) to ``path`` with a dynamic batch."""
    require_onnx_exporter()
    module = module.eval()
    batch = torch.export.Dim("batch", min=1)
    dynamic_shapes = {name: {0: batch} for name in input_names}
    registration_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration_log.level
    # torch logs one warning per torchvision operator it cannot register; irrelevant to vision transformers
    registration_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            # notes from torch.export about its own internals; nothing a user can act on
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")
            warnings.filterwarnings("ignore", message=".*axis name: batch will not be used.*")
            program = torch.onnx.export(
                module,
                tuple(example_inputs),
                dynamo=True,
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_shapes=dynamic_shapes,
                opset_version=int(opset),
                verbose=False,
            )
    except Exception as err:  # torch.export / onnxscript raise many types; all mean "cannot export this"
        summary = _export_failure_summary(err)
        if "data-dependent" in summary:
            hint = "Python control flow on tensor values cannot be traced by torch.export"
        elif "No ONNX function" in summary:
            hint = "an operator in it has no ONNX translation in torch.onnx"
        else:
            hint = "torch.export or its ONNX translation failed"
        raise ExportUnsupportedError(
            f"cannot export {what} to ONNX with {EXPORTER}: {hint}: {summary}. The standard transformers vision "
            "models (ViT, DeiT, Dinov2, Swin, CLIP, SigLIP, BEiT) export."
        ) from err
    finally:
        registration_log.setLevel(level)
    path = Path(path)
    program.save(str(path))
    return path


# ----------------------------------------------------------------------------------------------------
# The adapted model -> a folder of .onnx files and a card
# ----------------------------------------------------------------------------------------------------


def _source_name(model: Any) -> str:
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    config = getattr(model, "config", None)
    return getattr(config, "_name_or_path", "") or type(model).__name__


def _quality_modules(settings: dict[str, Any]) -> tuple[nn.Module, nn.Module] | tuple[None, None]:
    """(estimator, gate) built from the gate settings, as the tuner builds them; (None, None) without estimator."""
    from petal_peft.quality import quality_fn_from_settings

    function = quality_fn_from_settings(settings)
    if function is None:
        return None, None
    return function.estimator, function.gate


def _part_modules(
    peft_model: nn.Module,
    parts: Sequence[str],
    settings: dict[str, Any],
    high_quality: float,
    low_quality: float,
) -> dict[str, tuple[nn.Module, list[str], list[str], dict[str, Any]]]:
    from petal_peft.tuner.proxy import merged_encoder

    proxies = {
        GALLERY_ENCODER: (high_quality, "proxy encoder for sharp (gallery) images"),
        PROBE_ENCODER: (low_quality, "proxy encoder for low-quality (probe) images"),
    }
    out: dict[str, tuple[nn.Module, list[str], list[str], dict[str, Any]]] = {}
    for part in parts:
        if part in proxies:
            quality, what = proxies[part]
            out[part] = (
                EmbeddingEncoder(merged_encoder(peft_model, quality)),
                ["pixel_values"],
                ["embedding"],
                {"what": f"{what}: the adapter merged into the base weights", "merged_quality": quality},
            )
        elif part == GATED:
            out[part] = (
                GatedEncoder(peft_model),
                ["pixel_values", "quality"],
                ["embedding"],
                {"what": "the live adapter; quality per image in [0, 1] (1 = high quality) mixes the two branches"},
            )
        elif part == GATED_ESTIMATOR:
            estimator, gate = _quality_modules(settings)
            if estimator is None:
                raise ValueError(
                    "the gated_estimator part needs a quality estimator: the adapter config has none; pass "
                    "quality_estimator=... (CLI: --quality-estimator NAME) or leave the part out."
                )
            out[part] = (
                SelfGatedEncoder(peft_model, estimator, gate),
                ["pixel_values"],
                ["embedding", "quality", "quality_score"],
                {
                    "what": "the live adapter with its quality estimator and gate inside the graph",
                    "quality_estimator": settings["quality_estimator"],
                    "quality_estimator_kwargs": settings.get("quality_estimator_kwargs") or {},
                    "gate": {k: settings.get(k) for k in ("gate_mode", "gate_threshold", "gate_temperature")},
                },
            )
        else:
            raise ValueError(f"unknown export part {part!r}; choose from {PARTS}.")
    return out


def export_onnx(
    model: nn.Module | str | os.PathLike,
    adapter: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    *,
    parts: Sequence[str] | None = None,
    opset: int = DEFAULT_OPSET,
    image_size: int | None = None,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    quality_estimator: str | None = None,
    quality_estimator_kwargs: dict[str, Any] | None = None,
    high_quality: float = 1.0,
    low_quality: float = 0.0,
    check: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
    overwrite: bool = False,
) -> dict[str, str]:
    """Export an adapted face model to ``out_dir`` as ONNX; returns ``{part: path}`` plus ``"card"``.

    Args:
        model: a PeftModel with a quality-gated adapter (then ``adapter=None``), or the base model (a module, a
            model folder or a Hub id) that ``adapter`` was trained on.
        adapter: folder of the quality-gated adapter, or None.
        out_dir: output folder, new or empty; the export is staged and moved in when whole. A folder holding
            anything else is refused unless ``overwrite``; then only the export's own files (listed in the card
            of a previous export) are replaced, nothing else in the folder is touched.
        parts: which of :data:`PARTS` to export. Default: the two proxy encoders and ``gated``, plus
            ``gated_estimator`` when the adapter has a quality estimator (skipped with a warning if that
            estimator cannot be exported).
        opset: ai.onnx opset (default :data:`DEFAULT_OPSET`).
        image_size: input size recorded in the card (default: the model config's).
        image_mean: normalisation mean recorded in the card (default: the adapter's or the model folder's, else
            0.5).
        image_std: normalisation std, likewise.
        quality_estimator: override the adapter's estimator for ``gated_estimator``.
        quality_estimator_kwargs: its keyword arguments.
        high_quality: merge quality of the gallery encoder.
        low_quality: merge quality of the probe encoder.
        check: run every part under onnxruntime against PyTorch (random and smooth images, mixed per-image
            qualities, batch 5 and 1) and raise :class:`ExportParityError` beyond ``tolerance``. ``gated_estimator``
            is checked stage by stage (score; gate given the graph's score; embedding given the graph's quality),
            its quality against its [0, 1] range.
        tolerance: the largest relative difference accepted by the check.
        overwrite: write into an existing non-empty folder (see ``out_dir``).
    """
    require_onnx_exporter()
    check_export_destination(out_dir, PARTS if parts is None else parts, overwrite=overwrite)
    base_source = _source_name(model)
    if adapter is not None:
        if isinstance(model, nn.Module) and is_quality_gated(model):
            raise ValueError("`model` already carries a quality-gated adapter; pass adapter=None.")
        base = load_base_model(model)
        peft_model = load_adapter(base, adapter)
    else:
        if not isinstance(model, nn.Module) or not is_quality_gated(model):
            raise TypeError(
                "export_onnx needs a quality-gated adapter: pass a PeftModel made with QualityGatedLoraConfig, or a "
                "base model and the adapter folder."
            )
        peft_model = model.eval()
        base_source = _source_name(peft_model.get_base_model())
    from petal_peft.embedding.builder import gate_settings
    from petal_peft.embedding.runtime import build_transform

    settings = gate_settings(peft_model, quality_estimator, quality_estimator_kwargs)
    base_model = peft_model.get_base_model()
    model_path = base_source if os.path.isdir(base_source) else None
    transform = build_transform(
        base_model,
        model_path,
        image_size=image_size,
        image_mean=image_mean,
        image_std=image_std,
        adapter_settings=settings,
    )
    explicit = parts is not None
    if parts is None:
        parts = [GALLERY_ENCODER, PROBE_ENCODER, GATED] + (
            [GATED_ESTIMATOR] if settings.get("quality_estimator") else []
        )
    parts = list(dict.fromkeys(parts))
    modules = _part_modules(peft_model, parts, settings, float(high_quality), float(low_quality))

    height, width = transform.size
    example = parity_batches((height, width), transform.mean, transform.std, batches=(_TRACE_BATCH,))[1]
    checks = parity_batches((height, width), transform.mean, transform.std) if check else []
    arch = describe_model(base_model)
    entries: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    was_training = peft_model.training
    peft_model.eval()
    try:
        with export_staging(out_dir) as staging, torch.no_grad():
            for part, (module, inputs, outputs, info) in modules.items():
                path = staging / f"{part}.onnx"
                what = f"the {part} part of {arch}"
                try:
                    export_module(module, [example[n] for n in inputs], path, inputs, outputs, opset, what=what)
                except ExportUnsupportedError as err:
                    if part == GATED_ESTIMATOR and not explicit:
                        logger.warning("skipping %s: %s", part, err)
                        skipped[part] = str(err)
                        continue
                    raise
                entry = {"file": path.name, **info, **io_spec(path)}
                if check:
                    chain = isinstance(module, SelfGatedEncoder)
                    worst = compare_with_torch(
                        module,
                        path,
                        checks,
                        inputs,
                        outputs,
                        expected_given=module.expected_given if chain else None,
                        min_scales={"quality": 1.0} if chain else None,
                    )
                    entry["max_relative_difference_vs_torch"] = worst
                    bad = {k: v for k, v in worst.items() if not v <= tolerance}
                    if bad:
                        raise ExportParityError(
                            f"the ONNX export of {part} differs from PyTorch beyond {tolerance:g} "
                            f"(max |onnx - torch| / max |torch|: {bad})."
                        )
                entries[part] = entry
            card = build_card(
                base_source, base_model, adapter, settings, transform, opset, entries, skipped, tolerance, check
            )
            (staging / README_NAME).write_text(render_card_markdown(card), encoding="utf-8")
            card["files"] = sorted([*os.listdir(staging), CARD_NAME])  # what a later --overwrite may replace
            write_json_atomic(staging / CARD_NAME, card)
    finally:
        peft_model.train(was_training)
    out = Path(out_dir)
    paths = {part: str(out / entry["file"]) for part, entry in entries.items()}
    paths["card"] = str(out / CARD_NAME)
    return paths
