"""Helpers shared by the tests: tiny random models, tiny face-like folders, training flags and subprocess runs.

Nothing here downloads anything: models are random and built from configs; the "identities" are coloured
patterns with per-image jitter, enough for a margin head to learn something in a few steps. This is not a test
module (pytest collects nothing from it); the tests import it by name (``conftest.py`` puts this folder on the path).
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import torch
import transformers as T
from PIL import Image
from torch import nn

REPO = Path(__file__).resolve().parents[1]
#: the training example that the subprocess tests launch
SCRIPT = REPO / "examples" / "train_tinyface.py"
#: side of the tiny transformers' square input, in pixels
IMAGE = 32


# ---- tiny random models -----------------------------------------------------------------------------------------
def tiny_vit(seed: int = 0) -> T.ViTModel:
    """Two layers, width 32 (MLP 64), 8 px patches on 32 px images, no dropout, random weights, in eval mode.

    Built here, not with a petal_peft helper: tests that check what happens *without* ``import petal_peft`` use it.
    """
    torch.manual_seed(seed)
    sizes = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    config = T.ViTConfig(
        **sizes, image_size=IMAGE, patch_size=8, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
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


def tiny_face_swin(seed: int = 0, **overrides) -> torch.nn.Module:
    """A tiny random petal-peft face Swin (40 px, 20 x 20 patches, 3 stages, window 5), in eval mode."""
    from petal_peft.models import FaceSwinConfig, FaceSwinModel

    torch.manual_seed(seed)
    settings = dict(embed_dim=8, depths=[2, 2, 1], num_heads=[1, 2, 2], image_size=40, patch_size=2, embedding_size=16)
    return FaceSwinModel(FaceSwinConfig(**{**settings, **overrides})).eval()


def tiny_face_conv_vit_config(**overrides):
    """A tiny petal-peft conv-stem ViT config: 40 px, two stem units (4 and 8 channels), 2 layers of width 16."""
    from petal_peft.models import FaceConvViTConfig

    settings = dict(
        image_size=40,
        stem_channels=4,
        stem_units=[[4, 1], [8, 2]],
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        embedding_size=8,
    )
    return FaceConvViTConfig(**{**settings, **overrides})


def tiny_face_conv_vit(seed: int = 0, **overrides) -> torch.nn.Module:
    """A random model of :func:`tiny_face_conv_vit_config`, in eval mode."""
    from petal_peft.models import FaceConvViTModel

    torch.manual_seed(seed)
    return FaceConvViTModel(tiny_face_conv_vit_config(**overrides)).eval()


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


def randomize_adapters(model: torch.nn.Module, seed: int = 1, std: float = 0.2) -> None:
    """Give every LoRA factor non-zero values (B starts at zero, which would hide bugs)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * std)


def gated_tiny_vit(quality_estimator: str, gate_mode: str, r: int = 4) -> torch.nn.Module:
    """:func:`tiny_vit` with a quality-gated adapter (no dropout, random non-zero factors) and the named
    estimator and gate, in eval mode."""
    from peft import get_peft_model

    from petal_peft import QualityGatedLoraConfig

    config = QualityGatedLoraConfig(
        r=r, lora_alpha=r, lora_dropout=0.0, quality_estimator=quality_estimator, gate_mode=gate_mode
    )
    model = get_peft_model(tiny_vit(), config)
    randomize_adapters(model)
    return model.eval()


def adapted_module_names(model: torch.nn.Module, layer_type: type[nn.Module]) -> set[str]:
    """Names (relative to the base model) of the modules of ``model`` that are ``layer_type``."""
    return {
        name.removeprefix("base_model.model.")
        for name, module in model.named_modules()
        if isinstance(module, layer_type)
    }


def images(batch: int = 3, seed: int = 0) -> torch.Tensor:
    """Random pixel values for the tiny transformers."""
    return torch.randn(batch, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(seed))


def embedding(output) -> torch.Tensor:
    """The embedding a model output carries, whatever the architecture calls it."""
    for name in ("image_embeds", "pooler_output", "last_hidden_state"):
        value = getattr(output, name, None)
        if value is not None:
            return value
    raise AssertionError("no embedding in output")


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """Largest absolute difference, relative to the reference's largest magnitude (computed in float64)."""
    ours, reference = ours.double(), reference.double()
    return float((ours - reference).abs().max() / reference.abs().max())


