"""Turning images into flip-fused, L2-normalised face embeddings, and the ways to do it with a gated adapter.

An :class:`EmbeddingExtractor` runs one model over a dataset (batched, no gradients, progress bar). An
:class:`Embedder` decides which extractor serves which role (gallery, probe, or either side of a verification
pair), which is how the two ways of using a quality-gated adapter are compared:

* ``gate`` (:func:`gated_embedder`): the adapter stays live and each image, its mirrored copy included, gets
  its own quality q from the quality function;
* ``proxy`` (:func:`proxy_embedder_from_adapter` / :func:`load_proxy_encoders`): the adapter merged at q = 1
  (gallery encoder) and at q = 0 (probe encoder): two plain models, no quality estimation at test time.
"""

from __future__ import annotations

import copy
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from tqdm.auto import tqdm

from .vectors import fuse_flip, l2_normalize

EmbedFn = Callable[[Any], torch.Tensor]
QualityFn = Callable[[torch.Tensor], torch.Tensor]

ROLES = ("gallery", "probe", "pair")


def pooled_embedding(output: Any) -> torch.Tensor:
    """The embedding in a model output: ``pooler_output`` when present, else the CLS token of the last layer.

    A plain tensor is taken as the embedding itself (a face backbone returning [B, D]).
    """
    if isinstance(output, torch.Tensor):
        emb = output
    else:
        pooled = getattr(output, "pooler_output", None)
        if pooled is None and isinstance(output, Mapping):
            pooled = output.get("pooler_output")
        if pooled is not None:
            emb = pooled
        else:
            hidden = getattr(output, "last_hidden_state", None)
            if hidden is None and isinstance(output, Mapping):
                hidden = output.get("last_hidden_state")
            if hidden is None:
                raise TypeError(
                    f"cannot find an embedding in a {type(output).__name__}: expected a tensor, "
                    "`pooler_output` or `last_hidden_state`; pass embed_fn=... to say where it is."
                )
            emb = hidden[:, 0] if hidden.dim() == 3 else hidden
    if emb.dim() > 2:
        emb = emb.flatten(1)
    return emb


@dataclass
class Embeddings:
    """Embeddings of a dataset, in dataset order.

    ``embeddings`` are unit rows (flip-fused when flip test is on); ``norms`` the norm of the fused raw
    feature (IJB weighs media by it); ``quality`` / ``quality_flipped`` the q of each image and of its
    mirror when a quality function ran, else None.
    """

    embeddings: torch.Tensor
    norms: torch.Tensor
    quality: torch.Tensor | None = None
    quality_flipped: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def raw(self) -> torch.Tensor:
        """The fused features with their norm kept."""
        return self.embeddings * self.norms[:, None]


def _check_quality(q: Any, batch: int, bounded: bool = True) -> torch.Tensor:
    if not isinstance(q, torch.Tensor):
        raise TypeError(f"the quality function must return a tensor [batch], got {type(q).__name__}.")
    q = q.reshape(-1) if q.dim() == 2 and q.shape[1] == 1 else q
    if q.shape != (batch,):
        raise ValueError(f"the quality function returned shape {tuple(q.shape)} for a batch of {batch} images.")
    if not q.is_floating_point() or not torch.isfinite(q).all():
        raise ValueError("the quality function returned non-float or non-finite values.")
    if bounded and ((q < 0).any() or (q > 1).any()):
        raise ValueError(
            f"the quality function returned values in [{float(q.min()):.4g}, {float(q.max()):.4g}], outside [0, 1] "
            "(only an adapter with allow_unbounded_quality=True takes such values)."
        )
    return q


