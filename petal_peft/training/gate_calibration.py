"""Calibrating the gate from the training images at the start of training (and for ``petal-peft calibrate``).

An estimator's raw score lives in its own units (``resolution``: 9-21 "pixels" for faces), so a gate left at
threshold 0 and temperature 1 gives every image q = 1 and the low-quality branch learns nothing. The fix is the
benchmark's recipe: a seeded sample of sharp training images against copies degraded the way training degrades
them, scored by the estimator, and the gate fitted between the two (:func:`~petal_peft.quality.
calibrate_gate_on_images`).
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..data import FaceTransform, LowResolutionDegradation
from .config import FaceAdapterTrainingConfig

__all__ = [
    "UncalibratedGateWarning",
    "calibrate_adapter",
    "calibrate_training_gate",
    "calibration_pairs",
    "config_with_gate",
    "describe_gate",
]

logger = logging.getLogger(__name__)

#: below this width of the q range over the calibration sample, the gate counts as uncalibrated
MIN_QUALITY_RANGE = 0.05


class UncalibratedGateWarning(UserWarning):
    """The gate gives (almost) the same q to sharp and degraded images: one branch will learn nothing."""


def calibration_pairs(
    images: Sequence[Any],
    image_size: int,
    image_mean: Sequence[float],
    image_std: Sequence[float],
    *,
    min_size: int = 8,
    max_size: int = 32,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sharp, degraded): normalised pixel values [N, 3, S, S] of ``images`` (PIL images) and of copies made
    probe-like with the training degradation (every copy degraded, short side ``min_size..max_size`` px).

    Args:
        images: PIL images (any size; resized to ``image_size``).
        image_size: the model's input size.
        image_mean: normalisation mean (3 values).
        image_std: normalisation std (3 values).
        min_size: smallest short side of a degraded copy.
        max_size: largest short side of a degraded copy.
        seed: seeds the degradations.

    Returns:
        The two tensors, row i of both from image i.
    """
    if not images:
        raise ValueError("no images to calibrate the gate on.")
    transform = FaceTransform(image_size=image_size, mean=image_mean, std=image_std)
    degradation = LowResolutionDegradation(min_size=min_size, max_size=max_size, p=1.0, seed=seed)
    sharp, degraded = [], []
    for index, image in enumerate(images):
        # as in training: degraded at the image's own size, then resized to the input size
        sharp.append(transform(image))
        degraded.append(transform(degradation.degrade(image, index=index).image))
    return torch.stack(sharp), torch.stack(degraded)


def _sample_images(dataset: Any, count: int, seed: int) -> list[Any]:
    rng = np.random.default_rng([seed, 0x6A7E])
    pick = np.sort(rng.choice(len(dataset), size=min(count, len(dataset)), replace=False))
    return [dataset.load_image(int(i)) for i in pick]


