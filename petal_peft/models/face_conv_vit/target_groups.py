"""Named layer groups of the convolutional-stem face transformer, for ``target_modules="stem+attention"``-style
choices (``petal_peft.models`` registers them in :data:`petal_peft.registry.TARGET_MODULE_GROUPS`)."""

from __future__ import annotations

__all__ = ["FACE_CONV_VIT_TARGET_GROUPS"]

_QKV = r"(q_proj|k_proj|v_proj)"

_GROUPS = {
    # the residual conv stem (dlib's layers): the first convolution and both convolutions of every unit
    "stem": r"(.*\.)?embeddings\.stem\.(conv|units\.\d+\.conv[12])",
    # the linear map from stem features to tokens
    "token_projection": r"(.*\.)?embeddings\.projection",
    # every layer's attention query, key and value projections (where PETALface puts its adapters)
    "attention": rf"(.*\.)?layers\.\d+\.attention\.{_QKV}",
    # every layer's attention output projection
    "attention_output": r"(.*\.)?layers\.\d+\.attention\.o_proj",
    # both linear layers of every layer's MLP
    "mlp": r"(.*\.)?layers\.\d+\.mlp\.(fc1|fc2)",
    # the final projection to the embedding
    "pooler": r"(.*\.)?pooler\.dense",
}
_GROUPS["default"] = f"{_GROUPS['attention']}|{_GROUPS['pooler']}"
_GROUPS["all-linear"] = "|".join(
    _GROUPS[name] for name in ("token_projection", "attention", "attention_output", "mlp", "pooler")
)

#: group name -> full-match regex over module names. ``default`` is what the adapter targets when
#: ``target_modules`` is not given (attention q/k/v and the final projection); ``stem+default`` adds the stem's
#: convolutions to it, ``stem+all-linear`` adapts every convolution and linear layer.
FACE_CONV_VIT_TARGET_GROUPS: dict[str, str] = dict(_GROUPS)
