"""Configuration of the quality-gated dual-LoRA adapter (PETALface)."""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from peft import LoraConfig
from peft.utils import PeftType

from ..files import apply_umask
from .model_card import add_petal_peft_notice

# Options LoRA offers that this method cannot honour: each one changes the layer math (a LoRA variant), rewrites
# the base weight at init, or targets something that is not a linear layer.
_REFUSED_TRUTHY_OPTIONS: dict[str, str] = {
    "use_dora": "DoRA rescales the merged weight per column, which breaks the linear-in-quality merge",
    "lora_bias": "a LoRA bias would be shared by both quality branches",
    "target_parameters": "only nn.Linear and nn.Conv2d modules can carry the two gated branches",
    "use_qalora": "QA-LoRA is a quantisation-specific variant",
    "use_bdlora": "BD-LoRA is a LoRA variant with its own layer math",
    "alora_invocation_tokens": "aLoRA is a token-activated variant for language models",
    "arrow_config": "Arrow routing is a LoRA variant with its own layer math",
    "velora_config": "VeLoRA is a LoRA variant with its own layer math",
    "monteclora_config": "MonteCLoRA is a LoRA variant with its own layer math",
    "kasa_config": "KaSA rewrites the base weight",
    "layer_replication": "replicated layers cannot be merged into proxy encoders",
    "trainable_token_indices": "token embeddings do not exist in vision encoders",
}
_SUPPORTED_INITS = (True, False, "gaussian")


