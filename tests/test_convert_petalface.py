"""Converting PETALface Swin checkpoints: exact against an independent reference forward, and clear refusals."""

from __future__ import annotations

import json
import pickle
import pickletools
import zipfile
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from petalface_reference import SwinSpec, ViTSpec, swin_forward, swin_state_dict, vit_state_dict
from testing_utils import assert_gated_output_matches, relative_error
from transformers import AutoModel

import petal_peft
from petal_peft.cli import main
from petal_peft.convert import CheckpointFormatError, convert_petalface_checkpoint

TOL = 1e-4


def save(state: dict, path: Path) -> Path:
    torch.save(state, path)
    return path


def load(result):
    base = AutoModel.from_pretrained(result.base_dir).eval()
    return PeftModel.from_pretrained(base, result.adapter_dir).eval() if result.adapter_dir else base


def images(spec: SwinSpec, batch: int = 3) -> torch.Tensor:
    return torch.randn(batch, 3, spec.image, spec.image, generator=torch.Generator().manual_seed(5))


def test_pretrained_checkpoint_converts_exactly(tmp_path):
    spec = SwinSpec(layout="pretrained")
    state = swin_state_dict(spec)
    result = convert_petalface_checkpoint(save(state, tmp_path / "model.pt"), tmp_path / "out", progress=False)
    assert result.adapter_dir is None and result.layout == "pretrained"
    assert result.architecture["depths"] == [2, 2, 1] and result.architecture["num_heads"] == [1, 2, 2]
    assert (result.base_dir / "model.safetensors").is_file() and (
        result.base_dir / "preprocessor_config.json"
    ).is_file()
    model = load(result)
    x = images(spec)
    with torch.no_grad():
        assert relative_error(model(pixel_values=x).pooler_output, swin_forward(state, spec, x, None)) < TOL
    processor = json.loads((result.base_dir / "preprocessor_config.json").read_text())
    assert processor["size"] == {"height": 40, "width": 40} and processor["image_mean"] == [0.5] * 3


@pytest.mark.parametrize("iqa", ["brisque", "cnniqa"])
def test_quality_gated_checkpoint_matches_reference_for_each_iqa_orientation(tmp_path, iqa):
    spec = SwinSpec(layout="quality_gated")
    state = swin_state_dict(spec, seed=1)
    result = convert_petalface_checkpoint(save(state, tmp_path / "m.pt"), tmp_path / "out", iqa=iqa, progress=False)
    assert result.layout == "quality_gated"
    config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert config["peft_type"] == "QUALITY_GATED_LORA" and config["score_higher_is_better"] is (iqa == "cnniqa")
    model = load(result)
    x, alpha = images(spec), torch.tensor([0.0, 0.3, 1.0])
    with torch.no_grad():
        reference = swin_forward(state, spec, x, alpha)
    assert_gated_output_matches(model, x, alpha, iqa, reference, TOL)
    with torch.no_grad():
        with model.disable_adapter():  # the base alone is the reference without its LoRA
            bare = {k: v for k, v in state.items() if "trainable_lora" not in k}
            assert relative_error(model(pixel_values=x).pooler_output, swin_forward(bare, spec, x, None)) < TOL


def test_reference_gate_runs_the_released_model_as_trained_with_unclamped_alpha(tmp_path):
    spec = SwinSpec(layout="quality_gated")
    state = swin_state_dict(spec, seed=2)
    result = convert_petalface_checkpoint(
        save(state, tmp_path / "m.pt"), tmp_path / "out", iqa="brisque", gate_threshold=30.0, progress=False
    )
    config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert (config["gate_mode"], config["allow_unbounded_quality"]) == ("linear_unclamped", True)
    # float64: alpha ~ 10 scales the (deliberately large) LoRA terms tenfold, which float32 rounding would blur
    model = load(result).double()
    state = {k: v.double() if v.is_floating_point() else v for k, v in state.items()}
    scores = torch.tensor([21.0, 30.2, 39.5])  # BRISQUE scores; the reference's alpha = 0.5 + (score - 30)
    x = images(spec).double()
    with torch.no_grad():
        reference = swin_forward(state, spec, x, (0.5 + (scores - 30.0)).double())
        assert relative_error(model(pixel_values=x, quality_score=scores).pooler_output, reference) < 1e-10
        with pytest.raises(ValueError, match="allow_unbounded_quality=True"):  # no silent extrapolation without it
            model.peft_config["default"].allow_unbounded_quality = False
            model(pixel_values=x, quality_score=scores)