def calibrate_training_gate(
    config: FaceAdapterTrainingConfig,
    dataset: Any,
    image_size: int,
    image_mean: Sequence[float],
    image_std: Sequence[float],
) -> dict[str, Any] | None:
    """The gate for this run: calibrated on the training data unless the config fixes it, and checked.

    Returns None when there is nothing to calibrate (no quality-gated adapter, or no estimator). Else a dict
    with the gate fields (``gate_mode``, ``gate_threshold``, ``gate_temperature``), ``calibrated`` (whether
    they were fitted here), the fit's diagnostics, and ``quality_range`` ((min, max) q over the sample). A gate
    whose q hardly varies over the sample gives an :class:`UncalibratedGateWarning`.
    """
    from ..quality import calibrate_gate_on_images, gate_quality_range

    if config.finetune_method != "quality_gated" or not config.quality_estimator:
        return None
    if config.gate_calibration_samples == 0:
        return None
    fixed = config.gate_threshold is not None and config.gate_temperature is not None
    images = _sample_images(dataset, config.gate_calibration_samples, config.seed)
    sharp, degraded = calibration_pairs(
        images,
        image_size,
        image_mean,
        image_std,
        min_size=config.degrade_min_size,
        max_size=config.degrade_max_size,
        seed=config.seed,
    )
    gate: dict[str, Any] = {"gate_mode": config.gate_mode, "calibrated": False}
    if fixed:
        gate.update(gate_threshold=float(config.gate_threshold), gate_temperature=float(config.gate_temperature))
    else:
        try:
            fitted = calibrate_gate_on_images(
                sharp,
                degraded,
                config.quality_estimator,
                estimator_kwargs=config.estimator_kwargs(),
                image_mean=image_mean,
                image_std=image_std,
                mode=config.gate_mode if config.gate_mode in ("sigmoid", "linear", "paper") else "sigmoid",
            )
            gate.update(fitted, calibrated=True)
        except ValueError as err:  # e.g. the estimator scores every image alike
            warnings.warn(
                f"the gate could not be calibrated on {len(images)} training images ({err}); it keeps "
                "threshold 0 and temperature 1.",
                UncalibratedGateWarning,
                stacklevel=2,
            )
            gate.update(gate_threshold=0.0, gate_temperature=1.0)
        if config.gate_threshold is not None:
            gate["gate_threshold"] = float(config.gate_threshold)
        if config.gate_temperature is not None:
            gate["gate_temperature"] = float(config.gate_temperature)
    settings = {
        "quality_estimator": config.quality_estimator,
        "quality_estimator_kwargs": config.estimator_kwargs(),
        "gate_mode": gate["gate_mode"],
        "gate_threshold": gate["gate_threshold"],
        "gate_temperature": gate["gate_temperature"],
        "image_mean": list(image_mean),
        "image_std": list(image_std),
    }
    low, high = gate_quality_range(settings, torch.cat([sharp, degraded]))
    gate["quality_range"] = [low, high]
    if high - low < MIN_QUALITY_RANGE:
        warnings.warn(
            f"the gate is not calibrated for this data: q lies in [{low:.3f}, {high:.3f}] for {len(images)} sharp "
            f"training images and their degraded copies alike (--quality_estimator {config.quality_estimator}, "
            f"threshold {gate['gate_threshold']:g}, temperature {gate['gate_temperature']:g}), so one branch "
            "learns nothing. Leave --gate_threshold / --gate_temperature unset to calibrate them on the data.",
            UncalibratedGateWarning,
            stacklevel=2,
        )
    return gate


def config_with_gate(config: FaceAdapterTrainingConfig, gate: dict[str, Any] | None) -> FaceAdapterTrainingConfig:
    """``config`` with the gate fields of ``gate`` (unchanged when None)."""
    if gate is None:
        return config
    return dataclasses.replace(
        config,
        gate_mode=gate["gate_mode"],
        gate_threshold=float(gate["gate_threshold"]),
        gate_temperature=float(gate["gate_temperature"]),
    )


def describe_gate(gate: dict[str, Any]) -> str:
    """One sentence on how the gate was set: calibrated (on how many images, how well separated) or given."""
    values = f"threshold {gate['gate_threshold']:.4g}, temperature {gate['gate_temperature']:.4g}"
    if gate.get("calibrated"):
        text = (
            f"Gate ({gate['gate_mode']}) calibrated on {gate['num_images']} sharp training images against degraded "
            f"copies: {values}; separation AUC {gate['separation_auc']:.3f}, median score "
            f"{gate['score_sharp_median']:.4g} (sharp) vs {gate['score_low_median']:.4g} (degraded)."
        )
    else:
        text = f"Gate ({gate['gate_mode']}) set by hand: {values}."
    if gate.get("quality_range"):
        low, high = gate["quality_range"]
        text += f" q over the calibration sample: {low:.3f}..{high:.3f}."
    return text


