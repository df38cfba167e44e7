"""The model card of a trained adapter, and publishing the adapter folder on the Hugging Face Hub."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, ModelCard, ModelCardData

from ..tuner.model_card import NOTICE

__all__ = ["adapter_model_card", "baseline_model_card", "push_adapter_folder", "render_model_card"]

_HEADLINE = ("rank-1", "rank-5", "rank-10", "rank-20", "mAP")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _metrics_table(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    """Rank-1, 5, 10, 20 and mAP first; a side that was not measured gets no column and a note instead."""

    def numeric(metrics: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}

    b, a = numeric(before), numeric(after)
    names = [n for n in _HEADLINE if n in a or n in b]
    names += [n for n in (*a, *b) if n not in names]
    names = list(dict.fromkeys(names))
    if not names:
        return "_No evaluation set was given for this run._\n"
    columns = [(label, side) for label, side in (("before training", b), ("after training", a)) if side]
    rows = ["| metric | " + " | ".join(label for label, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for n in names:
        rows.append(f"| {n} | " + " | ".join(_fmt(side[n]) if n in side else "n/a" for _, side in columns) + " |")
    note = "\n_Not evaluated after training: no evaluation set in this run._\n" if not a else ""
    return "\n".join(rows) + "\n" + note


def _table_cell(value: Any) -> str:
    return str(value).replace("|", "\\|")


def render_model_card(
    *,
    model_name: str,
    base_model: str,
    base_model_is_hub_id: bool,
    gate_settings: Mapping[str, Any],
    gate_calibration: str | None = None,
    adapter_settings: Mapping[str, Any],
    training_settings: Mapping[str, Any],
    metrics_before: Mapping[str, Any] | None = None,
    metrics_after: Mapping[str, Any] | None = None,
    eval_dataset_name: str | None = None,
    train_dataset_name: str | None = None,
) -> str:
    """Markdown with YAML front matter: library, base model, tags, model-index; gate settings, metrics, loading.

    ``gate_calibration`` is a sentence on how the gate's threshold and temperature were set.

    ``base_model`` goes into the YAML only when it is a Hub id (a local path would not resolve on the Hub).
    """
    before, after = dict(metrics_before or {}), dict(metrics_after or {})
    data: dict[str, Any] = {
        "library_name": "petal-peft",
        "tags": ["petal-peft", "quality-gated-lora", "peft", "face-recognition", "low-resolution"],
        "pipeline_tag": "image-feature-extraction",
    }
    if base_model_is_hub_id:
        data["base_model"] = base_model
    numeric_after = {k: v for k, v in after.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if numeric_after and eval_dataset_name:
        from ..evaluation import metrics_to_model_index

        data["model-index"] = metrics_to_model_index(numeric_after, model_name, eval_dataset_name)
    card_data = ModelCardData(**data)

    gate_lines = "\n".join(f"| `{k}` | `{v}` |" for k, v in gate_settings.items())
    # a target regex holds "|", which would split the table cell: escaped, it shows as itself
    adapter_lines = "\n".join(f"| `{k}` | `{_table_cell(v)}` |" for k, v in adapter_settings.items())
    train_lines = "\n".join(f"| `{k}` | `{v}` |" for k, v in training_settings.items())
    mode = after.get("mode") or before.get("mode")
    calibration_line = f"\n{gate_calibration}\n" if gate_calibration else ""
    mode_line = f"\nEmbedding mode used for evaluation: `{mode}`.\n" if mode else ""
    text = f"""
# {model_name}

A quality-gated dual-LoRA adapter (PETALface) for low-resolution face recognition, trained with
petal-peft on top of `{base_model}`. Each adapted linear layer has a
high-quality branch weighted by the per-image quality q and a low-quality branch weighted by 1 - q; merged
at q = 1 and q = 0 it gives the paper's gallery and probe proxy encoders. The classification head used for
training is saved next to the adapter (`head.safetensors`, `head_config.json`).

{NOTICE}
To load the training head too: `from petal_peft.heads import load_head; head = load_head("<this folder>")`.

## Gate settings

| setting | value |
|---|---|
{gate_lines}
{calibration_line}
## Adapter

| setting | value |
|---|---|
{adapter_lines}

## Metrics

Evaluation set: {eval_dataset_name or "none"}.{mode_line}
{_metrics_table(before, after)}
## Training

Training data: {train_dataset_name or "not recorded"}.

