"""Helpers shared by the tests: tiny random models, tiny face-like folders, training flags, subprocess runs, the
inference workspace, a fake LFW, and the markers for optional data and extras (``needs_faces``, ``needs_dlib``).

Nothing here downloads anything: models are random and built from configs; the "identities" are coloured
patterns with per-image jitter, enough for a margin head to learn something in a few steps. This is not a test
module (pytest collects nothing from it); the tests import it by name (``conftest.py`` puts this folder on the path).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers as T
from PIL import Image
from torch import nn

REPO = Path(__file__).resolve().parents[1]
#: the training example that the subprocess tests launch
SCRIPT = REPO / "examples" / "train_tinyface.py"
#: side of the tiny transformers' square input, in pixels
IMAGE = 32

#: the real face photos (LFW + Glint celebrities; research use only, never copied into the repository):
#: ``$PETAL_PEFT_FACES``, else ``../shared/faces`` beside the checkout
FACES = Path(os.environ.get("PETAL_PEFT_FACES") or REPO.parent / "shared" / "faces")
#: skip a test where the real faces are absent
needs_faces = pytest.mark.skipif(
    not (FACES / "lfw").is_dir(), reason=f"real faces not at {FACES} (set PETAL_PEFT_FACES)"
)
HAVE_DLIB = bool(importlib.util.find_spec("dlib") and importlib.util.find_spec("face_recognition_models"))
#: skip a test where the optional dlib aligner is not installed
needs_dlib = pytest.mark.skipif(not HAVE_DLIB, reason="dlib not installed (the align extra)")


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


# ---- a fake LFW for the real-face benchmark ------------------------------------------------------------------
#: per fold: people with 4, 3, 2, 1, 1 images
PEOPLE = {"A": 4, "B": 3, "C": 2, "D": 1, "E": 1}
SAME = [("A", 1, 2), ("A", 1, 3), ("A", 2, 4), ("B", 1, 2), ("B", 2, 3)]
DIFF = [("A", 1, "B", 1), ("A", 2, "C", 1), ("B", 2, "D", 1), ("C", 2, "E", 1), ("D", 1, "E", 1)]


def _fake_face(path: Path, person: int, n: int, size: int = 40) -> None:
    rng = np.random.default_rng(1000 * person + n)
    colour = np.random.default_rng(person).integers(0, 256, 3)
    img = np.clip(colour + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
    img[size // 4 : size // 2, size // 4 : 3 * size // 4] = 255 - colour  # a per-person "feature"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def make_fake_faces(root: Path, folds: int = 10) -> Path:
    """root/lfw/<Name>/<Name>_<nnnn>.jpg + pairs_view2.csv (5 same + 5 different pairs per fold), and
    root/extra/<Name>/<n>.jpg with a fold-0 name (evaluation: dropped), a fold-4 name (adaptation) and a
    name that is not in LFW (base)."""
    lfw = root / "lfw"
    rows = ["fold,label,img1,img2"]
    for f in range(folds):
        for k, (person, count) in enumerate(PEOPLE.items()):
            for n in range(1, count + 1):
                _fake_face(lfw / f"{person}_f{f}" / f"{person}_f{f}_{n:04d}.jpg", 10 * f + k, n)

        def img(p: str, n: int, f: int = f) -> str:
            return f"{p}_f{f}/{p}_f{f}_{n:04d}.jpg"

        rows += [f"{f},1,{img(p, a)},{img(p, b)}" for p, a, b in SAME]
        rows += [f"{f},0,{img(p, a)},{img(q, b)}" for p, a, q, b in DIFF]
    (lfw / "pairs_view2.csv").write_text("\n".join(rows) + "\n")
    for name, person in (("A_f0", 0), ("B_f4", 41), ("Newcomer", 999)):
        for n in range(2):
            _fake_face(root / "extra" / name / f"{n}.jpg", person, 50 + n)
    return root


def fake_face_settings(faces: Path, out: Path | str = "unused", **kw):
    """Real-face benchmark settings for the fake LFW of :func:`make_fake_faces` (quiet, one thread, no detector)."""
    from petal_peft.benchmark import real_face_settings

    values = dict(extra_face_sets=("extra",), progress=False, num_threads=1, references=(), rows=())
    values.update(prepare="center-crop")  # drawn fake faces: no detector needed
    values.update(probe_size_px=(4, 8), train_size_px=(6, 12))  # the fake faces are 16-32 px here
    values.update(kw)
    return real_face_settings(str(faces), str(out), **values)


# ---- an inference workspace (embed / search / verify / eval) ---------------------------------------------------
#: the identities of the workspace's gallery and probe folders
WORKSPACE_IDENTITIES = ("ada", "bob", "cy", "dee")


def pattern_image(identity: int, variant: int, blur: bool = False) -> Image.Image:
    """A smooth colour pattern per identity, shifted a little per image; ``blur``: a 8 px capture upscaled."""
    rng = np.random.default_rng(100 + identity)
    coarse = torch.tensor(rng.random((1, 3, 4, 4)), dtype=torch.float32)
    big = torch.nn.functional.interpolate(coarse, size=(IMAGE + 4, IMAGE + 4), mode="bicubic", align_corners=True)
    image = big[0, :, variant : variant + IMAGE, variant : variant + IMAGE].clamp(0, 1)
    noise = np.random.default_rng(variant).normal(0, 0.04, image.shape)
    array = ((image.numpy() + noise).clip(0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)
    result = Image.fromarray(array)
    if blur:
        result = result.resize((8, 8), Image.BILINEAR).resize((IMAGE, IMAGE), Image.BILINEAR)
    return result


def make_inference_workspace(root: Path) -> Path:
    """``root``: ``gallery/<identity>/`` (two images each, one in a session subfolder, plus a loose image),
    ``probes/<identity>/`` (one blurred image), a tiny ``base``, a gated ``adapter`` and its ``proxies``."""
    from peft import get_peft_model

    import petal_peft

    for i, name in enumerate(WORKSPACE_IDENTITIES):
        for v in range(2):
            folder = root / "gallery" / name / ("session1" if (name == "dee" and v == 1) else "")
            folder.mkdir(parents=True, exist_ok=True)
            pattern_image(i, v).save(folder / f"{v}.png")
        (root / "probes" / name).mkdir(parents=True)
        pattern_image(i, 3, blur=True).save(root / "probes" / name / "p.png")
    pattern_image(9, 0).save(root / "gallery" / "loner.png")  # directly in the root: its own identity
    tiny_vit().save_pretrained(root / "base")
    config = petal_peft.QualityGatedLoraConfig(
        r=4, lora_alpha=4, lora_dropout=0.0, quality_estimator="resolution", gate_threshold=6.0, gate_temperature=2.0
    )
    peft_model = get_peft_model(tiny_vit(), config)
    randomize_adapters(peft_model, std=0.3)
    peft_model.save_pretrained(root / "adapter")
    petal_peft.export_proxy_encoders(peft_model, str(root / "proxies"))
    return root


def cli(*args) -> int:
    """``petal-peft ARGS`` in this process (paths may be Path objects); embed, search and verify without progress."""
    from petal_peft.cli import main

    return main(
        [*map(str, args), "--no-progress"] if args[0] in ("embed", "search", "verify") else list(map(str, args))
    )


def embed_gate_index(ws: Path):
    """``petal-peft embed`` of the workspace's gallery with its adapter (gate mode) -> the loaded EmbeddingIndex."""
    from petal_peft.inference import EmbeddingIndex

    out = ws / "gallery_gate.safetensors"
    code = cli(
        "embed", "--model", ws / "base", "--adapter", ws / "adapter", "--images", ws / "gallery", "--out", out,
        "--batch-size", 3, "--chunk-size", 4,
    )  # fmt: skip
    assert code == 0
    return EmbeddingIndex.load(out)


def make_verification_report(ws: Path) -> Path:
    """A real report of ``petal-peft eval --benchmark verification`` on a pair list of the workspace's gallery."""
    lines = []
    for i, name in enumerate(WORKSPACE_IDENTITIES):
        second = "session1/1.png" if name == "dee" else "1.png"
        lines.append(f"{name}/0.png {name}/{second} 1")
        lines.append(f"{name}/0.png {WORKSPACE_IDENTITIES[(i + 1) % 4]}/0.png 0")
        lines.append(f"{name}/{second} {WORKSPACE_IDENTITIES[(i + 2) % 4]}/0.png 0")
    (ws / "gallery" / "pairs.txt").write_text("\n".join(lines) + "\n")
    out = ws / "report"
    code = cli(
        "eval", "--model", ws / "base", "--adapter", ws / "adapter", "--benchmark", "verification",
        "--data", ws / "gallery" / "pairs.txt", "--out", out, "--modes", "gate", "proxy", "--no-plots", "--no-progress",
    )  # fmt: skip
    assert code == 0
    return out / "pairs_report.json" if (out / "pairs_report.json").exists() else next(out.glob("*_report.json"))
