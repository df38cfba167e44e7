"""Default target modules per architecture (module names as in transformers 5)."""

from __future__ import annotations

_QKV_SELF_ATTN = r"(q_proj|k_proj|v_proj)"

#: model_type -> full-match regex over module names: the attention query/key/value projections, plus the final
#: feature projection where the model has one. Checked against tiny random configs in tests/test_targets.py.
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


def default_target_modules(model_type: str | None) -> str | list[str] | None:
    """The default targets for ``model_type`` (registered ones first, then the table above), or None."""
    from ..registry import DEFAULT_TARGET_MODULES as REGISTERED

    if model_type and model_type in REGISTERED:
        return REGISTERED.get(model_type)
    return DEFAULT_TARGET_MODULES.get(model_type or "")
