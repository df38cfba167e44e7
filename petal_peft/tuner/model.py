"""Injection of quality-gated dual-LoRA layers into a model, and the model-level API (quality, merging, proxies)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import torch
from peft.tuners.lora import LoraModel
from peft.tuners.tuners_utils import (
    BaseTunerLayer,
    _filter_state_dict_by_key_prefixes,
    _get_tuner_state_dict_key_prefixes,
)
from torch import nn

from ..registry import QUALITY_ESTIMATORS, QUALITY_GATES
from .config import QualityGatedLoraConfig
from .conv import QualityGatedConv2d
from .gated_layer import QualityGatedLayer
from .layer import QualityGatedLinear
from .quality_state import QualityState, capture_quality_for_recompute, validate_quality
from .targets import (
    DEFAULT_TARGET_MODULES,
    default_target_modules,
    linear_layer_summary,
    resolve_default_targets,
    resolve_target_modules,
    unmatched_targets,
)

_PEFT_PREFIX = "base_model.model."


class _EstimateThenGate(nn.Module):
    """pixel_values -> raw score (estimator) -> quality in [0, 1] (gate)."""

    def __init__(self, estimator: nn.Module, gate: nn.Module) -> None:
        super().__init__()
        self.estimator = estimator
        self.gate = gate

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.gate(self.estimator(pixel_values))


class QualityGatedLoraModel(LoraModel):
    """PEFT tuner that turns targeted ``nn.Linear`` layers into :class:`QualityGatedLinear` layers and ``nn.Conv2d``
    layers into :class:`QualityGatedConv2d` layers (chosen by layer type, as PEFT's LoRA does).

    Use it through ``peft.get_peft_model(model, QualityGatedLoraConfig(...))`` after ``import petal_peft``. The
    wrapped model then accepts ``quality=`` (float [B] in [0, 1], 1 = high quality) or ``quality_score=`` (raw
    estimator scores, mapped by the configured gate); with ``quality_estimator`` configured, omitting both computes
    the quality from ``pixel_values``.
    """

    prefix: str = "lora_"
    target_module_mapping = DEFAULT_TARGET_MODULES

    def __init__(self, model: nn.Module, config: Any, adapter_name: str, **kwargs: Any) -> None:
        if any(isinstance(m, QualityGatedLayer) for m in model.modules()):
            raise ValueError(
                f"this {type(model).__name__} already carries a quality-gated adapter: get_peft_model and "
                "PeftModel.from_pretrained change the base model in place, so it cannot take a second one. Load "
                "the adapter onto a fresh copy of the base model (e.g. AutoModel.from_pretrained(...)), or add "
                "another adapter with model.load_adapter(folder, adapter_name=...)."
            )
        # Made before injection (which happens in the base __init__), so every new layer gets the same state.
        object.__setattr__(self, "_quality_state", QualityState())
        object.__setattr__(self, "_quality_fns", {})
        object.__setattr__(self, "_hook_handles", [])
        object.__setattr__(self, "_layer_cache", None)  # (gated layers, checkpointable layers), found once
        super().__init__(model, config, adapter_name, **kwargs)
        self._install_quality_hooks()

    def inject_adapter(self, model: nn.Module, adapter_name: str, *args: Any, **kwargs: Any) -> None:
        config = self.peft_config[adapter_name]
        if isinstance(config, QualityGatedLoraConfig):
            targets_given = config.target_modules is not None
            if not targets_given:
                config.target_modules = resolve_default_targets(model)  # None: _prepare_adapter_config explains
            else:  # a group expression ("stem+attention") becomes its regex, which the saved config then holds
                config.target_modules = resolve_target_modules(model, config.target_modules)
            if targets_given and not kwargs.get("state_dict"):
                missing = unmatched_targets(model, config.target_modules)
                if missing and len(missing) == (
                    1 if isinstance(config.target_modules, str) else len(config.target_modules)
                ):
                    raise ValueError(
                        f"target_modules {missing} match no module of {type(model).__name__}. Its layers "
                        f"include: {linear_layer_summary(model)} (name suffixes, or one regular expression over full "
                        "module names)."
                    )
        super().inject_adapter(model, adapter_name, *args, **kwargs)
        # walked here, outside any forward, so that torch.compile never sees this cache change
        self._refresh_layer_cache()

    # ------------------------------------------------------------------------------------------- injection
    def _prepare_adapter_config(self, peft_config: QualityGatedLoraConfig, model_config: dict) -> Any:
        if not isinstance(peft_config, QualityGatedLoraConfig):
            raise TypeError(f"Expected a QualityGatedLoraConfig, got {type(peft_config).__name__}.")
        if peft_config.target_modules is None:
            model_type = model_config.get("model_type")
            default = default_target_modules(model_type)
            if default is None:
                raise ValueError(
                    f"petal-peft found no attention query/key/value projections in this model (model_type="
                    f"{model_type!r}) to adapt by default. Pass target_modules=[...] naming the linear layers to "
                    "adapt."
                )
            peft_config.target_modules = default
        return peft_config

    def _create_and_replace(self, lora_config, adapter_name, target, target_name, parent, current_key, **kwargs):
        if isinstance(parent, nn.MultiheadAttention):
            raise ValueError(
                f"Target {current_key!r} lives inside nn.MultiheadAttention, which never calls it as a module: an "
                "adapter there would silently do nothing. Narrow target_modules to exclude it."
            )
        super()._create_and_replace(lora_config, adapter_name, target, target_name, parent, current_key, **kwargs)
        new_module = getattr(parent, target_name)
        if isinstance(new_module, QualityGatedLayer):
            new_module.quality_state = self._quality_state

    @staticmethod
    def _create_new_module(lora_config, adapter_name, target, **kwargs):
        base_layer = target.get_base_layer() if isinstance(target, BaseTunerLayer) else target
        name = kwargs.get("target_name")
        if isinstance(target, BaseTunerLayer) and not isinstance(target, QualityGatedLayer):
            raise ValueError(
                f"{name!r} already carries a {type(target).__name__} adapter of another PEFT method; quality-gated "
                "LoRA cannot be stacked on it."
            )
        if isinstance(base_layer, (nn.Conv1d, nn.Conv3d)):
            raise ValueError(
                f"{name!r} is an nn.{type(base_layer).__name__}: quality-gated LoRA adapts nn.Linear and nn.Conv2d "
                "layers only; leave it out of target_modules."
            )
        if not isinstance(base_layer, (nn.Linear, nn.Conv2d)):
            raise ValueError(
                f"Quality-gated LoRA adapts nn.Linear and nn.Conv2d layers only; {name!r} is a "
                f"{type(base_layer).__name__}. Narrow target_modules."
            )
        if lora_config.fan_in_fan_out:
            raise ValueError("fan_in_fan_out=True is for transformers' Conv1D layers; nn.Linear targets need False.")
        for unused in (
            "loaded_in_8bit",
            "loaded_in_4bit",
            "get_apply_tensor_subclass",
            "device_map",
            "tied_adapter",
        ):
            kwargs.pop(unused, None)
        if isinstance(base_layer, nn.Conv2d):
            return QualityGatedConv2d(target, adapter_name, config=lora_config, **kwargs)
        return QualityGatedLinear(target, adapter_name, config=lora_config, **kwargs)

    def add_weighted_adapter(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            "add_weighted_adapter is not supported for quality-gated LoRA: mixing the branches of several adapters "
            "has no defined gate. Merge proxy encoders instead (merge_and_unload(quality=...))."
        )

    def delete_adapter(self, adapter_name: str) -> None:
        super().delete_adapter(adapter_name)
        self._quality_fns.pop(adapter_name, None)
        self._refresh_layer_cache()

    # ------------------------------------------------------------------------------------------- quality
    def _active_config(self, adapter_name: str | None = None) -> QualityGatedLoraConfig:
        name = adapter_name if adapter_name is not None else self.active_adapters[0]
        return self.peft_config[name]

    def quality_function(self, adapter_name: str | None = None) -> nn.Module:
        """The module mapping pixel_values [B, C, H, W] to quality [B], built from the adapter config's settings."""
        name = adapter_name if adapter_name is not None else self.active_adapters[0]
        config = self._active_config(name)
        if config.quality_estimator is None:
            raise ValueError(
                "This adapter has no quality estimator configured; pass quality=... per call or set "
                "QualityGatedLoraConfig(quality_estimator='resolution' | 'brisque' | <registered name>)."
            )
        key = json.dumps(config.gate_settings(), sort_keys=True)
        cached = self._quality_fns.get(name)
        if cached is not None and cached[0] == key:
            return cached[1]
        estimator = QUALITY_ESTIMATORS.build(
            config.quality_estimator,
            image_mean=config.image_mean,
            image_std=config.image_std,
            **config.quality_estimator_kwargs,
        )
        function = _EstimateThenGate(estimator, self._build_gate(config, estimator)).eval()
        self._quality_fns[name] = (key, function)
        return function

    @staticmethod
    def _build_gate(config: QualityGatedLoraConfig, estimator: nn.Module | None) -> nn.Module:
        # an estimator knows its own direction; without one, the config says which way raw scores point
        if estimator is not None:
            higher = bool(getattr(estimator, "higher_is_better", True))
        else:
            higher = config.score_higher_is_better is not False
        gate = QUALITY_GATES.build(
            config.gate_mode,
            threshold=float(config.gate_threshold),
            temperature=float(config.gate_temperature),
            higher_is_better=higher,
        )
        if not getattr(gate, "bounded", True) and not config.allow_unbounded_quality:
            raise ValueError(
                f"gate_mode={config.gate_mode!r} gives quality values outside [0, 1]; opt in with "
                "QualityGatedLoraConfig(allow_unbounded_quality=True) or use a bounded gate ('sigmoid', 'linear')."
            )
        return gate

    def _quality_bounded(self) -> bool:
        return not (self.active_adapters and self._active_config().allow_unbounded_quality)

    @torch.no_grad()
    def estimate_quality(self, pixel_values: torch.Tensor, adapter_name: str | None = None) -> torch.Tensor:
        """Quality [B] in [0, 1] of each image, from the configured estimator and gate (no gradients)."""
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 4:
            shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values)
            raise ValueError(f"`pixel_values` must be a tensor [B, C, H, W] to estimate quality, got {shape}.")
        function = self.quality_function(adapter_name).to(pixel_values.device)
        quality = function(pixel_values.detach())
        return validate_quality(
            quality.float(),
            pixel_values.shape[0],
            pixel_values.device,
            name="estimated quality",
            bounded=self._quality_bounded(),
        )

    def _gate_scores(self, scores: Any, batch: int | None, device: torch.device | None) -> torch.Tensor:
        scores = torch.as_tensor(scores, dtype=torch.float32, device=device)
        if scores.dim() != 1 or (batch is not None and scores.shape[0] != batch):
            raise ValueError(f"`quality_score` must have shape [{batch}], got {tuple(scores.shape)}.")
        if not torch.isfinite(scores).all():
            raise ValueError("`quality_score` contains NaN or infinite values.")
        config = self._active_config()
        estimator = self.quality_function().estimator if config.quality_estimator is not None else None
        gate = self._build_gate(config, estimator).to(scores.device)
        with torch.no_grad():
            return validate_quality(gate(scores).float(), batch, device, bounded=self._quality_bounded())

    def _install_quality_hooks(self) -> None:
        self._remove_quality_hooks()
        self._hook_handles.append(self.model.register_forward_pre_hook(self._quality_pre_hook, with_kwargs=True))
        self._hook_handles.append(
            self.model.register_forward_hook(self._quality_post_hook, with_kwargs=True, always_call=True)
        )

    def _remove_quality_hooks(self) -> None:
        while self._hook_handles:
            self._hook_handles.pop().remove()

    def _quality_pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        quality = kwargs.pop("quality", None)
        scores = kwargs.pop("quality_score", None)
        misspelt = [key for key in kwargs if "qual" in key.lower()]
        if misspelt:
            raise TypeError(f"Unknown keyword argument(s) {misspelt}; did you mean `quality=` or `quality_score=`?")
        pixel_values = kwargs.get("pixel_values")
        if pixel_values is None and args and isinstance(args[0], torch.Tensor):
            pixel_values = args[0]
        batch = pixel_values.shape[0] if isinstance(pixel_values, torch.Tensor) else None
        device = pixel_values.device if isinstance(pixel_values, torch.Tensor) else None
        if quality is not None and scores is not None:
            raise ValueError("Pass either `quality=` or `quality_score=`, not both.")
        if quality is not None:
            value = validate_quality(quality, batch, device, bounded=self._quality_bounded())
        elif scores is not None:
            value = self._gate_scores(scores, batch, device)
        elif pixel_values is not None and self._needs_quality() and self._active_config().quality_estimator:
            value = self.estimate_quality(pixel_values)
        else:
            value = None  # a gated layer that needs it raises a clear error
        self._quality_state.quality = value
        if module.training and torch.is_grad_enabled():
            self._capture_quality_in_checkpointing()
        return args, kwargs

    def _quality_post_hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        self._quality_state.quality = None

    def _refresh_layer_cache(self) -> None:
        modules = list(self.model.modules())
        gated = [m for m in modules if isinstance(m, QualityGatedLayer)]
        checkpointable = [m for m in modules if hasattr(m, "gradient_checkpointing")]
        self._layer_cache = (gated, checkpointable)

    def _layers(self) -> tuple[list[QualityGatedLayer], list[nn.Module]]:
        """The gated layers and the blocks that can be gradient-checkpointed (walked when adapters change)."""
        if self._layer_cache is None:
            self._refresh_layer_cache()
        return self._layer_cache

    def _needs_quality(self) -> bool:
        return any(not m.disable_adapters and not m.merged for m in self._layers()[0])

    def _capture_quality_in_checkpointing(self) -> None:
        # transformers re-runs a checkpointed block's forward during backward; make it see its forward-time quality.
        for layer in self._layers()[1]:
            if getattr(layer, "gradient_checkpointing", False) is True and hasattr(
                layer, "_gradient_checkpointing_func"
            ):
                layer._gradient_checkpointing_func = capture_quality_for_recompute(
                    self._quality_state, layer._gradient_checkpointing_func
                )

    # ------------------------------------------------------------------------------------------- merging
    @contextlib.contextmanager
    def _merge_quality(self, quality: float | None) -> Iterator[None]:
        if quality is None:
            raise ValueError(
                "A quality-gated adapter merges exactly at one fixed quality: pass quality=1.0 for the high-quality "
                "(gallery) encoder, quality=0.0 for the low-quality (probe) encoder, or any value in [0, 1]."
            )
        quality = float(quality)
        if not 0.0 <= quality <= 1.0:
            raise ValueError(f"quality must lie in [0, 1], got {quality}.")
        layers = [m for m in self.model.modules() if isinstance(m, QualityGatedLayer)]
        # PEFT's merge/unload machinery calls layer.merge(safe_merge=..., adapter_names=...): the layers take the
        # quality for those calls from here.
        for layer in layers:
            layer.default_merge_quality = quality
        try:
            yield
        finally:
            for layer in layers:
                layer.default_merge_quality = None

    def merge_adapter(
        self, adapter_names: list[str] | None = None, safe_merge: bool = False, quality: float | None = None
    ) -> None:
        """Merge the active adapters into the base weights at a fixed ``quality`` (undo with unmerge_adapter)."""
        with self._merge_quality(quality):
            super().merge_adapter(adapter_names=adapter_names, safe_merge=safe_merge)

    def merge_and_unload(
        self,
        quality: float | None = None,
        progressbar: bool = False,
        safe_merge: bool = False,
        adapter_names: list[str] | None = None,
    ) -> nn.Module:
        """Merge at a fixed ``quality`` and return the plain base model (exact: the layer is linear in quality)."""
        with self._merge_quality(quality):
            return self._unload_and_optionally_merge(
                progressbar=progressbar, safe_merge=safe_merge, adapter_names=adapter_names
            )

    def _unload_and_optionally_merge(self, *args: Any, **kwargs: Any) -> nn.Module:
        model = super()._unload_and_optionally_merge(*args, **kwargs)
        self._refresh_layer_cache()
        self._remove_quality_hooks()
        return model

    # ------------------------------------------------------------------------------------------- loading
    @classmethod
    def _remap_adapter_state_dict_for_load(cls, model, config, adapter_name, state_dict):
        remapped = super()._remap_adapter_state_dict_for_load(model, config, adapter_name, state_dict)
        model_state = model.state_dict()
        prefixes = _get_tuner_state_dict_key_prefixes(model, adapter_name=adapter_name)
        expected = {k.removeprefix(_PEFT_PREFIX) for k in _filter_state_dict_by_key_prefixes(model_state, prefixes)}
        known = {k.removeprefix(_PEFT_PREFIX) for k in model_state}
        given = {k.removeprefix(_PEFT_PREFIX) for k in remapped}
        unexpected = sorted(given - known)
        missing = sorted(expected - given)
        if unexpected or missing:
            raise ValueError(
                f"The adapter weights for {adapter_name!r} do not match this model: missing {missing[:8]}"
                f"{' ...' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}"
                f"{' ...' if len(unexpected) > 8 else ''}. Was it trained on a different base model or with "
                "different target_modules / r?"
            )
        by_name = {k.removeprefix(_PEFT_PREFIX): v for k, v in model_state.items()}
        for key, tensor in remapped.items():
            target = by_name[key.removeprefix(_PEFT_PREFIX)]
            if tuple(tensor.shape) != tuple(target.shape):
                # lora_A is [r, in(, kh, kw)], lora_B [out, r(, 1, 1)]: a differing rank axis means the config's r
                # does not fit these weights; a differing other axis means a base model with other layer sizes.
                rank_axis = 0 if ".lora_A" in key else 1
                rank_differs = tensor.dim() == target.dim() and tensor.shape[rank_axis] != target.shape[rank_axis]
                cause = (
                    "the adapter config was edited, or belongs to other weights"
                    if rank_differs
                    else "the adapter was trained on a base model with other layer sizes"
                )
                raise ValueError(
                    f"The adapter weight {key.removeprefix(_PEFT_PREFIX)!r} has shape {tuple(tensor.shape)} in the "
                    f"file, but the adapter config (r={config.r}) makes it {tuple(target.shape)} in the model: "
                    f"{cause}."
                )
        return remapped
