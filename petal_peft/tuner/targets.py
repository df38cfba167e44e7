"""Which layers a quality-gated adapter adapts: the default when ``target_modules`` is not given, and named groups.

In this order: a default registered for the model type in :data:`petal_peft.registry.DEFAULT_TARGET_MODULES`
(architectures defined outside the tuner, e.g. petal-peft's own face backbones); the table below, for model
types whose default differs from the rule (it adds the final feature projection); else the rule, which reads
the module structure of any vision transformer: the query, key and value projections of every attention
module (three sibling ``nn.Linear`` children named like ``query``/``key``/``value`` or ``q_proj``/``k_proj``/
``v_proj`` that read the same input width), or its fused ``qkv`` projection.

An architecture may also register named groups of its layers (:data:`petal_peft.registry.TARGET_MODULE_GROUPS`),
which ``target_modules`` combines with ``+``: ``"stem+attention"`` adapts the stem convolutions and the attention
projections (see :func:`resolve_target_modules`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from torch import nn

__all__ = [
    "DEFAULT_TARGET_MODULES",
    "attention_projection_names",
    "default_target_modules",
    "linear_layer_summary",
    "resolve_default_targets",
    "resolve_target_modules",
    "target_module_groups",
    "unmatched_targets",
]

_QKV_SELF_ATTN = r"(q_proj|k_proj|v_proj)"

#: model_type -> full-match regex over module names, where the default is more than the attention
#: projections: the query/key/value projections plus the final feature projection where the model has one.
#: Checked against tiny random configs in tests/test_tuner_targets.py.
DEFAULT_TARGET_MODULES: dict[str, str] = {
    # ViTModel / DeiTModel: layers.*.attention.{q,k,v}_proj and the pooler's dense projection.
    "vit": rf"(.*\.)?layers\.\d+\.attention\.{_QKV_SELF_ATTN}|(.*\.)?pooler\.dense",
    "deit": rf"(.*\.)?layers\.\d+\.attention\.{_QKV_SELF_ATTN}|(.*\.)?pooler\.dense",
    # Dinov2Model: encoder.layer.*.attention.{q,k,v}_proj, no final projection.
    "dinov2": rf"(.*\.)?encoder\.layer\.\d+\.attention\.{_QKV_SELF_ATTN}",
    # SwinModel: encoder.layers.*.blocks.*.attention.{q,k,v}_proj (window attention), no final projection.
    "swin": rf"(.*\.)?encoder\.layers\.\d+\.blocks\.\d+\.attention\.{_QKV_SELF_ATTN}",
    # CLIPVisionModel(WithProjection): vision_model.encoder.layers.*.self_attn.*, visual_projection.
    "clip_vision_model": rf"(.*\.)?encoder\.layers\.\d+\.self_attn\.{_QKV_SELF_ATTN}|(.*\.)?visual_projection",
    # CLIPModel: only the vision tower.
    "clip": rf"(.*\.)?vision_model\.encoder\.layers\.\d+\.self_attn\.{_QKV_SELF_ATTN}|(.*\.)?visual_projection",
    # SiglipVisionModel: encoder self-attention and the pooling head's last linear (head.mlp.fc2). The head's
    # nn.MultiheadAttention out_proj is never called as a module, so it is never a target.
    "siglip_vision_model": rf"(.*\.)?encoder\.layers\.\d+\.self_attn\.{_QKV_SELF_ATTN}|(.*\.)?head\.mlp\.fc2",
    "siglip": rf"(.*\.)?vision_model\.encoder\.layers\.\d+\.self_attn\.{_QKV_SELF_ATTN}"
    r"|(.*\.)?vision_model\.head\.mlp\.fc2",
}

# child names of an attention module's projections, by role
_ROLE_NAMES = {
    "query": ("query", "q_proj", "q", "to_q", "wq", "q_lin", "query_proj"),
    "key": ("key", "k_proj", "k", "to_k", "wk", "k_lin", "key_proj"),
    "value": ("value", "v_proj", "v", "to_v", "wv", "v_lin", "value_proj"),
}
_FUSED_NAMES = ("qkv", "qkv_proj", "query_key_value", "wqkv", "in_proj_qkv")


def default_target_modules(model_type: str | None) -> str | list[str] | None:
    """The default targets registered for ``model_type``, else those of the table above, else None."""
    from ..registry import DEFAULT_TARGET_MODULES as REGISTERED

    if model_type and model_type in REGISTERED:
        return REGISTERED.get(model_type)
    return DEFAULT_TARGET_MODULES.get(model_type or "")


def attention_projection_names(model: nn.Module) -> list[str]:
    """Full names of the query/key/value ``nn.Linear`` layers of every attention module of ``model``.

    An attention module is one with three ``nn.Linear`` children named for the three roles (see
    ``_ROLE_NAMES``) whose ``in_features`` agree, or one ``nn.Linear`` child named like a fused projection
    (``qkv``...) whose output is three times its input. Layers inside ``nn.MultiheadAttention`` are skipped (it
    never calls them as modules).
    """
    found: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            continue
        linears = {child: m for child, m in module.named_children() if isinstance(m, nn.Linear)}
        if not linears:
            continue
        prefix = f"{name}." if name else ""
        lowered = {child.lower(): child for child in linears}
        roles = {}
        for role, candidates in _ROLE_NAMES.items():
            match = next((lowered[c] for c in candidates if c in lowered), None)
            if match is not None:
                roles[role] = match
        if len(roles) == 3 and len({linears[c].in_features for c in roles.values()}) == 1:
            found += [prefix + roles[r] for r in ("query", "key", "value")]
            continue
        for fused in _FUSED_NAMES:
            child = lowered.get(fused)
            if child is not None and linears[child].out_features == 3 * linears[child].in_features:
                found.append(prefix + child)
                break
    return found


def _generalised_pattern(names: Iterable[str]) -> str | None:
    """A full-match regex for ``names``, with layer indices turned into ``\\d+`` (one alternative per shape)."""
    patterns = []
    for name in names:
        parts = [r"\d+" if part.isdigit() else re.escape(part) for part in name.split(".")]
        pattern = r"\.".join(parts)
        if pattern not in patterns:
            patterns.append(pattern)
    return "|".join(patterns) or None


def resolve_default_targets(model: nn.Module) -> str | list[str] | None:
    """The default ``target_modules`` for ``model`` (registry, table, then the structural rule), or None."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    default = default_target_modules(model_type)
    if default is not None:
        return default
    return _generalised_pattern(attention_projection_names(model))


