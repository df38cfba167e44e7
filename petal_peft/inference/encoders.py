"""Which network embeds the images: the live adapter with per-image quality, a proxy encoder, or the base.

Flip fusion, normalisation and batching are :class:`~petal_peft.embedding.EmbeddingExtractor`'s, and the network
comes from :func:`~petal_peft.embedding.builder.build_embedder` (the modes evaluation uses); this module only
adds the inputs of the command line and records the quality of every image (and of its mirror): the raw score of
the estimator and, where the adapter's calibrated gate is known, the gate value q in [0, 1].
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from petal_peft.embedding.builder import MODE_ALIASES, build_embedder, gate_settings, with_quality_estimator
from petal_peft.embedding.extractor import EmbeddingExtractor, load_proxy_encoders
from petal_peft.embedding.images import ImageTransform
from petal_peft.embedding.loading import load_adapter, load_base_model
from petal_peft.embedding.runtime import build_transform, resolve_device

#: the modes of :mod:`petal_peft.embedding.builder` that embed every image alike (``proxy`` picks by role):
#: ``gate``: live adapter, quality estimated per image; ``gallery`` / ``probe``: the adapter merged at q = 1 / 0;
#: ``plain``: the base model without adapter
ENCODERS = ("gate", "gallery", "probe", "plain")


class QualityRecorder:
    """``q = gate(estimator(x))``, keeping the raw scores of each call (gate optional: then scores only)."""

    def __init__(self, estimator: nn.Module, gate: nn.Module | None) -> None:
        self.estimator = estimator.eval()
        self.gate = None if gate is None else gate.eval()
        self._scores: list[torch.Tensor] = []

    @torch.no_grad()
    def score(self, pixel_values: torch.Tensor) -> torch.Tensor:
        self.estimator.to(pixel_values.device)
        return self.estimator(pixel_values.float()).float()

    @torch.no_grad()
    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The gate value of each image (what the gated model is given); the score is kept for :meth:`take`."""
        if self.gate is None:
            raise ValueError("this quality recorder has no calibrated gate; it can only score.")
        score = self.score(pixel_values)
        self._scores.append(score.cpu())
        return self.gate.to(score.device)(score).float()

    def take(self) -> list[torch.Tensor]:
        scores, self._scores = self._scores, []
        return scores


