"""Configuration of the face IResNet (insightface arcface_torch's iresnet18 / 34 / 50 / 100 / 200)."""

from __future__ import annotations

from transformers import PreTrainedConfig

__all__ = ["IRESNET_DEPTHS", "FaceIResNetConfig"]

#: residual blocks per stage of insightface's named IResNets
IRESNET_DEPTHS: dict[int, tuple[int, ...]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    200: (6, 26, 60, 6),
}


class FaceIResNetConfig(PreTrainedConfig):
    r"""Configuration of a :class:`FaceIResNetModel`.

    The defaults are insightface's IResNet-50 (``buffalo_l``'s recognition network): 112 px RGB input, a 3 x 3
    stem of 64 channels, four stages of "improved" basic blocks (BN -> conv -> BN -> PReLU -> conv -> BN, plus the
    identity or a 1 x 1 strided downsample) that each halve the resolution, then the embedding head: BatchNorm2d ->
    flatten -> dropout -> Linear -> BatchNorm1d (its scale fixed at 1). :meth:`for_depth` gives the other named
    sizes.

    image_size (`int`, defaults to 112), num_channels (`int`, defaults to 3):
        Input geometry. The head flattens the last feature map, so the model takes this size only.
    stem_channels (`int`, defaults to 64):
        Width of the stem convolution.
    hidden_sizes (`list[int]`, defaults to `[64, 128, 256, 512]`):
        Width of each stage.
    depths (`list[int]`, defaults to `[3, 4, 14, 3]`):
        Residual blocks per stage (:data:`IRESNET_DEPTHS` lists insightface's).
    embedding_size (`int`, defaults to 512):
        Width of the face embedding (``pooler_output``).
    batch_norm_eps (`float`, defaults to 1e-5):
        eps of every BatchNorm.
    head_dropout_prob (`float`, defaults to 0.0):
        Dropout on the flattened features before the embedding layer (training only).
    """

    model_type = "face_iresnet"

    image_size: int = 112
    num_channels: int = 3
    stem_channels: int = 64
    hidden_sizes: list[int] | tuple[int, ...] = (64, 128, 256, 512)
    depths: list[int] | tuple[int, ...] = (3, 4, 14, 3)
    embedding_size: int = 512
    batch_norm_eps: float = 1e-5
    head_dropout_prob: float | int = 0.0

    def __post_init__(self, **kwargs):
        self.hidden_sizes = [int(width) for width in self.hidden_sizes]
        self.depths = [int(depth) for depth in self.depths]
        super().__post_init__(**kwargs)
        if not self.depths or len(self.depths) != len(self.hidden_sizes):
            raise ValueError(
                f"FaceIResNetConfig: depths {self.depths} and hidden_sizes {self.hidden_sizes} must be non-empty "
                "and of the same length (one entry per stage)."
            )
        if min(self.depths) < 1 or min(self.hidden_sizes) < 1 or self.stem_channels < 1:
            raise ValueError(
                f"FaceIResNetConfig: every stage needs at least one block and one channel, got depths {self.depths}, "
                f"hidden_sizes {self.hidden_sizes}, stem_channels {self.stem_channels}."
            )
        if self.image_size < 1:
            raise ValueError(f"FaceIResNetConfig: image_size must be positive, got {self.image_size}.")

    @classmethod
    def for_depth(cls, depth: int, **kwargs) -> FaceIResNetConfig:
        """The configuration of insightface's ``iresnet{depth}`` (18, 34, 50, 100 or 200); ``kwargs`` override."""
        if depth not in IRESNET_DEPTHS:
            raise ValueError(f"unknown IResNet depth {depth}; insightface's are {sorted(IRESNET_DEPTHS)}.")
        return cls(**{"depths": list(IRESNET_DEPTHS[depth]), **kwargs})

    @property
    def feature_map_size(self) -> int:
        """Side of the last stage's feature map (7 at 112 px): each stage's stride-2 3 x 3 conv rounds up."""
        side = self.image_size
        for _ in self.depths:
            side = (side + 1) // 2
        return side

    @property
    def num_layers(self) -> int | None:
        """18, 34, 50, 100 or 200 when ``depths`` is one of insightface's, else None."""
        found = [depth for depth, blocks in IRESNET_DEPTHS.items() if list(blocks) == list(self.depths)]
        return found[0] if found else None
