"""The quality-gated conv layer: the fused forward against an explicit two-branch computation, the gate, exact
merging, groups, refusals, saving and loading."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file
from tiny_models import randomize_adapters
from torch import nn

from petal_peft import QualityGatedConv2d, QualityGatedLinear, QualityGatedLoraConfig

# (in, out, kernel, stride, padding, dilation, groups, padding_mode, bias): the geometries the layer must honour
GEOMETRIES = {
    "3x3": (4, 6, 3, 1, 1, 1, 1, "zeros", True),
    "strided-dilated": (4, 6, 3, 2, 2, 2, 1, "zeros", False),
    "grouped-reflect": (4, 6, 3, 1, 1, 1, 2, "reflect", True),
    "1x1-strided": (4, 8, 1, 2, 0, 1, 1, "zeros", False),
    "5x3-circular": (4, 4, (5, 3), 1, (2, 1), 1, 4, "circular", True),
}


class ConvNet(nn.Module):
    """conv -> relu -> conv -> mean pool -> linear; the second conv has the geometry under test."""

    def __init__(self, geometry: str = "3x3") -> None:
        super().__init__()
        cin, cout, kernel, stride, padding, dilation, groups, mode, bias = GEOMETRIES[geometry]
        self.stem = nn.Conv2d(3, cin, 3, padding=1)
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, dilation, groups, bias, padding_mode=mode)
        self.head = nn.Linear(cout, 5)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(F.relu(self.stem(pixel_values))).mean((2, 3)))


def gated(geometry: str = "3x3", r: int = 4, targets=("stem", "conv", "head"), **config) -> nn.Module:
    torch.manual_seed(0)
    settings = dict(
        r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=targets if isinstance(targets, str) else list(targets)
    )
    model = get_peft_model(ConvNet(geometry), QualityGatedLoraConfig(**{**settings, **config}))
    randomize_adapters(model)
    return model.eval()


def images(batch: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, 9, 9, generator=torch.Generator().manual_seed(seed))


def reference_conv(layer: QualityGatedConv2d, x: torch.Tensor, q: torch.Tensor, geometry: str) -> torch.Tensor:
    """``conv(x) + s Up_hq(Down_hq(q x)) + s Up_lq(Down_lq((1 - q) x))``, two branches run separately, with the
    geometry taken from the test's table (not from the layer)."""
    _, _, kernel, stride, padding, dilation, groups, mode, _ = GEOMETRIES[geometry]
    pad = (padding, padding) if isinstance(padding, int) else padding

    def conv(inputs, weight, bias=None):
        if mode != "zeros":
            inputs = F.pad(inputs, (pad[1], pad[1], pad[0], pad[0]), mode=mode)
            return F.conv2d(inputs, weight, bias, stride, 0, dilation, groups)
        return F.conv2d(inputs, weight, bias, stride, padding, dilation, groups)

    base = layer.base_layer
    scale = layer.scaling["default"]
    q = q.view(-1, 1, 1, 1)
    high = F.conv2d(conv(q * x, layer.lora_A["default"].weight), layer.lora_B["default"].weight, groups=groups)
    low = F.conv2d(
        conv((1 - q) * x, layer.lora_A_lq["default"].weight), layer.lora_B_lq["default"].weight, groups=groups
    )
    return conv(x, base.weight, base.bias) + scale * high + scale * low