| setting | value |
|---|---|
{train_lines}
"""
    return str(ModelCard.from_template(card_data, template_str="---\n{{ card_data }}\n---\n" + text))


def push_adapter_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    commit_message: str = "Upload petal-peft adapter",
    token: str | None = None,
) -> str:
    """Create ``repo_id`` (if needed) and upload ``folder`` to it; returns the commit URL.

    The token comes from ``huggingface-cli login`` or ``$HF_TOKEN`` unless given.
    """
    folder = Path(folder)
    if not (folder / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{folder} holds no adapter_config.json: nothing to publish.")
    api = HfApi(token=token)
    api.create_repo(repo_id=repo_id, private=private, exist_ok=True, repo_type="model")
    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model", commit_message=commit_message)
    return str(getattr(info, "commit_url", info))


def adapter_model_card(
    config: Any,
    peft_model: Any,
    *,
    base_name: str,
    base_is_hub_id: bool,
    quality_source: str,
    epochs: float,
    optimizer_steps: int,
    num_processes: int,
    metrics_before: Mapping[str, Any],
    metrics_after: Mapping[str, Any],
    eval_dataset_name: str | None,
    train_dataset_name: str,
    gate_calibration: str | None = None,
) -> str:
    """The README.md of a trained quality-gated adapter: its settings, the run's settings and its metrics.

    Args:
        config: the run's ``FaceAdapterTrainingConfig``.
        peft_model: the trained PeftModel (its active adapter's config is described).
        base_name: the base model's name or path.
        base_is_hub_id: whether ``base_name`` is a Hub id (the card links it).
        quality_source: where training took the quality from.
        epochs: epochs trained.
        optimizer_steps: optimizer steps taken.
        num_processes: processes of the run (for the global batch).
        metrics_before: evaluation before training.
        metrics_after: evaluation after training.
        eval_dataset_name: the evaluation set's name, if evaluated.
        train_dataset_name: a description of the training data.
        gate_calibration: a sentence on how the gate's threshold and temperature were set.

    Returns:
        The card's markdown.
    """
    adapter_config = peft_model.peft_config[peft_model.active_adapter]
    return render_model_card(
        model_name=config.hub_model_id or f"{Path(config.output_dir).name}-adapter",
        base_model=base_name,
        base_model_is_hub_id=base_is_hub_id,
        gate_settings=adapter_config.gate_settings(),
        gate_calibration=gate_calibration,
        adapter_settings={
            "r": adapter_config.r,
            "lora_alpha": adapter_config.lora_alpha,
            "lora_dropout": adapter_config.lora_dropout,
            "target_modules": (  # a regex (default or layer groups) as it is; names sorted
                adapter_config.target_modules
                if isinstance(adapter_config.target_modules, str)
                else sorted(adapter_config.target_modules or [])
            ),
            "quality_source (training)": quality_source,
        },
        training_settings={
            "objective": config.objective,
            "head": config.head if config.objective != "distill" else "none",
            "epochs": epochs,
            "optimizer steps": optimizer_steps,
            "global batch": config.per_device_train_batch_size * num_processes * config.gradient_accumulation_steps,
            "learning_rate": config.learning_rate,
            "weight_decay": config.weight_decay,
            "degrade_fraction": config.degrade_fraction,
            "mixed_precision": config.mixed_precision,
            "seed": config.seed,
        },
        metrics_before=metrics_before,
        metrics_after=metrics_after,
        eval_dataset_name=eval_dataset_name,
        train_dataset_name=train_dataset_name,
    )


def baseline_model_card(config: Any, base_name: str, steps: int, trainable: int, total: int) -> str:
    """A short README for the ungated baselines (plain LoRA, full fine-tuning): what they are and how to load."""
    if config.finetune_method == "lora":
        what = (
            f"PEFT's plain LoRA (rank {2 * config.lora_r}, no quality gate) trained as a baseline for the "
            "quality-gated adapter: same target modules and trainable-parameter count."
        )
        load = "from peft import PeftModel\nmodel = PeftModel.from_pretrained(base_model, folder)"
    else:
        what = "The whole backbone fine-tuned (every weight trained): the full fine-tuning baseline."
        load = "from transformers import AutoModel\nmodel = AutoModel.from_pretrained(folder)"
    return (
        f"# {Path(config.output_dir).name} ({config.finetune_method} baseline)\n\n{what}\n\n"
        f"- base model: `{base_name}`\n- optimizer steps: {steps}\n"
        f"- trainable backbone parameters: {trainable:,} of {total:,} ({100 * trainable / max(total, 1):.3f}%)\n"
        f"- margin head (`head.safetensors`) saved alongside; it is not needed for embeddings.\n\n"
        f"```python\n{load}\n```\n"
    )
