"""Configuration of the face ViT (insightface arcface_torch's VisionTransformer)."""

from __future__ import annotations

from transformers import PreTrainedConfig

__all__ = ["FaceViTConfig"]

NORM_LAYERS = ("ln", "bn")


class FaceViTConfig(PreTrainedConfig):
    r"""Configuration of a :class:`FaceViTModel`.

    The defaults are arcface_torch's ``vit_s`` (the ``vit_t`` / ``vit_b`` presets differ in ``hidden_size`` and
    ``num_hidden_layers``): 112 px RGB input cut into 9 px patches (a 12 x 12 grid, 144 tokens, no CLS token), a
    learned position embedding, pre-norm blocks with a ReLU6 MLP and no query/key/value bias, a final norm, and a
    head on the flattened tokens: Linear(no bias) -> BatchNorm1d -> Linear(no bias) -> BatchNorm1d.

    image_size (`int`, defaults to 112), patch_size (`int`, defaults to 9), num_channels (`int`, defaults to 3):
        Input geometry; tokens = (image_size // patch_size) ** 2.
    hidden_size (`int`, defaults to 512), num_hidden_layers (`int`, defaults to 12),
    num_attention_heads (`int`, defaults to 8), mlp_ratio (`float`, defaults to 4.0):
        Transformer size.
    hidden_act (`str`, defaults to `"relu6"`):
        MLP activation (arcface_torch uses ReLU6).
    qkv_bias (`bool`, defaults to `False`):
        Whether the query/key/value projections have a bias.
    norm_layer (`str`, defaults to `"ln"`):
        `"ln"`: LayerNorm over channels; `"bn"`: BatchNorm1d over tokens (one statistic per token position).
    layer_norm_eps (`float`, defaults to 1e-5), batch_norm_eps (`float`, defaults to 1e-5):
        eps of the block norms and the final norm.
    embedding_size (`int`, defaults to 512):
        Width of the face embedding (``pooler_output``).
    head_batch_norm_eps (`float`, defaults to 2e-5):
        eps of the head's two BatchNorm1d layers.
    hidden_dropout_prob, attention_probs_dropout_prob (`float`, defaults to 0.0), drop_path_rate (`float`, defaults
    to 0.1):
        Regularisation, active in training only.
    """

    model_type = "face_vit"
    attribute_map = {"num_heads": "num_attention_heads"}

    image_size: int = 112
    patch_size: int = 9
    num_channels: int = 3
    hidden_size: int = 512
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    mlp_ratio: float | int = 4.0
    hidden_act: str = "relu6"
    qkv_bias: bool = False
    norm_layer: str = "ln"
    layer_norm_eps: float = 1e-5
    batch_norm_eps: float = 1e-5
    embedding_size: int = 512
    head_batch_norm_eps: float = 2e-5
    hidden_dropout_prob: float | int = 0.0
    attention_probs_dropout_prob: float | int = 0.0
    drop_path_rate: float | int = 0.1
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.norm_layer not in NORM_LAYERS:
            raise ValueError(f"FaceViTConfig: norm_layer must be one of {NORM_LAYERS}, got {self.norm_layer!r}.")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"FaceViTConfig: hidden_size={self.hidden_size} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}."
            )
        if self.image_size < self.patch_size:
            raise ValueError(f"FaceViTConfig: image_size={self.image_size} is smaller than patch_size.")

    @property
    def num_patches(self) -> int:
        """Number of tokens: (image_size // patch_size) ** 2 (pixels past the last whole patch are ignored)."""
        return (self.image_size // self.patch_size) ** 2

    @property
    def intermediate_size(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)