def assert_gated_output_matches(model, x, alpha, iqa: str, reference: torch.Tensor, tol: float) -> None:
    """A converted two-branch adapter reproduces the reference at the reference's ``alpha``, given as quality in the
    IQA metric's orientation, and is measurably different with the orientation swapped (so a test of it would catch
    swapped branches)."""
    quality = alpha if iqa == "cnniqa" else 1 - alpha
    with torch.no_grad():
        assert relative_error(model(pixel_values=x, quality=quality).pooler_output, reference) < tol
        assert relative_error(model(pixel_values=x, quality=1 - quality).pooler_output, reference) > 1e-3


# ---- test quality estimators and gates (registered under names each test module picks) --------------------------
class LeftHalfBrightness(nn.Module):
    """Test estimator: mean of the left half of the image, so an image and its mirror get different scores."""

    higher_is_better = True

    def __init__(self, image_mean=None, image_std=None):
        super().__init__()

    def forward(self, pixel_values):
        return pixel_values[..., : pixel_values.shape[-1] // 2].mean(dim=(1, 2, 3))


class SigmoidGate(nn.Module):
    """Test gate: a plain logistic of the score."""

    def __init__(self, threshold, temperature, higher_is_better):
        super().__init__()
        self.threshold, self.temperature = threshold, temperature

    def forward(self, score):
        return torch.sigmoid((score - self.threshold) / self.temperature)


# ---- tiny saved bases and face-like folders ---------------------------------------------------------------------
def make_tiny_base(path: Path, seed: int = 0) -> Path:
    """A random 2-layer ViT (32 px input) plus its image processor, saved like a Hub checkpoint."""
    tiny_vit(seed).save_pretrained(path)
    T.ViTImageProcessor(
        size={"height": IMAGE, "width": IMAGE}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    ).save_pretrained(path)
    return path


def identity_image(identity: int, index: int, size: int = 48) -> Image.Image:
    """Image ``index`` of synthetic identity ``identity``: a 4 x 4 colour pattern plus per-image noise."""
    rng = np.random.default_rng(1000 * identity + index)
    base = np.random.default_rng(identity).uniform(0, 255, size=(4, 4, 3))
    img = np.kron(base, np.ones((size // 4, size // 4, 1)))
    img = img + rng.normal(0, 20, size=img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def make_face_folder(root: Path, identities: int = 4, per_identity: int = 6) -> Path:
    """``root/id<k>/<n>.png`` training layout."""
    for k in range(identities):
        d = root / f"id{k}"
        d.mkdir(parents=True, exist_ok=True)
        for n in range(per_identity):
            identity_image(k, n).save(d / f"{n}.png")
    return root


def make_eval_folder(root: Path, identities: int = 3, per_identity: int = 3) -> Path:
    """TinyFace layout: ``Probe/``, ``Gallery_Match/``, ``Gallery_Distractor/`` with ``<id>_<n>.png`` names."""
    for sub in ("Probe", "Gallery_Match", "Gallery_Distractor"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for k in range(identities):
        identity_image(100 + k, 0).save(root / "Gallery_Match" / f"e{k}_0.png")
        for n in range(1, per_identity):
            identity_image(100 + k, n).resize((12, 12)).save(root / "Probe" / f"e{k}_{n}.png")
    identity_image(999, 0).save(root / "Gallery_Distractor" / "d0_0.png")
    return root


# ---- images made here ----------------------------------------------------------------------------------------
def dots_image(points: np.ndarray, size: tuple[int, int], radius: float = 2.5) -> np.ndarray:
    """Black RGB uint8 image with a bright Gaussian spot (sigma = radius / 2) at each point (x, y), neighbouring
    points in different colour channels."""
    h, w = size
    ys, xs = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.float64)
    for k, (x, y) in enumerate(points):
        img[..., k % 3] += 255 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * (radius / 2) ** 2))
    return np.clip(img, 0, 255).astype(np.uint8)


def two_person_source(tmp_path):
    """``tmp_path/src/{Ann,Bob}/<name>_0001.jpg``: one face-like image each (dots at the ArcFace landmarks)."""
    from petal_peft.align import landmark_template

    src = tmp_path / "src"
    template = landmark_template("arcface", 112)
    for person in ("Ann", "Bob"):
        (src / person).mkdir(parents=True)
        Image.fromarray(dots_image(template + 10, (132, 132))).save(src / person / f"{person}_0001.jpg")
    return src


def write_png_header(path: Path, width: int, height: int) -> Path:
    """A tiny PNG that declares ``width`` x ``height`` (a decompression bomb when large)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + data)
    return path


# ---- training runs ----------------------------------------------------------------------------------------------
def tiny_settings(base: Path | str, data: Path | str, out: Path | str, **overrides: object) -> dict[str, object]:
    """The training settings of a tiny, fast, deterministic run (no progress bar, no evaluation before training)."""
    settings: dict[str, object] = {
        "base_model": base,
        "train_data": data,
        "output_dir": out,
        "per_device_train_batch_size": 8,
        "max_steps": 6,
        "lora_r": 2,
        "lora_alpha": 2,
        "head_scale": 16,
        "learning_rate": 1e-2,
        "warmup_steps": 2,
        "report_to": "none",
        "degrade_min_size": 8,
        "degrade_max_size": 16,
        "seed": 3,
        "progress_bar": False,
        "eval_before_training": False,
    }
    settings.update(overrides)
    return settings


def tiny_flags(base: Path, data: Path, out: Path, **overrides: object) -> list[str]:
    """Command-line flags of a tiny, fast, deterministic run (:func:`tiny_settings`)."""
    argv = []
    for key, value in tiny_settings(base, data, out, **overrides).items():
        if isinstance(value, bool):
            argv.append(f"--{key}" if value else f"--no_{key}")
        else:
            argv += [f"--{key}", str(value)]
    return argv


def train_tiny_run(root: Path) -> tuple[Path, list[str]]:
    """A tiny run of 4 steps with checkpoints at steps 2 and 4 under ``root/out``; returns (root, its flags)."""
    from petal_peft.training import parse_args, train

    base, data = make_tiny_base(root / "base"), make_face_folder(root / "train")
    flags = tiny_flags(base, data, root / "out", max_steps=4, checkpointing_steps=2, checkpoints_total_limit=3)
    train(parse_args(flags))
    return root, flags


class MainProcess:
    """The part of an ``Accelerator`` that :class:`petal_peft.training.CheckpointManager` uses: one process."""

    is_main_process = True
    process_index = 0
    num_processes = 1

    def wait_for_everyone(self):
        pass


def fake_hub_api(calls: list, check_upload, url: str) -> type:
    """A stand-in for ``huggingface_hub.HfApi`` that records its calls in ``calls``.

    ``check_upload(kwargs)`` runs on every ``upload_folder`` call (assert what the folder must hold there);
    ``upload_folder`` then returns ``url``.
    """

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, **kwargs):
            calls.append(("create_repo", kwargs))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs))
            check_upload(kwargs)
            return url

    return FakeApi


# ---- subprocesses -----------------------------------------------------------------------------------------------
def subprocess_env() -> dict[str, str]:
    """This environment, one thread per process, offline, with this checkout first on the path."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def run_script(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the training example with ``argv`` in a fresh process."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), *argv], env=subprocess_env(), capture_output=True, text=True, timeout=timeout
    )


# Sleeps in every forward so the run is slow enough to be killed mid-way (a test-side patch; the library is untouched).
_SLOW_RUNNER = """
import runpy, sys, time
from petal_peft.training import modeling
forward = modeling.FaceEmbeddingClassifier.forward
def slow_forward(self, *args, **kwargs):
    time.sleep({seconds})
    return forward(self, *args, **kwargs)
modeling.FaceEmbeddingClassifier.forward = slow_forward
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def start_slowed_training(argv: list[str], seconds_per_step: float) -> subprocess.Popen:
    """Start the training example with ``argv`` in a new process, every forward slowed by ``seconds_per_step``.

    Its stderr is a pipe (read it if the run ends early); kill it when done.
    """
    runner = _SLOW_RUNNER.format(seconds=seconds_per_step)
    return subprocess.Popen(
        [sys.executable, "-c", runner, str(SCRIPT), *argv],
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(script: Path, argv: list[str], timeout: float = 180, **kwargs) -> subprocess.CompletedProcess:
    """Run ``script`` as two CPU processes under ``torch.distributed.run`` on a free local port."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1"]
    command += ["--master_port", str(free_port()), str(script), *argv]
    return subprocess.run(command, env=subprocess_env(), timeout=timeout, **kwargs)
