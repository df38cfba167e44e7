"""Named layer groups of the face IResNet, for ``target_modules="stem+blocks+shortcuts+fc"``-style choices
(``petal_peft.models`` registers them in :data:`petal_peft.registry.TARGET_MODULE_GROUPS`)."""

from __future__ import annotations

__all__ = ["FACE_IRESNET_TARGET_GROUPS"]

_GROUPS = {
    # the stem's 3 x 3 convolution (top-level ``conv1``; a block's ``conv1`` follows a block index)
    "stem": r"(.*\.)?(?<!\d\.)conv1",
    # both 3 x 3 convolutions of every residual block
    "blocks": r"(.*\.)?layer\d+\.\d+\.(conv1|conv2)",
    # the 1 x 1 strided convolutions of the shortcuts where a stage changes shape
    "shortcuts": r"(.*\.)?layer\d+\.\d+\.downsample\.0",
    # the embedding layer
    "fc": r"(.*\.)?fc",
}
_GROUPS["default"] = f"{_GROUPS['blocks']}|{_GROUPS['fc']}"

#: group name -> full-match regex over module names. ``default`` is what the adapter targets when
#: ``target_modules`` is not given (the block convolutions and ``fc``); ``stem+blocks+shortcuts+fc`` is every
#: convolution and the embedding layer, where the PETALface reference puts its IResNet LoRA.
FACE_IRESNET_TARGET_GROUPS: dict[str, str] = dict(_GROUPS)
