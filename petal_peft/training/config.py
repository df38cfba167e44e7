"""The training recipe as one dataclass, whose fields are also the command-line flags.

Defaults follow the PETALface TinyFace recipe: CosFace head (s=64, m=0.4), AdamW lr 5e-4,
weight decay 0.1, 2 warmup epochs then linear decay, gradient clipping at 5, rank-8 branches with scale 1 and
dropout 0.1. ``base_model=None`` and ``train_data=None`` select the embedded default (the small pretrained
base and the small face set the project provides), sized to run on a CPU in minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "FINETUNE_METHODS",
    "ConfigHelpFormatter",
    "FaceAdapterTrainingConfig",
    "config_argument_parser",
    "parse_args",
]

QualitySource = Literal["auto", "estimator", "degradation"]
FinetuneMethod = Literal["quality_gated", "lora", "full"]
FINETUNE_METHODS = ("quality_gated", "lora", "full")
Objective = Literal["margin", "distill", "margin+distill"]
HeadInit = Literal["random", "imprint"]


@dataclass
class FaceAdapterTrainingConfig:
    """Everything one training run needs; ``parse_args`` turns each field into a ``--flag``."""

    # ---- model and data ------------------------------------------------------------------------------------
    base_model: str | None = field(
        default=None,
        metadata={
            "help": "Hub id or local folder of the pretrained face transformer (loaded with transformers' "
            "AutoModel). Default: the small pretrained base petal-peft provides (embedded default)."
        },
    )
    train_data: str | None = field(
        default=None,
        metadata={
            "help": "Training images: an identity-per-subfolder folder, a TinyFace root, an insightface "
            "RecordIO (.rec) or a Hugging Face dataset (folder or Hub id). Default: the embedded face set."
        },
    )
    eval_data: str | None = field(
        default=None,
        metadata={
            "help": "TinyFace-layout evaluation folder (Probe/, Gallery_Match/, Gallery_Distractor/) for the "
            "before/after and periodic evaluation. Default: none, or the embedded eval split with the "
            "embedded default."
        },
    )
    output_dir: str = field(
        default="petal-tinyface",
        metadata={"help": "Where checkpoints/, logs/ and the final adapter/ folder are written."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start afresh in an output_dir that holds another run: its checkpoints/ and logs/ are deleted "
            "at the start, its adapter/ is replaced when the new one is saved. Without it such a folder is refused."
        },
    )
    image_size: int | None = field(
        default=None, metadata={"help": "Input size in pixels (default: the base model's config.image_size)."}
    )
    max_train_samples: int | None = field(
        default=None,
        metadata={"help": "Train on N images drawn at random (seeded) from the training set (quick experiments)."},
    )
    horizontal_flip: bool = field(
        default=True,
        metadata={"help": "Flip training images horizontally at random (--no-horizontal-flip: never)."},
    )
    skip_corrupt_images: bool = field(
        default=False,
        metadata={
            "help": "Leave out training images that cannot be read, list them in output_dir/skipped_images.txt "
            "and go on (without it one unreadable image stops the run before training, naming it)."
        },
    )
    # ---- head ------------------------------------------------------------------------------------------------
    head: str = field(
        default="cosface", metadata={"help": "Margin head: 'cosface', 'arcface', 'adaface' or 'combined'."}
    )
    head_scale: float = field(default=64.0, metadata={"help": "Logit scale s of the margin head."})
    head_margin: float | None = field(
        default=None, metadata={"help": "Margin m (default: the head's own, CosFace 0.4, ArcFace 0.5)."}
    )
    # ---- objective -------------------------------------------------------------------------------------------
    objective: Objective = field(
        default="margin",
        metadata={
            "help": "'margin' (the margin head over identities: needs labels), 'distill' (label-free: the embeddings "
            "of each degraded image at its low quality and of the sharp image at its high quality are pulled to "
            "the frozen base's embedding of the sharp image) or 'margin+distill' (margin + distill_weight * distill)."
        },
    )
    distill_weight: float = field(
        default=1.0, metadata={"help": "Weight of the distillation term in --objective margin+distill."}
    )
    head_init: HeadInit = field(
        default="random",
        metadata={
            "help": "How the margin head starts: 'random', or 'imprint' (each row the frozen base's mean sharp "
            "embedding of that identity)."
        },
    )
    teacher_cache: str | None = field(
        default=None,
        metadata={
            "help": "safetensors file of the frozen base's sharp-image embeddings (distillation targets, imprinted "
            "head), reused when base and data match. Default: output_dir/teacher_targets.safetensors."
        },
    )
    # ---- what is trained ---------------------------------------------------------------------------------------
    finetune_method: FinetuneMethod = field(
        default="quality_gated",
        metadata={
            "help": "'quality_gated' (the PETALface adapter), 'lora' (PEFT's plain LoRA of rank 2 * lora_r on the "
            "same target modules: the same trainable-parameter count, no gate) or 'full' (every backbone weight "
            "trained; the baselines of the paper)."
        },
    )
    # ---- adapter (QualityGatedLoraConfig) --------------------------------------------------------------------
    lora_r: int = field(default=8, metadata={"help": "Rank of each of the two quality branches."})
    lora_alpha: int = field(default=8, metadata={"help": "Branch scale s = lora_alpha / lora_r."})
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout inside the adapter branches."})
    target_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "Module names to adapt, or layer groups joined by '+' (e.g. 'stem+attention' on face_conv_vit) "
            "(default: petal-peft's per-architecture default)."
        },
    )
    init_lora_weights: str = field(
        default="gaussian", metadata={"help": "'gaussian' (reference), 'true' (Kaiming) or 'false'."}
    )
    quality_estimator: str | None = field(
        default="resolution",
        metadata={
            "help": "Registered quality estimator (e.g. 'resolution', 'brisque') the adapter gates with; saved with "
            "the adapter, so embed, search, verify and eval can gate each image. 'none': no estimator (quality "
            "then has to be given per image)."
        },
    )
    quality_estimator_kwargs: str = field(
        default="{}", metadata={"help": "JSON object of extra arguments for the quality estimator."}
    )
    gate_mode: str = field(default="sigmoid", metadata={"help": "Registered gate: 'sigmoid' or 'paper'."})
    gate_threshold: float | None = field(
        default=None,
        metadata={
            "help": "Estimator score at which q = 0.5 (default: calibrated at the start of training on sharp "
            "training images against their degraded copies)."
        },
    )
    gate_temperature: float | None = field(
        default=None,
        metadata={"help": "Score units per logit of the gate (default: calibrated with the threshold)."},
    )
    gate_calibration_samples: int = field(
        default=256,
        metadata={
            "help": "Training images the gate is calibrated on (each against a degraded copy). 0: no calibration "
            "and no check (an unset threshold / temperature then stays 0 / 1)."
        },
    )
    quality_source: QualitySource = field(
        default="auto",
        metadata={
            "help": "Per-image quality while training: 'estimator' (the adapter's estimator on the pixels), "
            "'degradation' (the synthetic degradation level of each image), or 'auto' (the estimator when "
            "one is configured, else the degradation level)."
        },
    )
    degrade_fraction: float = field(
        default=0.5,
        metadata={"help": "Fraction of training images made probe-like by LowResolutionDegradation (0..1)."},
    )
    degrade_min_size: int = field(default=8, metadata={"help": "Smallest short side of a degraded image."})
    degrade_max_size: int = field(default=32, metadata={"help": "Largest short side of a degraded image."})
    # ---- optimisation ----------------------------------------------------------------------------------------
    learning_rate: float = field(default=5e-4, metadata={"help": "AdamW peak learning rate."})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay."})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1."})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2."})
    warmup_epochs: float = field(default=2.0, metadata={"help": "Linear warmup length in epochs."})
    warmup_steps: int = field(default=0, metadata={"help": "Warmup length in optimizer steps (overrides epochs)."})
    num_train_epochs: float = field(default=40.0, metadata={"help": "Training length in epochs."})
    max_steps: int = field(default=-1, metadata={"help": "Training length in optimizer steps (overrides epochs)."})
    per_device_train_batch_size: int = field(default=64, metadata={"help": "Batch size per process."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    max_grad_norm: float = field(default=5.0, metadata={"help": "Gradient clipping norm (<= 0: off)."})
    mixed_precision: Literal["no", "fp16", "bf16"] = field(
        default="no", metadata={"help": "Mixed precision through Accelerate."}
    )
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute activations in backward to save memory."}
    )
    use_cpu: bool = field(
        default=False,
        metadata={"help": "Train on CPU even if a GPU is present (multi-process CPU runs are detected anyway)."},
    )
    seed: int = field(default=42, metadata={"help": "Seed of initialisation, data order and dropout."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})
    # ---- checkpoints, logging, evaluation --------------------------------------------------------------------
    checkpointing_steps: int = field(
        default=0, metadata={"help": "Save a resumable checkpoint every N optimizer steps (0: never)."}
    )
    checkpoints_total_limit: int = field(default=2, metadata={"help": "Keep only the newest K checkpoints."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "'latest' or a checkpoint folder to resume from."}
    )
    logging_steps: int = field(default=10, metadata={"help": "Log loss and learning rate every N steps."})
    report_to: Literal["tensorboard", "none"] = field(
        default="tensorboard", metadata={"help": "Metrics tracker (logs go to output_dir/logs)."}
    )
    eval_steps: int = field(default=0, metadata={"help": "Evaluate every N optimizer steps (0: only before/after)."})
    eval_batch_size: int = field(default=64, metadata={"help": "Batch size of evaluation."})
    eval_before_training: bool = field(default=True, metadata={"help": "Evaluate the untrained adapter first."})
    progress_bar: bool = field(default=True, metadata={"help": "Show a tqdm progress bar (main process)."})
    # ---- publishing ------------------------------------------------------------------------------------------
    push_to_hub: bool = field(default=False, metadata={"help": "Upload the final adapter folder to the Hub."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub repository id, e.g. 'user/name'."})
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the Hub repository as private."})

    def __post_init__(self) -> None:
        if isinstance(self.quality_estimator, str) and self.quality_estimator.strip().lower() in ("", "none"):
            self.quality_estimator = None
        problems = []
        positive = ("lora_r", "per_device_train_batch_size", "gradient_accumulation_steps", "eval_batch_size")
        for name in positive:
            if int(getattr(self, name)) < 1:
                problems.append(f"--{_flag(name)} must be >= 1, got {getattr(self, name)}")
        nonnegative = ("checkpointing_steps", "eval_steps", "warmup_steps", "dataloader_num_workers", "seed")
        for name in (*nonnegative, "gate_calibration_samples"):
            if int(getattr(self, name)) < 0:
                problems.append(f"--{_flag(name)} must be >= 0, got {getattr(self, name)}")
        if self.logging_steps < 1:
            problems.append(f"--logging-steps must be >= 1, got {self.logging_steps}")
        if self.checkpoints_total_limit < 1:
            problems.append(f"--checkpoints-total-limit must be >= 1, got {self.checkpoints_total_limit}")
        if not 0.0 <= self.degrade_fraction <= 1.0:
            problems.append(f"--degrade-fraction must be in [0, 1], got {self.degrade_fraction}")
        if not 1 <= self.degrade_min_size <= self.degrade_max_size:
            problems.append(
                f"need 1 <= --degrade-min-size <= --degrade-max-size, got {self.degrade_min_size}, "
                f"{self.degrade_max_size}"
            )
        if not 0.0 <= self.lora_dropout < 1.0:
            problems.append(f"--lora-dropout must be in [0, 1), got {self.lora_dropout}")
        for name in ("learning_rate", "weight_decay", "warmup_epochs", "num_train_epochs", "head_scale"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value < 0:
                problems.append(f"--{_flag(name)} must be a finite number >= 0, got {value}")
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            problems.append("give --num-train-epochs > 0 or --max-steps > 0")
        if self.image_size is not None and self.image_size < 1:
            problems.append(f"--image-size must be >= 1, got {self.image_size}")
        if self.max_train_samples is not None and self.max_train_samples < 2:
            problems.append(f"--max-train-samples must be >= 2, got {self.max_train_samples}")
        if self.init_lora_weights.lower() not in ("gaussian", "true", "false"):
            problems.append(f"--init-lora-weights must be gaussian, true or false, got {self.init_lora_weights!r}")
        try:
            kwargs = json.loads(self.quality_estimator_kwargs or "{}")
            if not isinstance(kwargs, dict):
                raise ValueError
        except ValueError:
            problems.append(f"--quality-estimator-kwargs must be a JSON object, got {self.quality_estimator_kwargs!r}")
        from .objectives import OBJECTIVES, needs_labels

        if self.objective not in OBJECTIVES:
            problems.append(f"--objective must be one of {OBJECTIVES}, got {self.objective!r}")
        elif self.head_init == "imprint" and not needs_labels(self.objective):
            problems.append(f"--head-init imprint needs a margin head: --objective {self.objective} trains none")
        if self.head_init not in ("random", "imprint"):
            problems.append(f"--head-init must be 'random' or 'imprint', got {self.head_init!r}")
        if not math.isfinite(float(self.distill_weight)) or self.distill_weight <= 0:
            problems.append(f"--distill-weight must be a finite number > 0, got {self.distill_weight}")
        if self.finetune_method not in FINETUNE_METHODS:
            problems.append(f"--finetune-method must be one of {FINETUNE_METHODS}, got {self.finetune_method!r}")
        if self.quality_source == "estimator" and not self.quality_estimator:
            problems.append("--quality-source estimator needs --quality-estimator NAME")
        if self.quality_source == "degradation" and self.degrade_fraction == 0:
            problems.append("--quality-source degradation needs --degrade-fraction > 0")
        if self.push_to_hub and not self.hub_model_id:
            problems.append("--push-to-hub needs --hub-model-id user/name")
        if (
            self.finetune_method == "quality_gated"
            and self.quality_source == "auto"
            and not self.quality_estimator
            and self.degrade_fraction == 0
        ):
            problems.append(
                "no per-image quality for the gate: set --quality-estimator NAME (quality from the pixels) or "
                "--degrade-fraction > 0 (the degradation level of each image is its quality)"
            )
        problems += self._unknown_names()
        temperature = self.gate_temperature
        if temperature is not None and not (math.isfinite(temperature) and temperature > 0):
            problems.append(f"--gate-temperature must be a finite number > 0, got {self.gate_temperature}")
        if self.gate_threshold is not None and not math.isfinite(self.gate_threshold):
            problems.append(f"--gate-threshold must be finite, got {self.gate_threshold}")
        if self.target_modules is not None and not [t for t in self.target_modules if str(t).strip()]:
            problems.append("--target-modules needs at least one module name")
        if problems:
            raise ValueError("Invalid training configuration:\n  - " + "\n  - ".join(problems))

    def _unknown_names(self) -> list[str]:
        """Names that must be registered (head, gate, estimator): checked now, not at the first forward."""
        import petal_peft  # noqa: F401  (registers the built-in estimators and gates)

        from ..heads import HEADS
        from ..registry import QUALITY_ESTIMATORS, QUALITY_GATES

        problems = []
        for flag, value, registry in (
            ("head", self.head, HEADS),
            ("gate_mode", self.gate_mode, QUALITY_GATES),
            ("quality_estimator", self.quality_estimator, QUALITY_ESTIMATORS),
        ):
            if value is not None and value not in registry:
                problems.append(f"--{_flag(flag)} must be one of {registry.names()}, got {value!r}")
        if self.head == "combined" and self.head_margin is not None:
            problems.append("--head-margin does not apply to --head combined (its margins are m1, m2, m3)")
        return problems

    # ---- derived values --------------------------------------------------------------------------------------
    @property
    def uses_embedded_default(self) -> bool:
        """True when no base model and no data were given: the project's own small base and face set."""
        return self.base_model is None and self.train_data is None

    def resolved_quality_source(self) -> str:
        """'estimator' or 'degradation' ('none' for the ungated baselines); raises when the gated adapter has
        no way to get a per-image quality."""
        if self.finetune_method != "quality_gated":
            return "none"
        if self.quality_source != "auto":
            return self.quality_source
        if self.quality_estimator:
            return "estimator"
        if self.degrade_fraction > 0:
            return "degradation"
        raise ValueError(
            "No per-image quality for training: set --quality-estimator NAME (the adapter estimates quality "
            "from the pixels) or --degrade-fraction > 0 (the degradation level of each image is its quality)."
        )

    def estimator_kwargs(self) -> dict[str, Any]:
        return dict(json.loads(self.quality_estimator_kwargs or "{}"))

    def init_weights_value(self) -> bool | str:
        value = self.init_lora_weights.lower()
        return {"true": True, "false": False}.get(value, "gaussian")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"