def _matches(name: str, targets: str | Iterable[str]) -> bool:
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith(f".{t}") for t in targets)


def unmatched_targets(model: nn.Module, targets: str | Iterable[str]) -> list[str]:
    """The entries of ``targets`` (PEFT's matching: a regex string, or names / name suffixes) that name no
    module of ``model``; for a regex, ``[targets]`` when it matches nothing."""
    names = [name for name, _ in model.named_modules() if name]
    if isinstance(targets, str):
        return [] if any(_matches(n, targets) for n in names) else [targets]
    return [t for t in targets if not any(_matches(n, [t]) for n in names)]


def linear_layer_summary(model: nn.Module, limit: int = 8) -> str:
    """A few of ``model``'s linear and 2-d convolution layers as name suffixes (what ``target_modules`` can name)."""
    suffixes: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            suffix = ".".join(p for p in name.split(".")[-2:] if not p.isdigit()) or name
            if suffix not in suffixes:
                suffixes.append(suffix)
    shown = ", ".join(suffixes[:limit]) + (" ..." if len(suffixes) > limit else "")
    return shown or "none"


_GROUP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _model_type(model_or_type: nn.Module | str | None) -> str | None:
    if model_or_type is None or isinstance(model_or_type, str):
        return model_or_type
    return getattr(getattr(model_or_type, "config", None), "model_type", None)


def target_module_groups(model_or_type: nn.Module | str | None) -> dict[str, str]:
    """The named layer groups registered for a model (or model type): ``{name: full-match regex}``; {} if none."""
    from ..registry import TARGET_MODULE_GROUPS

    model_type = _model_type(model_or_type)
    if not model_type or model_type not in TARGET_MODULE_GROUPS:
        return {}
    return dict(TARGET_MODULE_GROUPS.get(model_type))


def resolve_target_modules(model_or_type: nn.Module | str | None, targets: Any) -> Any:
    """``targets`` with a group expression replaced by the regex it stands for; anything else unchanged.

    A group expression is one string (or a list holding just that string) of group names registered for the
    model type, joined by ``+``: ``"stem+attention"``. Lists of module names and regular expressions keep PEFT's
    meaning. A ``+``-joined string of plain names where some are groups and others are not is refused (a typo
    would otherwise silently adapt fewer layers).

    Args:
        model_or_type: the base model (its ``config.model_type`` is used) or a model type string.
        targets: a ``target_modules`` value (string, list of strings, or None).

    Returns:
        A full-match regex string for a group expression, else ``targets`` itself.
    """
    expression = targets
    if isinstance(targets, (list, tuple, set)) and len(targets) == 1:
        expression = next(iter(targets))
    if not isinstance(expression, str):
        return targets
    groups = target_module_groups(model_or_type)
    names = [part.strip() for part in expression.split("+")]
    if not groups or not all(_GROUP_NAME.fullmatch(name) for name in names):
        return targets
    known = [name for name in names if name in groups]
    if not known:
        return targets
    unknown = [name for name in names if name not in groups]
    if unknown:
        raise ValueError(
            f"target_modules {expression!r}: {unknown} are not layer groups of {_model_type(model_or_type)!r}; its "
            f"groups are {sorted(groups)} (join them with '+', e.g. 'stem+attention')."
        )
    return "|".join(f"(?:{groups[name]})" for name in dict.fromkeys(names))