def layer_input(model: nn.Module, name: str, x: torch.Tensor, q: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    layer = model.get_submodule(f"base_model.model.{name}")
    seen = {}
    handle = layer.register_forward_hook(lambda m, args, out: seen.update(x=args[0], y=out))
    model(pixel_values=x, quality=q)
    handle.remove()
    return layer, seen


@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
def test_fused_forward_equals_the_two_branch_computation_per_image(geometry):
    r = 4
    model = gated(geometry, r=r)
    layer = model.get_submodule("base_model.model.conv")
    assert isinstance(layer, QualityGatedConv2d)
    x, q = images(4), torch.tensor([0.0, 0.3, 0.8, 1.0])
    _, seen = layer_input(model, "conv", x, q)
    torch.testing.assert_close(seen["y"], reference_conv(layer, seen["x"], q, geometry), rtol=1e-5, atol=1e-5)


def test_each_image_gets_its_own_quality_and_the_branches_differ():
    model = gated()
    x, q = images(3), torch.tensor([0.0, 0.6, 1.0])
    together = model(pixel_values=x, quality=q)
    for i in range(3):
        alone = model(pixel_values=x[i : i + 1], quality=q[i : i + 1])
        torch.testing.assert_close(alone, together[i : i + 1], rtol=1e-5, atol=1e-5)
    high, low = model(pixel_values=x, quality=torch.ones(3)), model(pixel_values=x, quality=torch.zeros(3))
    assert (high - low).abs().max() > 1e-2
    # only the conv layers adapted: the gate still separates the two ends
    convs_only = gated(targets=("stem", "conv"))
    assert (
        convs_only(pixel_values=x, quality=torch.ones(3)) - convs_only(pixel_values=x, quality=torch.zeros(3))
    ).abs().max() > 1e-2


def test_gradients_reach_only_the_branch_the_gate_opens():
    model = gated(targets=("conv",)).train()
    x = images(2)
    for quality, closed in ((1.0, "lora_A_lq"), (0.0, "lora_A")):
        model.zero_grad()
        model(pixel_values=x, quality=torch.full((2,), quality)).pow(2).sum().backward()
        layer = model.get_submodule("base_model.model.conv")
        opened = "lora_A" if closed == "lora_A_lq" else "lora_A_lq"
        assert getattr(layer, closed)["default"].weight.grad.abs().max() == 0
        assert getattr(layer, opened)["default"].weight.grad.abs().max() > 0
        assert layer.base_layer.weight.grad is None


@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
@pytest.mark.parametrize("quality", [0.0, 0.35, 1.0])
def test_merge_and_unload_is_exact_at_that_quality(geometry, quality):
    model = gated(geometry)
    x = images(3)
    expected = model(pixel_values=x, quality=torch.full((3,), quality))
    plain = copy.deepcopy(model).merge_and_unload(quality=quality)
    assert type(plain.conv) is nn.Conv2d and type(plain.head) is nn.Linear
    torch.testing.assert_close(plain(pixel_values=x), expected, rtol=1e-5, atol=1e-5)
    # and merging really changes the weights, differently at each end
    other = copy.deepcopy(model).merge_and_unload(quality=1.0 - quality if quality != 0.35 else 0.0)
    assert not torch.allclose(other.conv.weight, plain.conv.weight)


def test_merge_then_unmerge_restores_the_gated_layer():
    model = gated("grouped-reflect")
    x, q = images(3), torch.tensor([0.1, 0.5, 0.9])
    before = model(pixel_values=x, quality=q)
    weight = model.base_model.model.conv.base_layer.weight.clone()
    model.merge_adapter(quality=0.25)
    torch.testing.assert_close(
        model(pixel_values=x), gated("grouped-reflect")(pixel_values=x, quality=torch.full((3,), 0.25))
    )
    model.unmerge_adapter()
    torch.testing.assert_close(model.base_model.model.conv.base_layer.weight, weight, rtol=0, atol=1e-6)
    torch.testing.assert_close(model(pixel_values=x, quality=q), before, rtol=1e-5, atol=1e-6)


def test_channels_last_and_unbatched_inputs():
    model = gated(targets=("conv",))
    layer = model.get_submodule("base_model.model.conv")
    x, q = images(2), torch.tensor([0.2, 0.9])
    _, seen = layer_input(model, "conv", x, q)
    model.base_model._quality_state.quality = q
    try:
        channels_last = layer(seen["x"].contiguous(memory_format=torch.channels_last))
        assert channels_last.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(channels_last, seen["y"], rtol=1e-5, atol=1e-5)
        model.base_model._quality_state.quality = q[:1]
        torch.testing.assert_close(layer(seen["x"][0]), seen["y"][0], rtol=1e-5, atol=1e-5)
    finally:
        model.base_model._quality_state.quality = None


@pytest.mark.parametrize("position", ["hidden", "input"])
def test_dropout_positions_train_and_are_off_in_eval(position):
    model = gated(targets=("conv",), lora_dropout=0.5, dropout_position=position)
    x, q = images(2), torch.tensor([0.3, 0.7])
    evaluated = model(pixel_values=x, quality=q)
    model.train()
    trained = model(pixel_values=x, quality=q)
    assert not torch.allclose(trained, evaluated)
    trained.sum().backward()
    model.eval()
    torch.testing.assert_close(model(pixel_values=x, quality=q), evaluated)


def test_regex_targets_name_convolutions():
    model = gated(targets=r"stem|conv")
    kinds = {name: type(m) for name, m in model.base_model.model.named_children()}
    assert kinds == {"stem": QualityGatedConv2d, "conv": QualityGatedConv2d, "head": nn.Linear}
    assert isinstance(gated(targets=["head"]).base_model.model.head, QualityGatedLinear)


def test_groups_that_do_not_divide_the_rank_are_refused_in_one_line():
    with pytest.raises(
        ValueError, match=r"^'conv' is an nn.Conv2d with groups=2, which does not divide the adapter rank r=3"
    ) as err:
        gated("grouped-reflect", r=3, targets=("conv",))
    assert "\n" not in str(err.value)
    # a rank pattern that fits the groups makes it work
    model = gated("grouped-reflect", r=3, targets=("conv", "head"), rank_pattern={"conv": 4})
    assert model.base_model.model.conv.lora_A_lq["default"].weight.shape == (4, 2, 3, 3)


@pytest.mark.parametrize("conv", [nn.Conv1d(4, 4, 3), nn.Conv3d(4, 4, 3)])
def test_conv1d_and_conv3d_targets_are_refused_in_one_line(conv):
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.odd = conv
            self.head = nn.Linear(4, 2)

    kind = type(conv).__name__
    with pytest.raises(
        ValueError, match=rf"^'odd' is an nn.{kind}: quality-gated LoRA adapts nn.Linear and nn.Conv2d"
    ) as err:
        get_peft_model(Net(), QualityGatedLoraConfig(r=2, target_modules=["odd", "head"]))
    assert "\n" not in str(err.value)


def test_save_and_load_round_trip_with_conv_keys(tmp_path):
    model = gated("grouped-reflect")
    x, q = images(3), torch.tensor([0.0, 0.4, 1.0])
    expected = model(pixel_values=x, quality=q)
    model.save_pretrained(tmp_path)
    keys = set(load_file(tmp_path / "adapter_model.safetensors"))
    for branch in ("lora_A", "lora_B", "lora_A_lq", "lora_B_lq"):
        assert f"base_model.model.conv.{branch}.weight" in keys
    torch.manual_seed(0)
    loaded = PeftModel.from_pretrained(ConvNet("grouped-reflect"), tmp_path).eval()
    assert isinstance(loaded.base_model.model.conv, QualityGatedConv2d)
    torch.testing.assert_close(loaded(pixel_values=x, quality=q), expected)


def test_loading_with_another_rank_names_the_conv_weight(tmp_path):
    gated("3x3").save_pretrained(tmp_path)
    config = QualityGatedLoraConfig.from_pretrained(tmp_path)
    config.r = 2
    config.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"'conv\.lora_A\.default\.weight' has shape \(4, 4, 3, 3\).*edited"):
        PeftModel.from_pretrained(ConvNet("3x3"), tmp_path)
