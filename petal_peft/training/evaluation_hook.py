"""Evaluation during training: a callable ``hook(peft_model) -> metrics`` run before, every N steps, and after.

The default hook runs the TinyFace closed-set protocol (petal_peft.evaluation) on a TinyFace-layout folder.
The live adapter is evaluated with its own quality gate when it has an estimator ("gate" mode), else as the
paper's two proxy encoders merged at q = 1 (gallery) and q = 0 (probes). Hooks run inside
:func:`preserved_rng`, so evaluating never changes the random numbers training draws afterwards.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

__all__ = ["EvaluationHook", "PlainTinyFaceEvaluationHook", "TinyFaceEvaluationHook", "preserved_rng"]

#: ``hook(peft_model) -> {metric name: value}``
EvaluationHook = Callable[[nn.Module], dict[str, Any]]


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Restore the torch (CPU and CUDA), numpy and python RNG states on exit."""
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class TinyFaceEvaluationHook:
    """Rank-k identification and mAP of the adapter on a TinyFace-layout folder (probes vs gallery)."""

    def __init__(
        self,
        data_path: str,
        image_size: int,
        image_mean: list[float],
        image_std: list[float],
        *,
        batch_size: int = 64,
        mode: Literal["auto", "gate", "proxy"] = "auto",
        metrics: tuple[str, ...] | None = None,
        progress: bool = False,
    ) -> None:
        from ..embedding.images import ImageTransform
        from ..evaluation import TinyFaceEvaluator

        if mode not in ("auto", "gate", "proxy"):
            raise ValueError(f"mode must be 'auto', 'gate' or 'proxy', got {mode!r}.")
        # Constructing the evaluator checks the folder layout: a bad eval folder fails before training.
        self.evaluator = TinyFaceEvaluator(
            data_path, ImageTransform(size=image_size, mean=tuple(image_mean), std=tuple(image_std))
        )
        self.mode = mode
        self.metrics = metrics or TinyFaceEvaluator.headline_metrics
        self.extractor_kwargs = {"batch_size": batch_size, "progress": progress}
        self.dataset_name = "TinyFace-style"

    def embedder(self, peft_model: nn.Module) -> Any:
        from ..embedding.extractor import adapter_gate_settings, gated_embedder, proxy_embedder_from_adapter

        mode = self.mode
        if mode == "auto":
            mode = "gate" if adapter_gate_settings(peft_model).get("quality_estimator") else "proxy"
        if mode == "gate":
            return gated_embedder(peft_model, **self.extractor_kwargs)
        return proxy_embedder_from_adapter(peft_model, **self.extractor_kwargs)

    def __call__(self, peft_model: nn.Module) -> dict[str, Any]:
        with preserved_rng():
            embedder = self.embedder(peft_model)
            metrics = self.evaluator.run(embedder)
        out = {name: float(metrics[name]) for name in self.metrics if name in metrics}
        out["mode"] = embedder.mode
        return out


class PlainTinyFaceEvaluationHook(TinyFaceEvaluationHook):
    """The TinyFace hook for the ungated baselines: one encoder for probes and gallery alike."""

    def embedder(self, peft_model: nn.Module) -> Any:
        from ..embedding.extractor import plain_embedder

        return plain_embedder(peft_model, **self.extractor_kwargs)