@dataclass
class QualityGatedLoraConfig(LoraConfig):
    """Configuration for :class:`~petal_peft.QualityGatedLoraModel`.

    Every targeted linear layer computes, per image with quality ``q`` in [0, 1] (1 = high quality)::

        W x + b + s * B_hq A_hq (q x) + s * B_lq A_lq ((1 - q) x),     s = lora_alpha / r

    and every targeted ``nn.Conv2d`` the same with convolutions: ``conv(x) + s Up_hq(Down_hq(q x)) + s Up_lq(
    Down_lq((1 - q) x))``, Down with the layer's kernel, stride, padding, dilation and groups, Up 1x1.
    ``target_modules`` takes names, a regex, or layer groups joined by ``+`` (e.g. ``"stem+default"``; see
    :func:`petal_peft.tuner.targets.resolve_target_modules`).

    All of LoRA's options apply (``r``, ``lora_alpha``, ``target_modules``, ``rank_pattern``, ``modules_to_save``...),
    except those that change the layer math or rewrite the base weight, which are refused with an error. The
    defaults follow the PETALface reference: rank 8, scale 1, dropout 0.1, Gaussian init of A and zero B.
    """

    r: int = field(default=8, metadata={"help": "Rank of EACH of the two branches (the layer holds 2r units)."})
    lora_alpha: int = field(default=8, metadata={"help": "Branch scale s = lora_alpha / r (reference: s = 1)."})
    lora_dropout: float = field(
        default=0.1, metadata={"help": "Dropout probability; where it acts is set by `dropout_position`."}
    )
    init_lora_weights: bool | Literal["gaussian"] = field(
        default="gaussian",
        metadata={
            # keep LoRA's metadata (it lists the init-based LoRA variants PEFT checks for)
            **LoraConfig.__dataclass_fields__["init_lora_weights"].metadata,
            "help": "How A is initialised (B is always zero): 'gaussian' (A ~ N(0, 1/r), the reference), True "
            "(Kaiming uniform, LoRA's default) or False (no init; for tests only). Weight-rewriting inits "
            "(PiSSA, OLoRA, LoftQ, EVA, CorDA...) are refused.",
        },
    )
    dropout_position: Literal["hidden", "input"] = field(
        default="hidden",
        metadata={
            "help": "'hidden': dropout on the 2r low-rank units (cheap, default); 'input': dropout on the layer "
            "input before A, as PEFT's LoRA does (one extra pass over the input)."
        },
    )
    quality_estimator: str | None = field(
        default=None,
        metadata={
            "help": "Name of a registered quality estimator (see petal_peft.registry.QUALITY_ESTIMATORS, e.g. "
            "'resolution' or 'brisque'). When set, model(pixel_values=x) computes the quality itself if "
            "`quality=` is not passed. None: the caller passes `quality=` (or `quality_score=`) on every call."
        },
    )
    quality_estimator_kwargs: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "Extra keyword arguments for the estimator's factory."}
    )
    gate_mode: str = field(
        default="sigmoid",
        metadata={
            "help": "Name of a registered gate mapping a raw score to q in [0, 1]: 'sigmoid' (bounded, monotone, "
            "signed so that q = 1 is high quality), 'linear', 'paper' (the reference rule 0.5 + (score - "
            "threshold), clamped to [0, 1]) or 'linear_unclamped' (the reference rule as trained, signed and NOT "
            "clamped; needs allow_unbounded_quality=True)."
        },
    )
    gate_threshold: float = field(default=0.0, metadata={"help": "Score at which q = 0.5 (fit with calibrate)."})
    score_higher_is_better: bool | None = field(
        default=None,
        metadata={
            "help": "Direction of the raw scores passed as `quality_score=` when no quality_estimator is configured "
            "(with one, the estimator's own direction applies). None: higher is better. A converted PETALface "
            "adapter records its IQA's direction here (False for BRISQUE, True for CNNIQA)."
        },
    )
    allow_unbounded_quality: bool = field(
        default=False,
        metadata={
            "help": "Accept quality values outside [0, 1] (from `quality=` or from an unbounded gate such as "
            "'linear_unclamped'). The PETALface reference never clamps its gate, so running a converted released "
            "model exactly as trained needs this; off by default, because q outside [0, 1] extrapolates the "
            "branches beyond anything a bounded gate produces."
        },
    )
    gate_temperature: float = field(
        default=1.0, metadata={"help": "Score units per logit of the sigmoid gate (> 0; fit with calibrate)."}
    )
    image_mean: list[float] | None = field(
        default=None,
        metadata={"help": "The image processor's normalisation mean, so the estimator can undo it (None: 0.5)."},
    )
    image_std: list[float] | None = field(
        default=None,
        metadata={"help": "The image processor's normalisation std, so the estimator can undo it (None: 0.5)."},
    )

    def __new__(cls, *args: Any, **kwargs: Any) -> QualityGatedLoraConfig:
        # PEFT drops unknown keys of a saved config with only a warning; an adapter config we do not understand
        # must not silently become a different adapter.
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ValueError(
                f"QualityGatedLoraConfig got unknown fields {unknown}. The adapter config was probably written by a "
                "newer petal-peft: update yours from its source repository (pull, then `pip install -e .`)."
            )
        return super().__new__(cls)

    def __post_init__(self) -> None:
        self._refuse_unsupported_options()
        super().__post_init__()
        # LoraConfig.__post_init__ sets peft_type = LORA; loading such a config would silently rebuild plain LoRA.
        self.peft_type = PeftType.QUALITY_GATED_LORA
        self._check_gate_options()

    def _refuse_unsupported_options(self) -> None:
        for name, why in _REFUSED_TRUTHY_OPTIONS.items():
            if getattr(self, name, None):
                raise ValueError(f"QualityGatedLoraConfig does not support `{name}`: {why}.")
        if isinstance(self.init_lora_weights, str) and self.init_lora_weights.lower() == "gaussian":
            self.init_lora_weights = "gaussian"
        if self.init_lora_weights not in _SUPPORTED_INITS:
            raise ValueError(
                f"QualityGatedLoraConfig does not support init_lora_weights={self.init_lora_weights!r}: only "
                f"{_SUPPORTED_INITS} (inits that rewrite the base weight cannot be shared by two branches)."
            )
        if self.dropout_position not in ("hidden", "input"):
            raise ValueError(f"`dropout_position` must be 'hidden' or 'input', got {self.dropout_position!r}.")

    def _check_gate_options(self) -> None:
        if self.quality_estimator is not None and not isinstance(self.quality_estimator, str):
            raise TypeError(
                "`quality_estimator` must be the name of a registered estimator (a string) so that the adapter "
                f"config can be saved; got {type(self.quality_estimator).__name__}. Register a callable with "
                "petal_peft.registry.QUALITY_ESTIMATORS.register(name, factory) and pass its name."
            )
        if not isinstance(self.quality_estimator_kwargs, dict):
            raise TypeError("`quality_estimator_kwargs` must be a dict.")
        if not isinstance(self.gate_mode, str):
            raise TypeError(f"`gate_mode` must be a string, got {type(self.gate_mode).__name__}.")
        if self.score_higher_is_better is not None and not isinstance(self.score_higher_is_better, bool):
            raise TypeError(
                f"`score_higher_is_better` must be True, False or None, got {self.score_higher_is_better!r}."
            )
        if not isinstance(self.allow_unbounded_quality, bool):
            raise TypeError(f"`allow_unbounded_quality` must be a bool, got {self.allow_unbounded_quality!r}.")
        if not float(self.gate_temperature) > 0 or not math.isfinite(float(self.gate_temperature)):
            raise ValueError(f"`gate_temperature` must be a finite number > 0, got {self.gate_temperature}.")
        if not math.isfinite(float(self.gate_threshold)):
            raise ValueError(f"`gate_threshold` must be a finite number, got {self.gate_threshold}.")
        self._check_registered_names()
        for name in ("image_mean", "image_std"):
            value = getattr(self, name)
            if value is None:
                continue
            value = [float(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
            if len(value) not in (1, 3):
                raise ValueError(f"`{name}` must have 1 or 3 values, got {len(value)}.")
            if name == "image_std" and any(v <= 0 for v in value):
                raise ValueError(f"`image_std` values must be > 0, got {value}.")
            setattr(self, name, value)

    def _check_registered_names(self) -> None:
        """The gate and estimator must exist now: an adapter that names an unknown one (a typo, a config from
        elsewhere) is refused when it is built or loaded, not at its first forward."""
        from ..registry import QUALITY_ESTIMATORS, QUALITY_GATES

        if self.gate_mode not in QUALITY_GATES:
            raise ValueError(
                f"`gate_mode` {self.gate_mode!r} is not a registered quality gate; registered: {QUALITY_GATES.names()}."
            )
        if self.quality_estimator is None:
            return
        if self.quality_estimator not in QUALITY_ESTIMATORS:
            raise ValueError(
                f"`quality_estimator` {self.quality_estimator!r} is not a registered quality estimator; registered: "
                f"{QUALITY_ESTIMATORS.names()} (register your own with petal_peft.registry.QUALITY_ESTIMATORS."
                "register(name, factory) before building or loading the adapter)."
            )
        factory = QUALITY_ESTIMATORS.get(self.quality_estimator)
        try:
            inspect.signature(factory).bind(image_mean=None, image_std=None, **self.quality_estimator_kwargs)
        except TypeError as err:
            raise ValueError(
                f"`quality_estimator_kwargs` {self.quality_estimator_kwargs} do not fit the {self.quality_estimator!r} "
                f"estimator ({err})."
            ) from None
        except ValueError:  # no signature available (a builtin): checked when the estimator is built
            pass

    def gate_settings(self) -> dict[str, Any]:
        """The JSON-able settings that rebuild this adapter's quality function."""
        return {
            "quality_estimator": self.quality_estimator,
            "quality_estimator_kwargs": dict(self.quality_estimator_kwargs),
            "gate_mode": self.gate_mode,
            "gate_threshold": float(self.gate_threshold),
            "gate_temperature": float(self.gate_temperature),
            "score_higher_is_better": self.score_higher_is_better,
            "allow_unbounded_quality": self.allow_unbounded_quality,
            "image_mean": self.image_mean,
            "image_std": self.image_std,
        }

    def save_pretrained(self, save_directory: str, **kwargs: Any) -> None:
        """Save adapter_config.json and make sure the folder's model card says how to load it.

        Without `import petal_peft`, PEFT fails with ``KeyError: 'QUALITY_GATED_LORA'`` before any code of ours
        runs, so the card is the one place that can tell a user what to do.
        """
        super().save_pretrained(save_directory, **kwargs)
        add_petal_peft_notice(save_directory)
        # PEFT has written the weights just before (safetensors creates them owner-only): give the folder's
        # files the modes the umask implies, like any other saved file.
        for name in ("adapter_model.safetensors", "adapter_config.json", "README.md"):
            path = os.path.join(save_directory, name)
            if os.path.isfile(path) and not os.path.islink(path):
                apply_umask(path)
