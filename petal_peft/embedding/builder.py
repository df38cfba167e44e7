"""One way to choose the network that embeds, used by evaluation, inference, export and the benchmark.

The modes, one vocabulary everywhere:

* ``gate``: the live adapter; each image (and its mirror) gets its own quality q from the quality function;
* ``proxy``: the adapter merged at q = 1 for gallery images and at q = 0 for probes (a pair's sides: ``pair_role``);
* ``gallery``: the adapter merged at q = 1 (the high-quality proxy encoder) for every image;
* ``probe``: the adapter merged at q = 0 (the low-quality proxy encoder) for every image;
* ``plain``: the base model without adapter.

Older words are accepted as aliases (:data:`MODE_ALIASES`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from .extractor import (
    Embedder,
    EmbeddingExtractor,
    QualityFn,
    SingleEncoderEmbedder,
    adapter_gate_settings,
    gated_embedder,
    merge_proxy_encoders,
    plain_embedder,
    proxy_embedder,
)

__all__ = ["MODES", "MODE_ALIASES", "build_embedder", "canonical_mode", "gate_settings", "with_quality_estimator"]

MODES = ("gate", "proxy", "gallery", "probe", "plain")
#: older or longer words for a mode -> the mode
MODE_ALIASES = {
    "gated": "gate",
    "hq": "gallery",
    "hq_proxy": "gallery",
    "high_quality": "gallery",
    "gallery_encoder": "gallery",
    "lq": "probe",
    "lq_proxy": "probe",
    "low_quality": "probe",
    "probe_encoder": "probe",
    "base": "plain",
}


def canonical_mode(mode: str) -> str:
    """The mode a word names (``"hq"`` -> ``"gallery"``), or a ValueError listing the modes."""
    name = MODE_ALIASES.get(mode, mode)
    if name not in MODES:
        raise ValueError(f"unknown embedding mode {mode!r}; choose from {MODES}.")
    return name


def with_quality_estimator(
    settings: Mapping[str, Any] | None,
    quality_estimator: str | None,
    quality_estimator_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Gate settings with the quality estimator replaced when one is named (the CLI's ``--quality-estimator``).

    Args:
        settings: an adapter's gate settings (``QualityGatedLoraConfig.gate_settings()``), or None.
        quality_estimator: a registered estimator name; None or empty keeps the adapter's.
        quality_estimator_kwargs: its keyword arguments.

    Returns:
        A new dict (the input is not changed), or ``settings`` as given when nothing is overridden.
    """
    if not quality_estimator:
        return None if settings is None else dict(settings)
    out = dict(settings or {})
    out["quality_estimator"] = quality_estimator
    out["quality_estimator_kwargs"] = dict(quality_estimator_kwargs or {})
    return out


def gate_settings(
    peft_model: nn.Module,
    quality_estimator: str | None = None,
    quality_estimator_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The adapter's gate settings, with the quality estimator overridden when one is named."""
    return with_quality_estimator(adapter_gate_settings(peft_model), quality_estimator, quality_estimator_kwargs)


def build_embedder(
    mode: str,
    model: nn.Module | None,
    *,
    proxies: tuple[nn.Module, nn.Module] | None = None,
    quality_fn: QualityFn | None = None,
    pair_role: str = "gallery",
    **extractor_kwargs: Any,
) -> Embedder:
    """The embedder of one mode.

    Args:
        mode: ``gate``, ``proxy``, ``gallery``, ``probe`` or ``plain`` (or an alias, see :data:`MODE_ALIASES`).
        model: the quality-gated PeftModel for ``gate`` and for proxy modes without ``proxies``; the plain model
            for ``plain``.
        proxies: already merged (gallery, probe) encoders, e.g. from :func:`load_proxy_encoders`.
        quality_fn: the gate mode's quality function (default: the adapter's own estimator and gate).
        pair_role: ``proxy`` mode: which encoder embeds both sides of a verification pair.
        **extractor_kwargs: passed to every :class:`EmbeddingExtractor` (batch_size, device, flip, progress...).

    Returns:
        The embedder; its ``mode`` attribute is the canonical mode.
    """
    mode = canonical_mode(mode)
    if mode == "plain":
        if model is None:
            raise ValueError("the plain mode needs the base model.")
        return plain_embedder(model, **extractor_kwargs)
    if mode == "gate":
        if model is None:
            raise ValueError("the gate mode needs an adapter (CLI: --adapter).")
        return gated_embedder(model, quality_fn, **extractor_kwargs)
    if proxies is None and model is None:
        raise ValueError(f"the {mode} mode needs an adapter (--adapter) or exported encoders (--proxy-encoders).")
    if mode == "proxy":
        gallery, probe = proxies if proxies is not None else merge_proxy_encoders(model)
        return proxy_embedder(gallery, probe, pair_role=pair_role, **extractor_kwargs)
    if proxies is not None:
        network = proxies[0] if mode == "gallery" else proxies[1]
    else:
        from petal_peft.tuner.proxy import merged_encoder

        network = merged_encoder(model, 1.0 if mode == "gallery" else 0.0)
    extractor = EmbeddingExtractor(network.eval(), name=f"{mode} encoder", **extractor_kwargs)
    return SingleEncoderEmbedder(extractor, mode=mode)
