"""The face Swin and face ViT as transformers models: Auto classes, save/load, default targets, checkpointing."""

from __future__ import annotations

import pytest
import torch
import transformers as T
from peft import PeftModel, get_peft_model
from testing_utils import randomize_adapters, tiny_face_swin, tiny_face_vit

import petal_peft
from petal_peft.models import FaceSwinConfig, FaceSwinModel, FaceViTConfig, FaceViTModel, face_image_processor

BUILDERS = {"face_swin": tiny_face_swin, "face_vit": tiny_face_vit}


def pixels(model, batch=3, seed=0):
    size = model.config.image_size
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_auto_classes_load_a_saved_folder_with_its_image_processor(tmp_path, kind):
    model = BUILDERS[kind]()
    model.save_pretrained(tmp_path)
    face_image_processor(model.config.image_size).save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert type(T.AutoConfig.from_pretrained(tmp_path)) is type(model.config)
    loaded = T.AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    x = pixels(model)
    with torch.no_grad():
        out, again = model(pixel_values=x), loaded(pixel_values=x)
    assert out.pooler_output.shape == (3, model.config.embedding_size)
    assert torch.equal(out.pooler_output, again.pooler_output)
    processor = T.AutoImageProcessor.from_pretrained(tmp_path)
    assert list(processor.image_mean) == [0.5] * 3 and processor.size.height == model.config.image_size


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("face_swin", {"q_proj": 5, "k_proj": 5, "v_proj": 5, "projection": 1}),
        ("face_vit", {"q_proj": 2, "k_proj": 2, "v_proj": 2, "projection": 1, "output": 1}),
    ],
)
def test_default_config_targets_the_reference_placement(kind, expected):
    model = get_peft_model(BUILDERS[kind](), petal_peft.QualityGatedLoraConfig())
    counts: dict[str, int] = {}
    for name, module in model.named_modules():
        if isinstance(module, petal_peft.QualityGatedLinear):
            leaf = name.rsplit(".", 1)[-1]
            counts[leaf] = counts.get(leaf, 0) + 1
    assert counts == expected


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_gradient_checkpointing_gives_the_same_gradients(kind):
    quiet = dict(drop_path_rate=0.0) | ({"head_dropout": 0.0} if kind == "face_swin" else {})
    grads = []
    for checkpointing in (False, True):
        model = get_peft_model(BUILDERS[kind](**quiet), petal_peft.QualityGatedLoraConfig(lora_dropout=0.0))
        randomize_adapters(model)
        if checkpointing:
            base = model.base_model.model
            base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            assert any(getattr(m, "gradient_checkpointing", False) for m in base.modules())
        model.train()
        out = model(pixel_values=pixels(model.base_model.model), quality=torch.tensor([0.1, 0.5, 0.9]))
        out.pooler_output.pow(2).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_adapter_round_trips_through_save_and_load(tmp_path, kind):
    model = get_peft_model(BUILDERS[kind](), petal_peft.QualityGatedLoraConfig())
    randomize_adapters(model)
    model.save_pretrained(tmp_path / "adapter")
    BUILDERS[kind]().save_pretrained(tmp_path / "base")
    loaded = PeftModel.from_pretrained(T.AutoModel.from_pretrained(tmp_path / "base"), tmp_path / "adapter").eval()
    x, q = pixels(model.base_model.model), torch.tensor([0.0, 0.4, 1.0])
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(pixel_values=x, quality=q).pooler_output, model.eval()(pixel_values=x, quality=q).pooler_output
        )


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_wrong_input_size_is_named(kind):
    model = BUILDERS[kind]()
    with pytest.raises(ValueError, match="expects pixel_values of shape"):
        model(pixel_values=torch.zeros(1, 3, 24, 24))
    with pytest.raises(TypeError, match="needs pixel_values as a tensor"):
        model(pixel_values=None)


def test_shifted_window_mask_option_is_standard_swin():
    # False (the reference's behaviour) differs from standard Swin; True equals transformers' SwinModel exactly
    face = tiny_face_swin(shifted_window_mask=True)
    swin = T.SwinModel(T.SwinConfig(**face.config.to_dict()), add_pooling_layer=False).eval()
    swin.load_state_dict({k: v for k, v in face.state_dict().items() if not k.startswith("embedding_head.")})
    unmasked = tiny_face_swin(shifted_window_mask=False)
    unmasked.load_state_dict(face.state_dict())
    x = pixels(face)
    with torch.no_grad():
        reference = swin(pixel_values=x).last_hidden_state
        assert torch.allclose(face(pixel_values=x).last_hidden_state, reference, atol=1e-6)
        assert not torch.allclose(unmasked(pixel_values=x).last_hidden_state, reference, atol=1e-3)


def test_configs_refuse_impossible_geometry():
    with pytest.raises(ValueError, match="odd 5 x 5 token grid"):
        FaceSwinConfig(image_size=20, patch_size=2, depths=[1, 1, 1], num_heads=[1, 1, 1], embed_dim=8)
    with pytest.raises(ValueError, match="norm_layer must be one of"):
        FaceViTConfig(norm_layer="rms")
    with pytest.raises(ValueError, match="not divisible by num_attention_heads"):
        FaceViTConfig(hidden_size=10, num_attention_heads=4)


def test_released_defaults_match_the_reference_sizes():
    swin, vit = FaceSwinConfig(), FaceViTConfig()
    assert (swin.image_size, swin.patch_size, swin.embed_dim, tuple(swin.depths), tuple(swin.num_heads)) == (
        120,
        6,
        384,
        (2, 18, 2),
        (8, 16, 16),
    )
    assert swin.window_size == 5 and swin.use_absolute_embeddings and swin.head_in_features == 38400
    assert (vit.image_size, vit.patch_size, vit.num_patches, vit.hidden_act, vit.qkv_bias) == (
        112,
        9,
        144,
        "relu6",
        False,
    )
    assert FaceSwinModel.config_class is FaceSwinConfig and FaceViTModel.config_class is FaceViTConfig


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_frozen_batch_norm_keeps_its_statistics_in_training_mode(kind):
    # a frozen backbone trains in train mode, but statistics it changed could not be saved with the adapter
    extra = {"drop_path_rate": 0.0} | ({"norm_layer": "bn"} if kind == "face_vit" else {"head_dropout": 0.0})
    model = get_peft_model(BUILDERS[kind](**extra), petal_peft.QualityGatedLoraConfig(lora_dropout=0.0)).train()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    before = [m.running_mean.clone() for m in norms]
    x, q = pixels(model.base_model.model), torch.tensor([0.2, 0.5, 0.8])
    train_out = model(pixel_values=x, quality=q).pooler_output
    assert all(torch.equal(a, m.running_mean) for a, m in zip(before, norms))
    with torch.no_grad():
        torch.testing.assert_close(train_out, model.eval()(pixel_values=x, quality=q).pooler_output)
    full = BUILDERS[kind](**extra).train()  # trainable BatchNorm (full fine-tuning) behaves as usual
    full(pixel_values=x)
    assert not torch.equal(full.embedding_head.output_norm.running_mean, torch.zeros_like(before[-1]))
