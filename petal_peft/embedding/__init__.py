"""Face images -> embeddings: the machinery training, evaluation, export and inference share.

* :mod:`~petal_peft.embedding.images`: image transforms and small image datasets;
* :mod:`~petal_peft.embedding.runtime`: the device and a model's input transform (:func:`build_transform`);
* :mod:`~petal_peft.embedding.vectors`: unit normalisation and flip-test fusion;
* :mod:`~petal_peft.embedding.extractor`: :func:`pooled_embedding`, :class:`EmbeddingExtractor` and the
  embedders that pick a network per role;
* :mod:`~petal_peft.embedding.builder`: the modes (gate, proxy, gallery, probe, plain) and
  :func:`build_embedder`, the one way to build the embedder of a mode;
* :mod:`~petal_peft.embedding.loading`: :func:`load_base_model` and :func:`load_adapter`, the one way to load a
  base model and a quality-gated adapter.
"""

from .builder import MODE_ALIASES, MODES, build_embedder, canonical_mode, gate_settings, with_quality_estimator
from .extractor import (
    Embedder,
    EmbeddingExtractor,
    Embeddings,
    ProxyEncoderEmbedder,
    SingleEncoderEmbedder,
    adapter_gate_settings,
    build_quality_fn,
    gated_embedder,
    load_proxy_encoders,
    merge_proxy_encoders,
    plain_embedder,
    pooled_embedding,
    proxy_embedder,
    proxy_embedder_from_adapter,
)
from .images import ImagePathDataset, ImageTransform, list_images
from .loading import BaseModelInfo, load_adapter, load_base_model, read_image_settings
from .runtime import build_transform, resolve_device
from .vectors import fuse_flip, l2_normalize

__all__ = [
    "MODES",
    "MODE_ALIASES",
    "BaseModelInfo",
    "build_embedder",
    "canonical_mode",
    "gate_settings",
    "load_adapter",
    "load_base_model",
    "read_image_settings",
    "with_quality_estimator",
    "Embedder",
    "EmbeddingExtractor",
    "Embeddings",
    "ImagePathDataset",
    "ImageTransform",
    "ProxyEncoderEmbedder",
    "SingleEncoderEmbedder",
    "adapter_gate_settings",
    "build_quality_fn",
    "build_transform",
    "fuse_flip",
    "gated_embedder",
    "l2_normalize",
    "list_images",
    "load_proxy_encoders",
    "merge_proxy_encoders",
    "plain_embedder",
    "pooled_embedding",
    "proxy_embedder",
    "proxy_embedder_from_adapter",
    "resolve_device",
]