@dataclass
class FaceEncoder:
    """An extractor (flip test, normalisation) plus the preprocessing and quality recording that go with it."""

    extractor: EmbeddingExtractor
    transform: ImageTransform
    encoder: str
    recorder: QualityRecorder | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return self.extractor.batch_size

    @torch.no_grad()
    def embed_batch(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        """Rows of the index for one batch: embeddings, norms and, when recorded, quality scores and gate values."""
        result = self.extractor.embed_batch(pixel_values)
        out = {"embeddings": result.embeddings, "norms": result.norms}
        if self.recorder is None:
            return out
        flip = self.extractor.flip
        if self.extractor.quality_fn is self.recorder:  # gate mode: the extractor already called it
            scores = self.recorder.take()
            gates = [result.quality, result.quality_flipped]
        else:
            views = [pixel_values] + ([torch.flip(pixel_values, dims=[-1])] if flip else [])
            scores = [self.recorder.score(v).cpu() for v in views]
            gates = [self.recorder.gate(s) for s in scores] if self.recorder.gate is not None else [None, None]
        out["quality_score"] = scores[0]
        if flip:
            out["quality_score_flipped"] = scores[1]
        if gates[0] is not None:
            out["gate"] = gates[0].float()
            if flip:
                out["gate_flipped"] = gates[1].float()
        return out


def _quality_recorder(settings: dict[str, Any] | None, calibrated: bool) -> QualityRecorder | None:
    from petal_peft.quality import quality_fn_from_settings

    function = quality_fn_from_settings(settings)
    if function is None:
        return None
    return QualityRecorder(function.estimator, function.gate if calibrated else None)


def build_face_encoder(
    model: str | os.PathLike | nn.Module,
    *,
    adapter: str | os.PathLike | None = None,
    proxy_encoders: str | os.PathLike | None = None,
    encoder: str | None = None,
    quality_estimator: str | None = None,
    quality_estimator_kwargs: dict[str, Any] | None = None,
    flip: bool = True,
    batch_size: int = 64,
    device: str | None = "auto",
    dtype: str = "float32",
    image_size: int | None = None,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
) -> FaceEncoder:
    """The encoder for ``petal-peft embed`` / ``search`` / ``verify``.

    ``encoder`` defaults to ``gate`` with an adapter (which then needs a quality estimator, its own or
    ``quality_estimator``), and to ``plain`` without adapter; ``--proxy-encoders`` folders need ``gallery`` or
    ``probe`` to say which of the two to use.
    """
    if adapter is not None and proxy_encoders is not None:
        raise ValueError("pass either an adapter (--adapter) or exported proxy encoders (--proxy-encoders), not both.")
    if encoder is None:
        if proxy_encoders is not None:
            raise ValueError("with --proxy-encoders, say which one embeds these images: --encoder gallery or probe.")
        encoder = "gate" if adapter is not None else "plain"
    encoder = MODE_ALIASES.get(encoder, encoder)
    if encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {encoder!r}; choose from {ENCODERS}.")
    if encoder != "plain" and adapter is None and proxy_encoders is None:
        raise ValueError(f"--encoder {encoder} needs an adapter (--adapter) or proxy encoders (--proxy-encoders).")
    if encoder == "gate" and adapter is None:
        raise ValueError("--encoder gate needs the adapter (--adapter): proxy encoders have no gate.")
    if encoder == "plain" and (adapter is not None or proxy_encoders is not None):
        raise ValueError("--encoder plain embeds with the base model alone; leave out --adapter / --proxy-encoders.")
    if dtype not in ("float32", "float16", "bfloat16"):
        raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype!r}.")
    torch_dtype = getattr(torch, dtype)
    dev = resolve_device(device)
    from .provenance import adapter_file_fingerprint, base_model_fingerprint, proxy_adapter_fingerprint, weights_record

    if isinstance(model, nn.Module):
        base = model.eval()
        base_fingerprint = base_model_fingerprint(base)
    else:  # loaded in float32 and fingerprinted, then cast: the fingerprint does not depend on --dtype
        base = load_base_model(model, dtype=torch.float32)
        base_fingerprint = base_model_fingerprint(base)
        base = base.to(torch_dtype)
    adapter_weights = proxy_adapter_fingerprint(proxy_encoders) if proxy_encoders is not None else None
    model_path = os.fspath(model) if isinstance(model, (str, os.PathLike)) else None
    if model_path is not None and os.path.isdir(model_path):
        model_path = os.path.abspath(model_path)

    settings: dict[str, Any] | None = None
    peft_model: nn.Module | None = None
    if adapter is not None:
        peft_model = load_adapter(base, adapter)  # names a damaged adapter before its file is fingerprinted
        adapter_weights = adapter_file_fingerprint(adapter)
        settings = gate_settings(peft_model)
    settings = with_quality_estimator(settings, quality_estimator, quality_estimator_kwargs)
    recorder = _quality_recorder(settings, calibrated=adapter is not None)

    if encoder == "gate" and recorder is None:
        raise ValueError(
            "the adapter has no quality estimator, so the gate has nothing to go on: pass --quality-estimator "
            "NAME (e.g. resolution), or embed with a proxy encoder (--encoder gallery | probe)."
        )
    proxies = load_proxy_encoders(proxy_encoders, dtype=torch_dtype) if proxy_encoders is not None else None
    embedder = build_embedder(
        encoder,
        base if encoder == "plain" else peft_model,
        proxies=proxies,
        quality_fn=recorder if encoder == "gate" else None,
        flip=flip,
        batch_size=batch_size,
        device=dev,
        progress=False,
    )
    extractor = embedder.extractor("gallery")
    transform = build_transform(
        base, model_path, image_size=image_size, image_mean=image_mean, image_std=image_std, adapter_settings=settings
    )
    info = {
        "base_model": model_path if model_path is not None else type(base).__name__,
        "adapter": None if adapter is None else os.path.abspath(os.fspath(adapter)),
        "proxy_encoders": None if proxy_encoders is None else os.path.abspath(os.fspath(proxy_encoders)),
        "encoder": encoder,
        "flip_test": bool(flip),
        "dtype": dtype,
        "quality": None
        if recorder is None
        else {"settings": settings, "gate_values": recorder.gate is not None, "gate_applied": encoder == "gate"},
        "transform": {"size": list(transform.size), "mean": list(transform.mean), "std": list(transform.std)},
        "weights": weights_record(base_fingerprint, adapter_weights if encoder != "plain" else None),
    }
    return FaceEncoder(extractor, transform, encoder, recorder, info)