def _flag(name: str) -> str:
    return name.replace("_", "-")


class ConfigHelpFormatter(argparse.HelpFormatter):
    """``--help`` that states each default once: appended as "(default: X)" unless the text already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            not action.option_strings
            or action.default in (None, argparse.SUPPRESS)
            or isinstance(action, argparse._StoreFalseAction)
            or "default" in text.lower()
        ):
            return text
        return f"{text} (default: %(default)s)"


def config_argument_parser(**kwargs: Any) -> argparse.ArgumentParser:
    """The flags of :class:`FaceAdapterTrainingConfig` (``--name`` or ``--name-with-dashes``; booleans also
    ``--no-name``), with help that describes every ``--no-name`` as switching its flag off."""
    from transformers import HfArgumentParser

    kwargs.setdefault("formatter_class", ConfigHelpFormatter)
    parser = HfArgumentParser(FaceAdapterTrainingConfig, **kwargs)
    for action in parser._actions:
        negative = [o for o in action.option_strings if o.startswith("--no-")]
        if negative and isinstance(action, argparse._StoreFalseAction):
            positive = negative[0].replace("--no-", "--", 1).replace("_", "-")
            action.help = f"Switch {positive} off (it is on by default)."
    return parser


def parse_args(argv: list[str] | None = None) -> FaceAdapterTrainingConfig:
    """Parse command-line flags (one per config field, ``--name`` or ``--name-with-dashes``)."""
    parser = config_argument_parser(
        description="Adapt a pretrained face transformer to low-resolution faces with a quality-gated adapter."
    )
    (config,) = parser.parse_args_into_dataclasses(args=argv)
    return config
