"""Tiny random vision transformers for tests (no downloads)."""

from __future__ import annotations

import torch
import transformers as T

IMAGE = 32


def tiny_vit(seed: int = 0) -> T.ViTModel:
    torch.manual_seed(seed)
    config = T.ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=IMAGE,
        patch_size=8,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return T.ViTModel(config).eval()


# Shared by the tiny ViT-like configs below: one block, width 32, 8 px patches on 32 px images.
_TINY = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=IMAGE, patch_size=8)

_BUILDERS = {
    "deit": lambda: T.DeiTModel(T.DeiTConfig(intermediate_size=64, **_TINY)),
    "dinov2": lambda: T.Dinov2Model(T.Dinov2Config(mlp_ratio=2, **_TINY)),
    "swin": lambda: T.SwinModel(
        T.SwinConfig(embed_dim=16, depths=[1, 1], num_heads=[2, 2], image_size=IMAGE, patch_size=4, window_size=4)
    ),
    "clip": lambda: T.CLIPVisionModelWithProjection(
        T.CLIPVisionConfig(intermediate_size=64, projection_dim=16, **_TINY)
    ),
    "siglip": lambda: T.SiglipVisionModel(T.SiglipVisionConfig(intermediate_size=64, **_TINY)),
    "beit": lambda: T.BeitModel(T.BeitConfig(intermediate_size=64, **_TINY)),
    "vit_msn": lambda: T.ViTMSNModel(T.ViTMSNConfig(intermediate_size=64, **_TINY)),
    "dinov2_with_registers": lambda: T.Dinov2WithRegistersModel(T.Dinov2WithRegistersConfig(mlp_ratio=2, **_TINY)),
    "swinv2": lambda: T.Swinv2Model(
        T.Swinv2Config(embed_dim=16, depths=[1, 1], num_heads=[2, 2], image_size=IMAGE, patch_size=4, window_size=4)
    ),
}


def tiny_model(kind: str, seed: int = 0) -> torch.nn.Module:
    """A tiny random model of ``kind`` (vit, deit, dinov2, swin, clip, siglip, beit, vit_msn,
    dinov2_with_registers, swinv2), in eval mode."""
    if kind == "vit":
        return tiny_vit(seed)
    torch.manual_seed(seed)
    return _BUILDERS[kind]().eval()


def randomize_adapters(model: torch.nn.Module, seed: int = 1, std: float = 0.2) -> None:
    """Give every LoRA factor non-zero values (B starts at zero, which would hide bugs)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * std)


def images(batch: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(seed))


def embedding(output) -> torch.Tensor:
    for name in ("image_embeds", "pooler_output", "last_hidden_state"):
        value = getattr(output, name, None)
        if value is not None:
            return value
    raise AssertionError("no embedding in output")


def tiny_face_swin(seed: int = 0, **overrides) -> torch.nn.Module:
    """A tiny random petal-peft face Swin (40 px, 20 x 20 patches, 3 stages, window 5), in eval mode."""
    from petal_peft.models import FaceSwinConfig, FaceSwinModel

    torch.manual_seed(seed)
    settings = dict(embed_dim=8, depths=[2, 2, 1], num_heads=[1, 2, 2], image_size=40, patch_size=2, embedding_size=16)
    return FaceSwinModel(FaceSwinConfig(**{**settings, **overrides})).eval()


def tiny_face_vit(seed: int = 0, **overrides) -> torch.nn.Module:
    """A tiny random petal-peft face ViT (36 px, 4 x 4 patches of 9 px), in eval mode."""
    from petal_peft.models import FaceViTConfig, FaceViTModel

    torch.manual_seed(seed)
    settings = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, image_size=36, embedding_size=8)
    return FaceViTModel(FaceViTConfig(**{**settings, **overrides})).eval()


def tiny_face_iresnet(seed: int = 0, **overrides) -> torch.nn.Module:
    """A tiny random petal-peft face IResNet (16 px, widths 4-16, one block per stage), in eval mode.

    Its BatchNorm statistics and scales are random too, so eval-mode normalisation is not the identity.
    """
    from petal_peft.models import FaceIResNetConfig, FaceIResNetModel

    torch.manual_seed(seed)
    settings = dict(image_size=16, stem_channels=4, hidden_sizes=[4, 8, 8, 16], depths=[1, 1, 1, 1], embedding_size=8)
    model = FaceIResNetModel(FaceIResNetConfig(**{**settings, **overrides}))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
                if module is not model.features:
                    module.weight.uniform_(0.5, 1.5)
    return model.eval()