def test_single_branch_lora_becomes_a_plain_peft_lora_adapter(tmp_path):
    spec = SwinSpec(layout="lora", rank=3)
    state = swin_state_dict(spec, seed=3)
    result = convert_petalface_checkpoint(
        save(state, tmp_path / "m.pt"), tmp_path / "out", lora_scale=0.5, progress=False
    )
    config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["lora_alpha"] == 1.5 and config["r"] == 3
    x = images(spec)
    with torch.no_grad():
        reference = swin_forward(state, spec, x, None, scale=0.5)
        assert relative_error(load(result)(pixel_values=x).pooler_output, reference) < TOL


def test_other_geometries_convert_from_shapes_alone(tmp_path):
    # 2 stages on an 8 x 8 grid, window 4 (the last stage runs one unshifted window), no head LoRA, fp16 output
    spec = SwinSpec(
        embed=8, depths=(2, 2), heads=(2, 4), patch=4, grid=8, window=4, emb=12, layout="quality_gated", head_lora=False
    )
    state = swin_state_dict(spec, seed=4)
    path = save({f"module.{k}": v for k, v in state.items()}, tmp_path / "ddp.pt")  # DDP's prefix is stripped
    result = convert_petalface_checkpoint(path, tmp_path / "out", progress=False)
    arch = result.architecture
    assert (arch["image_size"], arch["patch_size"], arch["window_size"], arch["embedding_size"]) == (32, 4, 4, 12)
    model = load(result)
    x, alpha = images(spec, 2), torch.tensor([0.25, 0.9])
    with torch.no_grad():
        assert (
            relative_error(model(pixel_values=x, quality=1 - alpha).pooler_output, swin_forward(state, spec, x, alpha))
            < TOL
        )
    half = convert_petalface_checkpoint(path, tmp_path / "half", dtype="float16", progress=False)
    assert json.loads((half.base_dir / "config.json").read_text())["dtype"] == "float16"
    assert AutoModel.from_pretrained(half.base_dir).embeddings.norm.weight.dtype == torch.float16


def test_training_checkpoint_wrapper_is_accepted(tmp_path):
    state = swin_state_dict(SwinSpec())
    wrapped = {"epoch": 3, "global_step": 10, "state_dict_backbone": state}
    result = convert_petalface_checkpoint(save(wrapped, tmp_path / "ckpt.pt"), tmp_path / "out", progress=False)
    assert result.layout == "pretrained"


