"""Converting insightface IResNet checkpoints and PETALface's IResNet LoRA checkpoints: exact against an
independent functional forward, and clear refusals."""

from __future__ import annotations

import json

import pytest
import torch
from iresnet_reference import IResNetSpec, iresnet_forward, iresnet_state_dict
from peft import PeftModel
from petalface_reference import SwinSpec, swin_state_dict
from transformers import AutoModel

import petal_peft  # noqa: F401
from petal_peft.cli import main
from petal_peft.convert import CheckpointFormatError, convert_insightface_iresnet, convert_petalface_checkpoint

TOL = 1e-4


class NotATensor:  # a pickled global: loading it would import and run code
    pass


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours.double() - reference).abs().max() / reference.abs().max())


def save(state, tmp_path, name="backbone.pth"):
    path = tmp_path / name
    torch.save(state, path)
    return path


def images(spec: IResNetSpec, batch: int = 3) -> torch.Tensor:
    return torch.randn(batch, 3, spec.image, spec.image, generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("depth, blocks", [(18, (2, 2, 2, 2)), (34, (3, 4, 6, 3))])
def test_arcface_backbone_converts_exactly(tmp_path, depth, blocks):
    spec = IResNetSpec(depths=blocks)
    state = iresnet_state_dict(spec)
    result = convert_insightface_iresnet(save(state, tmp_path), tmp_path / "out", progress=False)
    assert result.adapter_dir is None and result.layout == "pretrained"
    assert result.architecture["num_layers"] == depth and result.architecture["depths"] == list(blocks)
    assert result.architecture["hidden_sizes"] == [4, 8, 8, 16] and result.architecture["image_size"] == 16
    model = AutoModel.from_pretrained(result.base_dir).eval()
    assert type(model).__name__ == "FaceIResNetModel" and model.config.num_layers == depth
    x = images(spec)
    with torch.no_grad():
        assert relative_error(model(pixel_values=x).pooler_output, iresnet_forward(state, spec, x)) < TOL


def test_ddp_prefix_and_arcface_geometry_keep_112_px_input(tmp_path):
    spec = IResNetSpec(image=112, widths=(2, 2, 4, 4), stem=2)  # 7 x 7 feature map, as arcface_torch's at 112 px
    state = iresnet_state_dict(spec)
    path = save({f"module.{key}": value for key, value in state.items()}, tmp_path)
    result = convert_insightface_iresnet(path, tmp_path / "out", progress=False)
    assert result.architecture["image_size"] == 112
    model = AutoModel.from_pretrained(result.base_dir).eval()
    x = images(spec, 2)
    with torch.no_grad():
        assert relative_error(model(pixel_values=x).pooler_output, iresnet_forward(state, spec, x)) < TOL


@pytest.mark.parametrize("convert", ["petalface", "insightface"])
def test_petalface_iresnet_lora_becomes_a_plain_peft_lora_adapter(tmp_path, convert):
    spec = IResNetSpec(rank=2, scale=0.5)
    state = iresnet_state_dict(spec, seed=1)
    path = save(state, tmp_path, "model.pt")
    if convert == "petalface":
        result = convert_petalface_checkpoint(path, tmp_path / "out", lora_scale=0.5, progress=False)
    else:
        result = convert_insightface_iresnet(path, tmp_path / "out", lora_scale=0.5, progress=False)
    assert result.layout == "lora" and result.architecture["lora_rank"] == 2
    saved = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert saved["peft_type"] == "LORA" and saved["r"] == 2 and saved["lora_alpha"] == 1
    model = PeftModel.from_pretrained(AutoModel.from_pretrained(result.base_dir), result.adapter_dir).eval()
    adapted = {type(module.base_layer).__name__ for module in model.modules() if hasattr(module, "lora_A")}
    assert adapted == {"Conv2d", "Linear"}
    lora_layers = sum(1 for module in model.modules() if hasattr(module, "lora_A"))
    assert lora_layers == 1 + 2 * 8 + 4 + 1  # stem, two per block, four shortcuts, fc
    x = images(spec)
    with torch.no_grad():
        assert relative_error(model(pixel_values=x).pooler_output, iresnet_forward(state, spec, x)) < TOL
        with model.disable_adapter():  # the base alone is the reference without its LoRA
            plain = IResNetSpec(rank=None)
            base_state = {k: v for k, v in state.items() if "trainable_lora" not in k}
            assert relative_error(model(pixel_values=x).pooler_output, iresnet_forward(base_state, plain, x)) < TOL


def test_unknown_depth_is_refused_in_one_line(tmp_path):
    path = save(iresnet_state_dict(IResNetSpec(depths=(1, 1, 1, 1))), tmp_path)
    with pytest.raises(CheckpointFormatError, match=r"unknown IResNet depth: blocks per stage \[1, 1, 1, 1\]") as err:
        convert_insightface_iresnet(path, tmp_path / "out", progress=False)
    assert "\n" not in str(err.value) and "18 = [2, 2, 2, 2]" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_missing_unexpected_and_misshaped_keys_are_named(tmp_path):
    state = iresnet_state_dict(IResNetSpec())
    del state["layer2.1.bn3.weight"]
    state["head.weight"] = torch.zeros(3)
    state["layer3.0.prelu.weight"] = torch.zeros(5)
    with pytest.raises(CheckpointFormatError) as err:
        convert_insightface_iresnet(save(state, tmp_path), tmp_path / "out", progress=False)
    message = str(err.value)
    assert "missing keys [layer2.1.bn3.weight]" in message and "unexpected keys [head.weight]" in message
    assert "layer3.0.prelu.weight: (5,) (expected (8,))" in message and "IResNet-18" in message


def test_a_lora_checkpoint_missing_a_factor_is_named(tmp_path):
    state = iresnet_state_dict(IResNetSpec(rank=2))
    del state["layer1.0.downsample.0.trainable_lora_up.weight"]
    with pytest.raises(CheckpointFormatError, match=r"missing keys \[layer1\.0\.downsample\.0\.trainable_lora_up"):
        convert_petalface_checkpoint(save(state, tmp_path), tmp_path / "out", progress=False)


def test_other_architectures_are_pointed_to_their_converter(tmp_path):
    path = save(swin_state_dict(SwinSpec()), tmp_path, "model.pt")
    with pytest.raises(CheckpointFormatError, match="PETALface Swin checkpoint.*convert petalface"):
        convert_insightface_iresnet(path, tmp_path / "out", progress=False)


def test_pickled_globals_are_refused_naming_the_global(tmp_path):
    state = iresnet_state_dict(IResNetSpec())
    state["config"] = NotATensor()
    path = save(state, tmp_path)
    with pytest.raises(CheckpointFormatError, match=r"refused to load.*NotATensor"):
        convert_insightface_iresnet(path, tmp_path / "out", progress=False)


def test_cli_converts_and_prints_one_line_errors(tmp_path, capsys):
    good = save(iresnet_state_dict(IResNetSpec()), tmp_path)
    assert main(["convert", "insightface-iresnet", str(good), "--out", str(tmp_path / "out"), "--no_progress"]) == 0
    assert "IResNet" not in capsys.readouterr().err and (tmp_path / "out" / "base" / "config.json").is_file()

    unknown = save(iresnet_state_dict(IResNetSpec(depths=(2, 2, 3, 2))), tmp_path, "odd.pth")
    assert main(["convert", "insightface-iresnet", str(unknown), "--out", str(tmp_path / "o2"), "--no_progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown IResNet depth: blocks per stage [2, 2, 3, 2]" in err

    state = iresnet_state_dict(IResNetSpec())
    state["config"] = NotATensor()
    pickled = save(state, tmp_path, "pickled.pth")
    assert main(["convert", "insightface-iresnet", str(pickled), "--out", str(tmp_path / "o3"), "--no_progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "refused to load" in err and "NotATensor" in err
