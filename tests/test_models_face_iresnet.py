"""The face IResNet (insightface's IResNet) as a transformers model: shapes, Auto classes, processor, targets."""

from __future__ import annotations

import pytest
import torch
import transformers as T
from peft import LoraConfig, get_peft_model
from tiny_models import tiny_face_iresnet

import petal_peft  # noqa: F401
from petal_peft.models import (
    FACE_IRESNET_TARGET_MODULES,
    IRESNET_DEPTHS,
    FaceIResNetConfig,
    FaceIResNetModel,
    face_image_processor,
)
from petal_peft.registry import DEFAULT_TARGET_MODULES


def pixels(model, batch=3, seed=0):
    size = model.config.image_size
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_defaults_are_insightface_iresnet50_at_112_px():
    config = FaceIResNetConfig()
    assert config.depths == [3, 4, 14, 3] and config.num_layers == 50
    assert config.hidden_sizes == [64, 128, 256, 512] and config.stem_channels == 64
    assert config.image_size == 112 and config.feature_map_size == 7 and config.embedding_size == 512
    assert config.batch_norm_eps == 1e-5
    for depth, blocks in IRESNET_DEPTHS.items():
        assert FaceIResNetConfig.for_depth(depth).depths == list(blocks)
    with pytest.raises(ValueError, match="unknown IResNet depth 42"):
        FaceIResNetConfig.for_depth(42)


def test_iresnet18_module_names_and_parameter_count_match_insightface():
    model = FaceIResNetModel(FaceIResNetConfig.for_depth(18))
    names = set(model.state_dict())
    for key in (
        "conv1.weight",
        "bn1.running_var",
        "prelu.weight",
        "layer1.0.downsample.0.weight",
        "layer4.1.bn3.weight",
        "layer2.1.conv2.weight",
        "bn2.weight",
        "fc.bias",
        "features.running_mean",
    ):
        assert key in names
    assert "layer1.1.downsample.0.weight" not in names  # only the first block of a stage changes shape
    assert tuple(model.fc.weight.shape) == (512, 512 * 7 * 7)
    # insightface's iresnet18 has 24,025,600 parameters (conv weights, BN affine, PReLU, fc, features)
    assert sum(p.numel() for p in model.parameters()) == 24_025_600


def test_forward_shapes_and_hidden_states():
    model = tiny_face_iresnet()
    x = pixels(model)
    with torch.no_grad():
        out = model(pixel_values=x, output_hidden_states=True)
    assert out.pooler_output.shape == (3, 8)
    assert out.last_hidden_state.shape == (3, 16, 1, 1)  # 16 px halved four times
    assert [tuple(h.shape[1:]) for h in out.hidden_states] == [(4, 16, 16), (4, 8, 8), (8, 4, 4), (8, 2, 2), (16, 1, 1)]
    assert torch.isfinite(out.pooler_output).all() and out.pooler_output.std() > 0
    assert isinstance(model(pixel_values=x, return_dict=False), tuple)


def test_odd_input_sizes_round_up_like_a_strided_conv():
    config = FaceIResNetConfig(image_size=15, stem_channels=2, hidden_sizes=[2, 2], depths=[1, 1], embedding_size=4)
    assert config.feature_map_size == 4
    with torch.no_grad():
        assert FaceIResNetModel(config).eval()(pixel_values=torch.randn(2, 3, 15, 15)).pooler_output.shape == (2, 4)


def test_auto_classes_round_trip_a_saved_folder_with_its_processor(tmp_path):
    model = tiny_face_iresnet()
    model.save_pretrained(tmp_path)
    face_image_processor(model.config.image_size).save_pretrained(tmp_path)
    assert type(T.AutoConfig.from_pretrained(tmp_path)) is FaceIResNetConfig
    loaded = T.AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is FaceIResNetModel and loaded.config.depths == [1, 1, 1, 1]
    x = pixels(model)
    with torch.no_grad():
        assert torch.equal(model(pixel_values=x).pooler_output, loaded(pixel_values=x).pooler_output)
    processor = T.AutoImageProcessor.from_pretrained(tmp_path)
    assert list(processor.image_mean) == [0.5] * 3 and list(processor.image_std) == [0.5] * 3
    assert processor.size.height == processor.size.width == 16