class EmbeddingExtractor:
    """Embed a dataset with one model: batched, under ``torch.no_grad``, with a progress bar.

    ``quality_fn`` (pixel_values -> q in [0, 1]) runs on every batch, flipped batch included; with
    ``pass_quality`` the q is passed to the model as ``quality=`` (the gated adapter), otherwise it is only
    recorded (for the quality histogram). ``quality_bounded=False`` lets q leave [0, 1], for an adapter that opted
    in (``allow_unbounded_quality``, the reference's unclamped gate).
    """

    def __init__(
        self,
        model: nn.Module | Callable[..., Any],
        *,
        embed_fn: EmbedFn | None = None,
        quality_fn: QualityFn | None = None,
        pass_quality: bool = True,
        flip: bool = True,
        batch_size: int = 64,
        num_workers: int = 0,
        device: str | torch.device | None = None,
        progress: bool = True,
        name: str = "",
        quality_bounded: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.model = model
        self.embed_fn = embed_fn or pooled_embedding
        self.quality_fn = quality_fn
        self.pass_quality = pass_quality
        self.quality_bounded = quality_bounded
        self.flip = flip
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.progress = progress
        self.name = name
        params = list(model.parameters()) if isinstance(model, nn.Module) else []
        self.device = torch.device(device) if device is not None else (params[0].device if params else None)
        self.dtype = params[0].dtype if params else torch.float32
        if isinstance(model, nn.Module) and self.device is not None and params and params[0].device != self.device:
            model.to(self.device)

    def _features(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        q = None
        if self.quality_fn is not None:
            q = _check_quality(self.quality_fn(pixel_values), pixel_values.shape[0], self.quality_bounded)
        x = pixel_values.to(self.dtype)
        out = (
            self.model(pixel_values=x, quality=q)
            if (q is not None and self.pass_quality)
            else self.model(pixel_values=x)
        )
        feats = self.embed_fn(out).float()
        if feats.dim() != 2 or feats.shape[0] != pixel_values.shape[0]:
            raise ValueError(
                f"the embedding must be [batch, dim]; got {tuple(feats.shape)} for {pixel_values.shape[0]} images."
            )
        if not torch.isfinite(feats).all():
            raise ValueError(f"the model{' ' + self.name if self.name else ''} produced NaN or infinite embeddings.")
        return feats, q

    @torch.no_grad()
    def embed_batch(self, pixel_values: torch.Tensor) -> Embeddings:
        """Embed one batch [B, 3, H, W] (already normalised)."""
        if pixel_values.dim() != 4:
            raise ValueError(f"pixel_values must be [batch, channels, height, width], got {tuple(pixel_values.shape)}.")
        if self.device is not None:
            pixel_values = pixel_values.to(self.device)
        feats, q = self._features(pixel_values)
        if self.flip:
            feats_f, q_f = self._features(torch.flip(pixel_values, dims=[-1]))
            emb, norms = fuse_flip(feats, feats_f)
        else:
            emb, norms, q_f = l2_normalize(feats), feats.norm(dim=-1), None
        return Embeddings(
            emb.cpu(),
            norms.cpu(),
            None if q is None else q.float().cpu(),
            None if q_f is None else q_f.float().cpu(),
        )

    def __call__(self, images: Dataset | torch.Tensor, desc: str | None = None) -> Embeddings:
        """Embed every image of a dataset (items: tensors [3, H, W]) or of a tensor [N, 3, H, W]."""
        dataset = TensorDataset(images) if isinstance(images, torch.Tensor) else images
        if len(dataset) == 0:
            raise ValueError("no images to embed.")
        loader = DataLoader(dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)
        was_training = getattr(self.model, "training", False)
        if isinstance(self.model, nn.Module):
            self.model.eval()
        parts: list[Embeddings] = []
        try:
            for batch in tqdm(loader, desc=desc or f"embedding {self.name}".strip(), disable=not self.progress):
                if isinstance(batch, (list, tuple)):
                    batch = batch[0]
                parts.append(self.embed_batch(batch))
        finally:
            if was_training and isinstance(self.model, nn.Module):
                self.model.train()
        return Embeddings(
            torch.cat([p.embeddings for p in parts]),
            torch.cat([p.norms for p in parts]),
            None if parts[0].quality is None else torch.cat([p.quality for p in parts]),
            None if parts[0].quality_flipped is None else torch.cat([p.quality_flipped for p in parts]),
        )


class Embedder(ABC):
    """Chooses the extractor for a role: ``"gallery"``, ``"probe"`` or ``"pair"`` (a 1:1 pair's sides)."""

    mode: str = ""

    @abstractmethod
    def extractor(self, role: str) -> EmbeddingExtractor: ...

    def embed(self, images: Dataset | torch.Tensor, role: str = "pair", desc: str | None = None) -> Embeddings:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}.")
        return self.extractor(role)(images, desc=desc or f"{self.mode}: {role}")

    def describe(self) -> dict[str, Any]:
        return {"mode": self.mode}


class SingleEncoderEmbedder(Embedder):
    """One model for every role (a plain model, or a gated adapter with per-image quality)."""

    def __init__(self, extractor: EmbeddingExtractor, mode: str = "plain") -> None:
        self._extractor = extractor
        self.mode = mode

    def extractor(self, role: str) -> EmbeddingExtractor:
        return self._extractor


class ProxyEncoderEmbedder(Embedder):
    """The high-quality encoder for the gallery, the low-quality encoder for probes.

    Verification pairs have no gallery/probe side, so ``pair_role`` says which encoder embeds them
    (default: the gallery, i.e. high-quality, encoder).
    """

    mode = "proxy"

    def __init__(self, gallery: EmbeddingExtractor, probe: EmbeddingExtractor, pair_role: str = "gallery") -> None:
        if pair_role not in ("gallery", "probe"):
            raise ValueError(f"pair_role must be 'gallery' or 'probe', got {pair_role!r}.")
        self.gallery, self.probe, self.pair_role = gallery, probe, pair_role

    def extractor(self, role: str) -> EmbeddingExtractor:
        role = self.pair_role if role == "pair" else role
        return self.gallery if role == "gallery" else self.probe

    def describe(self) -> dict[str, Any]:
        return {"mode": self.mode, "pair_role": self.pair_role}


# ----------------------------------------------------------------------------------------------------
# Building embedders from models
# ----------------------------------------------------------------------------------------------------


def build_quality_fn(settings: Mapping[str, Any]) -> QualityFn:
    """The quality function q = gate(estimator(pixel_values)) from an adapter's gate settings.

    ``settings`` has the keys of ``QualityGatedLoraConfig.gate_settings()``; the estimator and gate are built
    from the shared registries exactly as the tuner builds them.
    """
    from petal_peft.quality import quality_fn_from_settings

    function = quality_fn_from_settings(settings)
    if function is None:
        raise ValueError(
            "this adapter has no quality estimator, so the gate has no quality to use at test time: pass a "
            "quality function (CLI: --quality-estimator NAME) or evaluate the proxy encoders (--mode proxy)."
        )
    estimator, gate = function.estimator, function.gate

    def quality_fn(pixel_values: torch.Tensor) -> torch.Tensor:
        for module in (estimator, gate):
            if isinstance(module, nn.Module):
                module.to(pixel_values.device)
        return gate(estimator(pixel_values.float())).float()

    return quality_fn


def adapter_gate_settings(peft_model: nn.Module, adapter_name: str | None = None) -> dict[str, Any]:
    """The gate settings of a quality-gated adapter (active adapter by default)."""
    configs = getattr(peft_model, "peft_config", None)
    if not configs:
        raise TypeError(f"expected a PeftModel with a quality-gated adapter, got {type(peft_model).__name__}.")
    name = adapter_name or getattr(peft_model, "active_adapter", None) or next(iter(configs))
    config = configs[name]
    if not hasattr(config, "gate_settings"):
        raise TypeError(f"adapter {name!r} is a {type(config).__name__}, not a QualityGatedLoraConfig.")
    return dict(config.gate_settings())


def plain_embedder(model: nn.Module, **extractor_kwargs: Any) -> SingleEncoderEmbedder:
    """Embed with a plain model (no adapter, or an already merged one)."""
    return SingleEncoderEmbedder(EmbeddingExtractor(model, name="plain", **extractor_kwargs), mode="plain")


def gated_embedder(
    peft_model: nn.Module, quality_fn: QualityFn | None = None, **extractor_kwargs: Any
) -> SingleEncoderEmbedder:
    """Mode (a): the live adapter, each image (and its mirror) gated by its own quality.

    Without ``quality_fn`` the adapter's configured estimator and gate are used, through the tuner's own
    ``estimate_quality`` when it has one (so q is exactly what ``model(pixel_values=x)`` would compute), and
    the q values are recorded.
    """
    fn = quality_fn
    try:
        settings = adapter_gate_settings(peft_model)
    except TypeError:
        if fn is None:
            raise
        settings = {}  # a stand-in model with its own quality function
    if fn is None:
        tuner = getattr(peft_model, "base_model", None)
        if hasattr(tuner, "estimate_quality"):
            if not settings.get("quality_estimator"):
                build_quality_fn(settings)  # raises the "no quality estimator" error
            fn = tuner.estimate_quality
        else:
            fn = build_quality_fn(settings)
    bounded = not settings.get("allow_unbounded_quality", False)
    ex = EmbeddingExtractor(
        peft_model, quality_fn=fn, pass_quality=True, name="gate", quality_bounded=bounded, **extractor_kwargs
    )
    return SingleEncoderEmbedder(ex, mode="gate")


def merge_proxy_encoders(peft_model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(gallery encoder merged at q = 1, probe encoder merged at q = 0), built on copies of ``peft_model``."""
    if not hasattr(peft_model, "merge_and_unload"):
        raise TypeError(f"expected a PeftModel, got {type(peft_model).__name__}.")
    gallery = copy.deepcopy(peft_model).merge_and_unload(quality=1.0)
    probe = copy.deepcopy(peft_model).merge_and_unload(quality=0.0)
    return gallery, probe


def proxy_embedder(
    gallery_model: nn.Module, probe_model: nn.Module, pair_role: str = "gallery", **extractor_kwargs: Any
) -> ProxyEncoderEmbedder:
    """Mode (b) from two plain models."""
    return ProxyEncoderEmbedder(
        EmbeddingExtractor(gallery_model, name="gallery encoder", **extractor_kwargs),
        EmbeddingExtractor(probe_model, name="probe encoder", **extractor_kwargs),
        pair_role=pair_role,
    )


def proxy_embedder_from_adapter(
    peft_model: nn.Module, pair_role: str = "gallery", **extractor_kwargs: Any
) -> ProxyEncoderEmbedder:
    """Mode (b): merge copies of the adapter at q = 1 and q = 0 (the original model is left untouched)."""
    gallery, probe = merge_proxy_encoders(peft_model)
    return proxy_embedder(gallery, probe, pair_role=pair_role, **extractor_kwargs)


def load_proxy_encoders(
    folder: str | os.PathLike,
    *,
    base_model: nn.Module | None = None,
    peft_model: nn.Module | None = None,
    **from_pretrained_kwargs: Any,
) -> tuple[nn.Module, nn.Module]:
    """Load the encoders ``petal_peft.export_proxy_encoders`` wrote (gallery_encoder/, probe_encoder/).

    With ``base_model`` (not yet wrapped by an adapter) and/or ``peft_model``, encoders that were not exported
    from them are refused (see :func:`petal_peft.tuner.proxy.check_proxy_encoders`).
    """
    from transformers import AutoModel

    from ..tuner.proxy import check_proxy_encoders

    folder = os.fspath(folder)
    paths = [os.path.join(folder, sub) for sub in ("gallery_encoder", "probe_encoder")]
    missing = [p for p in paths if not os.path.isdir(p)]
    if missing:
        raise FileNotFoundError(
            f"proxy encoder folder {folder} must contain gallery_encoder/ and probe_encoder/ "
            f"(as written by petal_peft.export_proxy_encoders); missing: {missing}."
        )
    gallery, probe = (AutoModel.from_pretrained(p, **from_pretrained_kwargs) for p in paths)
    if base_model is not None or peft_model is not None:
        check_proxy_encoders(folder, gallery, probe, base_model=base_model, peft_model=peft_model)
    return gallery, probe
