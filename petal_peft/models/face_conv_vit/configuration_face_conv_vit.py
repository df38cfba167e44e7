"""Configuration of the convolutional-stem face transformer (``model_type="face_conv_vit"``)."""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PretrainedConfig

__all__ = ["FaceConvViTConfig", "stem_output_size"]

#: dlib's face ResNet up to the end of its 64-channel stage: three 32-channel units, then a downsampling unit and
#: three more at 64 channels
DLIB_STEM_UNITS: tuple[tuple[int, int], ...] = ((32, 1), (32, 1), (32, 1), (64, 2), (64, 1), (64, 1), (64, 1))


def stem_output_size(image_size: int, stem_kernel_size: int, units: Sequence[Sequence[int]]) -> int:
    """Side of the stem's feature map: conv k/2 (no padding), max-pool 3/2, then per downsampling unit the larger
    of its strided conv (3/2, no padding) and its 2x2-pooled shortcut (the sum zero-pads the smaller)."""
    side = (image_size - stem_kernel_size) // 2 + 1
    side = (side - 3) // 2 + 1
    for _, stride in units:
        if stride == 2:
            side = max((side - 3) // 2 + 1, side // 2)
    return side


class FaceConvViTConfig(PretrainedConfig):
    """A face transformer whose tokens come from a small residual conv stem instead of image patches.

    The stem follows dlib's face ResNet (conv ``stem_kernel_size``/2 -> relu -> max-pool 3/2 -> residual units of
    two 3x3 convs, ``stem_units`` = (channels, stride) per unit), so it can start from dlib's trained layers. Each
    cell of its ``s x s`` feature map becomes a token (linear map to ``hidden_size`` plus a learned position
    embedding); pre-norm transformer layers with ``q_proj / k_proj / v_proj / o_proj`` attention follow, and the
    embedding (``pooler_output``) is a linear map (``pooler.dense``) of the mean of the final tokens.
    """

    model_type = "face_conv_vit"

    def __init__(
        self,
        image_size: int = 112,
        num_channels: int = 3,
        stem_channels: int = 32,
        stem_kernel_size: int = 7,
        stem_units: Sequence[Sequence[int]] = DLIB_STEM_UNITS,
        hidden_size: int = 192,
        num_hidden_layers: int = 6,
        num_attention_heads: int = 3,
        intermediate_size: int = 768,
        hidden_act: str = "gelu",
        layer_norm_eps: float = 1e-6,
        attention_probs_dropout_prob: float = 0.0,
        hidden_dropout_prob: float = 0.0,
        qkv_bias: bool = True,
        embedding_size: int = 128,
        initializer_range: float = 0.02,
        **kwargs,
    ) -> None:
        units = [[int(c), int(s)] for c, s in stem_units]
        if any(s not in (1, 2) for _, s in units):
            raise ValueError(f"stem_units strides must be 1 or 2, got {units}.")
        if hidden_size % num_attention_heads:
            raise ValueError(
                f"hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}."
            )
        if stem_output_size(image_size, stem_kernel_size, units) < 1:
            raise ValueError(f"image_size {image_size} is too small for the stem.")
        self.image_size = image_size
        self.num_channels = num_channels
        self.stem_channels = stem_channels
        self.stem_kernel_size = stem_kernel_size
        self.stem_units = units
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.layer_norm_eps = layer_norm_eps
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.hidden_dropout_prob = hidden_dropout_prob
        self.qkv_bias = qkv_bias
        self.embedding_size = embedding_size
        self.initializer_range = initializer_range
        super().__init__(**kwargs)

    @property
    def num_tokens(self) -> int:
        return stem_output_size(self.image_size, self.stem_kernel_size, self.stem_units) ** 2

    @property
    def stem_output_channels(self) -> int:
        return self.stem_units[-1][0] if self.stem_units else self.stem_channels