def test_processor_maps_an_image_to_minus_one_to_one_at_112_px():
    from PIL import Image

    processor = face_image_processor(112)
    image = Image.new("RGB", (100, 120), (255, 0, 128))
    values = processor(images=image, return_tensors="pt")["pixel_values"]
    assert values.shape == (1, 3, 112, 112)
    torch.testing.assert_close(values[0, :, 50, 50], torch.tensor([1.0, -1.0, 128 / 255 * 2 - 1]))
    model = FaceIResNetModel(FaceIResNetConfig.for_depth(18, hidden_sizes=[4, 4, 4, 8], stem_channels=4)).eval()
    with torch.no_grad():
        assert model(pixel_values=values).pooler_output.shape == (1, 512)


def test_wrong_input_size_is_named():
    model = tiny_face_iresnet()
    with pytest.raises(ValueError, match=r"\[B, 3, 16, 16\].*\(2, 3, 32, 32\)"):
        model(pixel_values=torch.randn(2, 3, 32, 32))
    with pytest.raises(TypeError, match="pixel_values as a tensor"):
        model(pixel_values=None)


def test_config_refuses_mismatched_stages():
    with pytest.raises(ValueError, match="same length"):
        FaceIResNetConfig(depths=[1, 1], hidden_sizes=[4, 8, 16])
    with pytest.raises(ValueError, match="at least one block"):
        FaceIResNetConfig(depths=[1, 0, 1, 1])


def test_embedding_scale_stays_fixed_at_one_also_after_loading(tmp_path):
    model = tiny_face_iresnet().train()
    assert not model.features.weight.requires_grad
    model.save_pretrained(tmp_path)
    loaded = T.AutoModel.from_pretrained(tmp_path).train()
    loaded.features.weight.requires_grad_(True)  # even when it comes back trainable, it gets no gradient
    loaded(pixel_values=pixels(loaded)).pooler_output.square().sum().backward()
    assert loaded.features.weight.grad is None and loaded.features.bias.grad is not None
    # with a trainable shift, the embedding norm is an ordinary BatchNorm1d (batch statistics, running update)
    reference = torch.nn.BatchNorm1d(8).train()
    reference.load_state_dict(loaded.features.state_dict())
    loaded.features.load_state_dict(reference.state_dict())
    h = torch.randn(6, 8)
    torch.testing.assert_close(loaded.features(h), reference(h))
    torch.testing.assert_close(loaded.features.running_mean, reference.running_mean)


def test_frozen_backbone_keeps_its_statistics_in_training_mode():
    model = tiny_face_iresnet()
    model.requires_grad_(False)
    model.train()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    before = [m.running_mean.clone() for m in norms]
    x = pixels(model)
    train_out = model(pixel_values=x).pooler_output
    assert all(torch.equal(a, m.running_mean) for a, m in zip(before, norms))
    with torch.no_grad():
        torch.testing.assert_close(train_out, model.eval()(pixel_values=x).pooler_output)
    full = tiny_face_iresnet().train()  # trainable BatchNorms (full fine-tuning) use batch statistics
    full(pixel_values=x)
    assert not torch.equal(full.layer1[0].bn1.running_mean, before[norms.index(model.layer1[0].bn1)])


def test_default_targets_are_the_block_convolutions_and_the_embedding_layer():
    assert DEFAULT_TARGET_MODULES.get("face_iresnet") == FACE_IRESNET_TARGET_MODULES
    model = get_peft_model(tiny_face_iresnet(), LoraConfig(r=2, target_modules=FACE_IRESNET_TARGET_MODULES))
    adapted = sorted(
        name.removeprefix("base_model.model.") for name, module in model.named_modules() if hasattr(module, "lora_A")
    )
    blocks = [f"layer{s}.0.conv{c}" for s in range(1, 5) for c in (1, 2)]
    assert adapted == sorted(blocks + ["fc"])


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        model = tiny_face_iresnet().train()
        if checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model(pixel_values=pixels(model)).pooler_output.square().sum().backward()
        grads.append(model.layer2[0].conv1.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])