def calibrate_adapter(
    model: str,
    adapter: str,
    images: str,
    *,
    quality_estimator: str | None = None,
    quality_estimator_kwargs: dict[str, Any] | None = None,
    gate_mode: str | None = None,
    max_images: int = 256,
    min_size: int = 8,
    max_size: int = 32,
    seed: int = 0,
    image_size: int | None = None,
    write: bool = True,
) -> dict[str, Any]:
    """Calibrate the gate of a saved quality-gated adapter on a folder of sharp face images (what
    ``petal-peft calibrate`` runs); ``adapter_config.json`` is rewritten atomically unless ``write`` is False.

    Args:
        model: the base model (folder or Hub id): gives the input size.
        adapter: the adapter folder.
        images: folder of sharp face images (any tree), like the gallery or the training data.
        quality_estimator: the estimator to calibrate (default: the adapter's); given, it is saved with the gate.
        quality_estimator_kwargs: extra arguments of that estimator.
        gate_mode: ``sigmoid``, ``linear`` or ``paper`` (default: the adapter's when it is one of them).
        max_images: images drawn (seeded) from the folder.
        min_size: smallest short side of a degraded copy.
        max_size: largest short side of a degraded copy.
        seed: seeds the sample and the degradations.
        image_size: input size (default: the model's).
        write: save the result in the adapter's config.

    Returns:
        The calibration (as :func:`petal_peft.quality.calibrate_gate_on_images` returns it) with the previous
        ``gate_threshold`` / ``gate_temperature`` under ``previous``.
    """
    import json
    import os
    from pathlib import Path
    from types import SimpleNamespace

    from ..embedding.images import list_images
    from ..files import write_json_atomic
    from ..quality import calibrate_gate_on_images
    from .modeling import resolve_image_settings

    config_path = Path(adapter) / "adapter_config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"no such adapter: {config_path} does not exist.")
    adapter_config = json.loads(config_path.read_text(encoding="utf-8"))
    if adapter_config.get("peft_type") != "QUALITY_GATED_LORA":
        raise ValueError(f"{adapter} is not a quality-gated adapter (peft_type {adapter_config.get('peft_type')!r}).")
    estimator = quality_estimator or adapter_config.get("quality_estimator")
    if not estimator:
        raise ValueError(f"{adapter} has no quality estimator: name one with --quality-estimator (e.g. resolution).")
    kwargs = (
        dict(quality_estimator_kwargs)
        if quality_estimator
        else dict(adapter_config.get("quality_estimator_kwargs") or {})
    )
    mode = gate_mode or adapter_config.get("gate_mode") or "sigmoid"
    if mode not in ("sigmoid", "linear", "paper"):
        raise ValueError(f"gate mode {mode!r} cannot be calibrated; choose sigmoid, linear or paper.")
    if max_images < 2:
        raise ValueError(f"max_images must be >= 2, got {max_images}.")
    if not os.path.isdir(images):
        raise FileNotFoundError(f"no such folder: {images}")
    files = list_images(images)
    if len(files) < 2:
        raise ValueError(f"{images} holds {len(files)} image(s); calibration needs at least 2.")
    info = resolve_image_settings(SimpleNamespace(base_model=model, image_size=image_size))
    mean = adapter_config.get("image_mean") or info.image_mean
    std = adapter_config.get("image_std") or info.image_std
    rng = np.random.default_rng([seed, 0x6A7E])
    pick = np.sort(rng.choice(len(files), size=min(max_images, len(files)), replace=False))
    from PIL import Image

    loaded = []
    for i in pick:
        with Image.open(files[int(i)]) as img:
            loaded.append(img.convert("RGB"))
    sharp, degraded = calibration_pairs(
        loaded, info.image_size, _three(mean), _three(std), min_size=min_size, max_size=max_size, seed=seed
    )
    gate = calibrate_gate_on_images(
        sharp, degraded, estimator, estimator_kwargs=kwargs, image_mean=mean, image_std=std, mode=mode
    )
    gate["calibrated"] = True
    gate["previous"] = {k: adapter_config.get(k) for k in ("gate_threshold", "gate_temperature")}
    if write:
        adapter_config.update(
            quality_estimator=estimator,
            quality_estimator_kwargs=kwargs,
            gate_mode=gate["gate_mode"],
            gate_threshold=gate["gate_threshold"],
            gate_temperature=gate["gate_temperature"],
        )
        write_json_atomic(config_path, adapter_config)
    return gate


def _three(values: Any) -> list[float]:
    values = [float(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
    return values * 3 if len(values) == 1 else values