# ---- refusals -------------------------------------------------------------------------------------------------
class _CreatesAFile:
    """Unpickling this runs Path.touch(marker): what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_with_code_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    state = swin_state_dict(SwinSpec())
    state["extra"] = _CreatesAFile(marker)
    path = tmp_path / "evil.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointFormatError, match="refused to load.*not executed"):
        convert_petalface_checkpoint(path, tmp_path / "out", progress=False)
    assert not marker.exists() and not (tmp_path / "out").exists()
    # the file really carries the payload (read its opcodes, never unpickle it): a call to Path.touch
    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    strings = [arg for op, arg, _ in pickletools.genops(data) if isinstance(arg, str)]
    assert any("touch" in s for s in strings) and any("pathlib" in s for s in strings)


class _OpensAFileForWriting:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_plain_pickle_with_code_is_refused_too(tmp_path):
    marker = tmp_path / "x"
    path = tmp_path / "plain.pkl"
    with open(path, "wb") as handle:
        pickle.dump({"patch_embed.proj.weight": _OpensAFileForWriting(marker)}, handle, protocol=2)
    with pytest.raises(CheckpointFormatError, match="refused to load.*open"):
        convert_petalface_checkpoint(path, tmp_path / "out", progress=False)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"this is not a checkpoint", "is not a PyTorch checkpoint"),
        ([1, 2, 3], "holds a list, not a state dict"),
        ({"a": torch.zeros(1), "b": 3}, "entry 'b' is a int, not a tensor"),
        ({"encoder.weight": torch.zeros(2)}, "is not a PETALface Swin checkpoint.*has no 'patch_embed.proj.weight'"),
    ],
)
def test_not_such_a_checkpoint_is_named(tmp_path, payload, message):
    path = tmp_path / "model.pt"
    if isinstance(payload, bytes):
        path.write_bytes(payload)
    else:
        torch.save(payload, path)
    with pytest.raises(CheckpointFormatError, match=message):
        convert_petalface_checkpoint(path, tmp_path / "out", progress=False)


def test_arcface_vit_checkpoint_points_to_the_right_converter(tmp_path):
    path = save(vit_state_dict(ViTSpec()), tmp_path / "vit.pt")
    with pytest.raises(CheckpointFormatError, match="convert_insightface_vit"):
        convert_petalface_checkpoint(path, tmp_path / "out", progress=False)


def test_missing_unexpected_and_mis_shaped_keys_are_listed(tmp_path):
    state = swin_state_dict(SwinSpec(layout="quality_gated"))
    del state["layers.1.blocks.0.mlp.fc2.bias"]
    del state["layers.0.blocks.1.attn.qkv.trainable_lora_up2.weight"]
    state["layers.0.blocks.0.attn.extra.weight"] = torch.zeros(2)
    state["layers.1.downsample.reduction.weight"] = torch.zeros(5, 5)
    with pytest.raises(CheckpointFormatError) as err:
        convert_petalface_checkpoint(save(state, tmp_path / "m.pt"), tmp_path / "out", progress=False)
    text = str(err.value)
    assert "missing keys [layers.0.blocks.1.attn.qkv.trainable_lora_up2.weight, layers.1.blocks.0.mlp.fc2.bias]" in text
    assert "unexpected keys [layers.0.blocks.0.attn.extra.weight]" in text
    assert "layers.1.downsample.reduction.weight: (5, 5) (expected (32, 64))" in text


def test_nan_weights_and_bad_arguments_are_refused(tmp_path):
    state = swin_state_dict(SwinSpec())
    path = save(state, tmp_path / "m.pt")
    with pytest.raises(ValueError, match="iqa must be one of"):
        convert_petalface_checkpoint(path, tmp_path / "out", iqa="niqe", progress=False)
    with pytest.raises(ValueError, match="dtype must be one of"):
        convert_petalface_checkpoint(path, tmp_path / "out", dtype="int8", progress=False)
    state["norm.weight"][0] = float("nan")
    with pytest.raises(CheckpointFormatError, match="'norm.weight' contains NaN"):
        convert_petalface_checkpoint(save(state, tmp_path / "nan.pt"), tmp_path / "out", progress=False)


def test_output_folder_is_published_whole(tmp_path):
    path = save(swin_state_dict(SwinSpec(layout="quality_gated")), tmp_path / "m.pt")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="not empty"):
        convert_petalface_checkpoint(path, out, progress=False)
    assert (out / "keep.txt").is_file()
    result = convert_petalface_checkpoint(path, out, overwrite=True, progress=False)
    assert not (out / "keep.txt").exists() and sorted(p.name for p in out.iterdir()) == ["adapter", "base"]
    assert (result.base_dir / "config.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no staging folder left behind


# ---- command line ---------------------------------------------------------------------------------------------
def test_cli_converts_and_pushes_with_a_mocked_hub(tmp_path, monkeypatch, capsys):
    from testing_utils import fake_hub_api

    def check_upload(kwargs):
        assert (Path(kwargs["folder_path"]) / "config.json").is_file() or kwargs.get("path_in_repo") == "adapter"

    calls = []
    monkeypatch.setattr(
        "huggingface_hub.HfApi", fake_hub_api(calls, check_upload, "https://huggingface.co/me/swin/commit/abc")
    )
    path = save(swin_state_dict(SwinSpec(layout="quality_gated")), tmp_path / "model.pt")
    argv = ["convert", "petalface", str(path), "--out", str(tmp_path / "out"), "--iqa", "cnniqa", "--no_progress"]
    assert main([*argv, "--push_to_hub", "me/swin", "--private"]) == 0
    out = capsys.readouterr().out
    assert "quality_gated" in out and "Pushed to https://huggingface.co/me/swin/commit/abc" in out
    assert [c[1] for c in calls if c[0] == "create_repo"] == [
        {"repo_id": "me/swin", "private": True, "exist_ok": True, "repo_type": "model"}
    ]
    uploads = [c[1] for c in calls if c[0] == "upload_folder"]
    assert [Path(u["folder_path"]).name for u in uploads] == ["base", "adapter"]
    assert uploads[1]["path_in_repo"] == "adapter" and all(u["repo_id"] == "me/swin" for u in uploads)


def test_cli_reports_a_bad_file_in_one_line(tmp_path, capsys):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"garbage")
    assert main(["convert", "petalface", str(bad), "--out", str(tmp_path / "out"), "--no_progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("petal-peft convert: error:") and "is not a PyTorch checkpoint" in err and "\n" not in err


def test_converted_adapter_needs_petal_peft_registered():
    # the QUALITY_GATED_LORA type is registered by `import petal_peft`, as the base model card says
    assert petal_peft.QUALITY_GATED_LORA.value == "QUALITY_GATED_LORA"


def test_reference_layout_export_round_trips(tmp_path):
    from testing_utils import tiny_face_swin

    from petal_peft.convert.petalface import to_petalface_state_dict

    model = tiny_face_swin()
    state = to_petalface_state_dict(model)
    assert "layers.0.blocks.1.attn.qkv.weight" in state and "feature_layer.2.weight" in state
    result = convert_petalface_checkpoint(save(state, tmp_path / "m.pt"), tmp_path / "out", progress=False)
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        assert torch.equal(load(result)(pixel_values=x).pooler_output, model(pixel_values=x).pooler_output)
