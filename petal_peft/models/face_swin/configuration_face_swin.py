"""Configuration of the face Swin: transformers' Swin with the PETALface embedding head."""

from __future__ import annotations

from transformers import SwinConfig

__all__ = ["FaceSwinConfig"]


class FaceSwinConfig(SwinConfig):
    r"""Configuration of a :class:`FaceSwinModel`.

    The defaults are the released PETALface backbone (``swin_256new``): 120 px RGB input, 6 px patches (a 20 x 20
    grid), embed 384, depths 2/18/2, heads 8/16/16, window 5, an absolute position embedding, and a 512-d embedding
    head on the flattened final tokens. Every Swin field of :class:`~transformers.SwinConfig` applies; the extra
    fields are:

    embedding_size (`int`, defaults to 512):
        Width of the face embedding (``pooler_output``).
    head_dropout (`float`, defaults to 0.25):
        Dropout between the head's input BatchNorm and its projection (training only).
    head_batch_norm_eps (`float`, defaults to 1e-5):
        eps of the head's two BatchNorm1d layers.
    shifted_window_mask (`bool`, defaults to `False`):
        Whether shifted-window attention masks the pairs of tokens that the cyclic shift brought together.
        The PETALface reference computes that mask but never applies it, and its released weights were trained
        that way, so the default is `False` (the reference behaviour). `True` is standard Swin.
    """

    model_type = "face_swin"

    image_size: int | list[int] | tuple[int, int] = 120
    patch_size: int | list[int] | tuple[int, int] = 6
    embed_dim: int = 384
    depths: list[int] | tuple[int, ...] = (2, 18, 2)
    num_heads: list[int] | tuple[int, ...] = (8, 16, 16)
    window_size: int = 5
    drop_path_rate: float | int = 0.05
    use_absolute_embeddings: bool = True
    embedding_size: int = 512
    head_dropout: float | int = 0.25
    head_batch_norm_eps: float = 1e-5
    shifted_window_mask: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.validate_face_settings()

    def validate_face_settings(self) -> None:
        """Refuse a geometry the head cannot be built for, naming the field."""
        grid = self.token_grid()
        stages = len(self.depths)
        if len(self.num_heads) != stages:
            raise ValueError(f"FaceSwinConfig: {stages} depths but {len(self.num_heads)} num_heads.")
        for stage in range(stages):
            dim = self.embed_dim * 2**stage
            if dim % self.num_heads[stage]:
                raise ValueError(
                    f"FaceSwinConfig: stage {stage} width {dim} is not divisible by num_heads={self.num_heads[stage]}."
                )
            side = (grid[0] // 2**stage, grid[1] // 2**stage)
            if stage < stages - 1 and (side[0] % 2 or side[1] % 2):
                raise ValueError(
                    f"FaceSwinConfig: stage {stage} has an odd {side[0]} x {side[1]} token grid; patch merging needs "
                    "even sides (choose image_size / patch_size accordingly)."
                )

    def token_grid(self) -> tuple[int, int]:
        """(rows, cols) of patch tokens entering the first stage."""
        size = self.image_size if isinstance(self.image_size, (list, tuple)) else (self.image_size, self.image_size)
        patch = self.patch_size if isinstance(self.patch_size, (list, tuple)) else (self.patch_size, self.patch_size)
        return int(size[0]) // int(patch[0]), int(size[1]) // int(patch[1])

    @property
    def final_tokens(self) -> int:
        """Number of tokens after the last stage (the head flattens them, token-major)."""
        rows, cols = self.token_grid()
        factor = 2 ** (len(self.depths) - 1)
        return (rows // factor) * (cols // factor)

    @property
    def head_in_features(self) -> int:
        """Width of the flattened final tokens: final_tokens x final channel width."""
        return self.final_tokens * int(self.embed_dim * 2 ** (len(self.depths) - 1))
