"""Shared helpers for the training tests: a tiny random ViT saved as a local base, tiny face-like folders.

Nothing is downloaded: the base is a random ``ViTModel`` saved with ``save_pretrained``; the "identities" are
coloured patterns with per-image jitter, enough for a margin head to learn something in a few steps.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "train_tinyface.py"
IMAGE = 32


def make_tiny_base(path: Path, seed: int = 0) -> Path:
    """A random 2-layer ViT (32 px input) plus its image processor, saved like a Hub checkpoint."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(seed)
    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=IMAGE,
        patch_size=8,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    ViTModel(config).save_pretrained(path)
    ViTImageProcessor(
        size={"height": IMAGE, "width": IMAGE}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    ).save_pretrained(path)
    return path


def _identity_image(identity: int, index: int, size: int = 48) -> Image.Image:
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
            _identity_image(k, n).save(d / f"{n}.png")
    return root


def make_eval_folder(root: Path, identities: int = 3, per_identity: int = 3) -> Path:
    """TinyFace layout: ``Probe/``, ``Gallery_Match/``, ``Gallery_Distractor/`` with ``<id>_<n>.png`` names."""
    for sub in ("Probe", "Gallery_Match", "Gallery_Distractor"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for k in range(identities):
        _identity_image(100 + k, 0).save(root / "Gallery_Match" / f"e{k}_0.png")
        for n in range(1, per_identity):
            _identity_image(100 + k, n).resize((12, 12)).save(root / "Probe" / f"e{k}_{n}.png")
    _identity_image(999, 0).save(root / "Gallery_Distractor" / "d0_0.png")
    return root


def tiny_flags(base: Path, data: Path, out: Path, **overrides: object) -> list[str]:
    """Command-line flags of a tiny, fast, deterministic run."""
    flags: dict[str, object] = {
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
    }
    flags.update(overrides)
    argv = []
    for key, value in flags.items():
        if isinstance(value, bool):
            argv.append(f"--{key}" if value else f"--no_{key}")
        else:
            argv += [f"--{key}", str(value)]
    return argv + ["--no_progress_bar", "--no_eval_before_training"]


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def run_script(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *argv], env=subprocess_env(), capture_output=True, text=True, timeout=timeout
    )


def test_helpers_build_loadable_inputs(tmp_path):
    from petal_peft.data import FaceImageFolder, TinyFaceEvalSplit

    make_tiny_base(tmp_path / "base")
    assert (tmp_path / "base" / "config.json").is_file()
    folder = FaceImageFolder(make_face_folder(tmp_path / "train"))
    assert folder.num_classes == 4 and len(folder) == 24
    split = TinyFaceEvalSplit(make_eval_folder(tmp_path / "eval"))
    assert len(split.probe_indices) == 6
