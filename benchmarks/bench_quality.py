"""Benchmark of the quality estimators: degradation ranking, BRISQUE fidelity, throughput, training-step cost.

    python benchmarks/bench_quality.py                      # natural-image crops from scikit-image's bundled data
    python benchmarks/bench_quality.py --images DIR         # a folder of (face) images instead
    python benchmarks/bench_quality.py --quick              # small sizes, for a smoke run

Prints every figure next to its baseline from the same run and writes ``results.json`` and PNG figures to
``--out`` (default outputs/quality). The per-image reference is the PyPI ``brisque`` 0.2.0 package, where installed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

import petal_peft.quality as Q
from petal_peft.benchmark.budget import timed
from petal_peft.quality.degrade import VARIANTS, degrade

LEVELS = (8, 12, 16, 24, 32, 48)
SIZE = 112
SKIMAGE_IMAGES = (
    "astronaut", "camera", "chelsea", "coffee", "coins", "rocket", "brick", "grass", "gravel", "moon", "retina",
    "immunohistochemistry", "page", "text", "cell", "hubble_deep_field", "horse", "clock", "logo", "cat",
)  # fmt: skip


# ---------------------------------------------------------------------------------------------- images
def _square_crop(image: np.ndarray, rng: np.random.Generator, random: bool) -> torch.Tensor:
    h, w = image.shape[:2]
    side = int(rng.integers(SIZE, min(h, w) // 1.5 + 1)) if random and min(h, w) * 2 // 3 > SIZE else min(h, w)
    y = int(rng.integers(0, h - side + 1)) if random else (h - side) // 2
    x = int(rng.integers(0, w - side + 1)) if random else (w - side) // 2
    crop = torch.from_numpy(np.ascontiguousarray(image[y : y + side, x : x + side])).permute(2, 0, 1).float() / 255
    return F.interpolate(crop[None], size=(SIZE, SIZE), mode="bicubic", antialias=True).clamp(0, 1)[0]


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = (image.astype(np.float64) / max(float(image.max()), 1e-9) * 255).round().astype(np.uint8)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return image[..., :3]


def load_images(folder: str | None, count: int, seed: int) -> tuple[torch.Tensor, str]:
    """``count`` 112x112 RGB crops in [0, 1] and a description of where they came from."""
    rng = np.random.default_rng(seed)
    if folder:
        from PIL import Image

        paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp"})
        if not paths:
            sys.exit(f"no .jpg/.png/.bmp images under {folder}")
        picks = [paths[i] for i in rng.permutation(len(paths))[:count]]
        crops = [_square_crop(_as_rgb_uint8(np.asarray(Image.open(p).convert("RGB"))), rng, False) for p in picks]
        return torch.stack(crops), f"{len(crops)} centre crops of images under {folder}"
    try:
        from skimage import data
    except ImportError:
        sys.exit("scikit-image is not installed: pass --images DIR, or `pip install scikit-image`")
    sources = []
    for name in SKIMAGE_IMAGES:
        try:
            sources.append(_as_rgb_uint8(getattr(data, name)()))
        except Exception:  # noqa: BLE001 - images that need a download are skipped
            continue
    crops = [_square_crop(sources[i % len(sources)], rng, True) for i in range(count)]
    return torch.stack(crops), f"{count} random square crops of {len(sources)} scikit-image sample images"


# ---------------------------------------------------------------------------------------------- helpers
def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(np.asarray(a), np.asarray(b)).statistic)


def reference_brisque():
    """The PyPI ``brisque`` package's scorer (per image, numpy/scipy/libsvm), or None if it is not installed."""
    try:
        import cv2
        import skimage.color
        from brisque import BRISQUE
    except ImportError:
        return None
    ref = BRISQUE(url=False)

    def score(rgb_uint8: np.ndarray) -> float:
        # BRISQUE.score with one fix: under numpy 2 its features are 1-element arrays that float() rejects
        gray = skimage.color.rgb2gray(rgb_uint8)
        half = cv2.resize(gray, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
        parts = [ref.calculate_brisque_features(img, kernel_size=7, sigma=7 / 6) for img in (gray, half)]
        features = np.array([np.asarray(v, dtype=float).item() for v in np.concatenate(parts)])
        return float(ref.calculate_image_quality_score(features))

    return score


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def score_all(estimator, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([estimator(images[i : i + batch]) for i in range(0, len(images), batch)])


def save_fig(fig, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".png")
    os.close(fd)
    fig.savefig(tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------- parts
def degradation_ranking(base: torch.Tensor, out: Path, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    images, levels, variants = [], [], []
    for level in tqdm(LEVELS, desc="degrading"):
        for variant in VARIANTS:
            images.append(degrade(base, level, variant, generator=generator))
            levels += [level] * len(base)
            variants += [variant] * len(base)
    images = torch.cat(images)
    levels, variants = np.array(levels), np.array(variants)
    raw = {"image_mean": [0.0], "image_std": [1.0]}
    result = {"images": len(images), "levels": list(LEVELS), "variants": list(VARIANTS)}
    scores = {}
    for name in ("resolution", "brisque"):
        est = Q.build_estimator(name, image_mean=raw["image_mean"], image_std=raw["image_std"])
        s = score_all(est, images).numpy()
        oriented = s if est.higher_is_better else -s
        scores[name] = s
        result[name] = {
            "spearman_vs_level": spearman(oriented, levels),
            "per_variant": {v: spearman(oriented[variants == v], levels[variants == v]) for v in VARIANTS},
            "median_by_level": {int(lv): float(np.median(s[levels == lv])) for lv in LEVELS},
            "higher_is_better": est.higher_is_better,
        }
        # gate calibrated on clean crops (gallery-like) vs crops from <= 16 px (probe-like)
        est_base = score_all(est, base).numpy()
        low = s[levels <= 16]
        gate = Q.calibrate_gate(
            torch.from_numpy(est_base), torch.from_numpy(low), higher_is_better=est.higher_is_better
        )
        result[name]["gate_clean_vs_le16px"] = gate
        result[name]["auc_clean_vs_le16px"] = Q.separation_auc(
            torch.from_numpy(est_base), torch.from_numpy(low), est.higher_is_better
        )
        Q.plot_quality_histogram(
            est_base,
            low,
            out / f"hist_{name}.png",
            gate=Q.build_gate(
                gate["gate_mode"], gate["gate_threshold"], gate["gate_temperature"], est.higher_is_better
            ),
            labels=("clean 112 px crops (gallery-like)", "from 8-16 px, all variants (probe-like)"),
            xlabel=f"{name} score ({'higher' if est.higher_is_better else 'lower'} = better)",
            title=f"{name}: calibrated gate",
        )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    for ax, name in zip(axes, ("resolution", "brisque")):
        for k, variant in enumerate(VARIANTS):
            data = [scores[name][(levels == lv) & (variants == variant)] for lv in LEVELS]
            positions = np.arange(len(LEVELS)) + (k - 1.5) * 0.2
            ax.boxplot(data, positions=positions, widths=0.17, showfliers=False, patch_artist=True,
                       boxprops={"facecolor": f"C{k}", "alpha": 0.6}, medianprops={"color": "black"})  # fmt: skip
            ax.plot([], [], color=f"C{k}", label=variant, linewidth=6, alpha=0.6)
        ax.set_xticks(np.arange(len(LEVELS)), [str(lv) for lv in LEVELS])
        ax.set_xlabel("capture size (px), upscaled to 112")
        rho = result[name]["spearman_vs_level"]
        ax.set_title(f"{name}: Spearman vs level = {rho:.3f}")
        ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    save_fig(fig, out / "scores_by_level.png")
    plt.close(fig)
    return result


def brisque_fidelity(crops: torch.Tensor, reference, seed: int) -> dict:
    """Our batched BRISQUE vs the reference package over varied crops (clean and randomly degraded)."""
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    varied = []
    for i in range(len(crops)):
        choice = rng.integers(0, 4)
        img = crops[i : i + 1]
        if choice > 0:  # three quarters degraded at a random level and variant
            level = int(rng.choice([8, 12, 16, 24, 32, 48, 64, 80]))
            img = degrade(img, level, VARIANTS[int(rng.integers(0, 4))], generator=generator)
        varied.append(img)
    u8 = to_uint8(torch.cat(varied))
    ours = score_all(Q.BrisqueEstimator(), u8).numpy()
    ours64 = score_all(Q.BrisqueEstimator(precision="float64"), u8).numpy()
    theirs = np.array([reference(img.permute(1, 2, 0).numpy()) for img in tqdm(u8, desc="reference BRISQUE")])
    return {
        "images": len(u8),
        "spearman": spearman(ours, theirs),
        "pearson": float(np.corrcoef(ours, theirs)[0, 1]),
        "median_abs_diff": float(np.median(np.abs(ours - theirs))),
        "max_abs_diff": float(np.max(np.abs(ours - theirs))),
        "spearman_float64": spearman(ours64, theirs),
        "reference_score_range": [float(theirs.min()), float(theirs.max())],
    }


def throughput(crops: torch.Tensor, reference, repeats: int, reference_images: int) -> dict:
    batch = ((crops[:64] - 0.5) / 0.5).contiguous()  # normalised like ViT's processor (mean = std = 0.5)
    if len(batch) < 64:
        batch = batch.repeat((64 + len(batch) - 1) // len(batch), 1, 1, 1)[:64]
    result = {"batch": 64, "size": SIZE, "threads": torch.get_num_threads(), "repeats": repeats}
    for name in ("resolution", "brisque"):
        est = Q.build_estimator(name)
        with torch.no_grad():
            times = timed(lambda est=est: est(batch), repeats)
        result[name] = {
            "median_s_per_batch": statistics.median(times),
            "images_per_s": 64 / statistics.median(times),
            "best_images_per_s": 64 / min(times),  # the least disturbed run, on a shared machine
        }
    if reference is not None:
        u8 = to_uint8(batch[:reference_images] * 0.5 + 0.5).permute(0, 2, 3, 1).numpy()
        times = timed(lambda: [reference(img) for img in u8], max(1, repeats // 3))
        per_image = statistics.median(times) / len(u8)
        result["reference_brisque_package"] = {
            "median_s_per_image": per_image,
            "images_per_s": 1 / per_image,
            "best_images_per_s": len(u8) / min(times),
        }
        result["brisque_speedup_vs_reference"] = result["brisque"]["images_per_s"] * per_image
        result["brisque_speedup_vs_reference_best"] = (
            result["brisque"]["best_images_per_s"] / result["reference_brisque_package"]["best_images_per_s"]
        )
    return result


def training_step_cost(repeats: int) -> dict:
    """Estimator time vs one training step of ViT-S/16 (112 px, batch 64) with the quality-gated adapter."""
    from peft import get_peft_model
    from transformers import ViTConfig, ViTModel

    import petal_peft

    torch.manual_seed(0)
    config = ViTConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                       image_size=112, patch_size=16)  # fmt: skip
    x = torch.rand(64, 3, SIZE, SIZE) * 2 - 1
    result = {}
    for name in ("resolution", "brisque"):
        model = get_peft_model(
            ViTModel(config),
            petal_peft.QualityGatedLoraConfig(r=8, lora_alpha=8, quality_estimator=name, gate_threshold=0.0),
        )
        model.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        quality = model.base_model.estimate_quality(x)

        def step(model=model, optimizer=optimizer, **kwargs):
            optimizer.zero_grad(set_to_none=True)
            model(pixel_values=x, **kwargs).pooler_output.float().pow(2).mean().backward()
            optimizer.step()

        # interleaved, so that load from other processes hits both alike
        explicit, automatic, estimator_only = [], [], []
        est = model.base_model.quality_function()
        step(quality=quality)
        for _ in range(repeats):
            explicit += timed(lambda step=step, quality=quality: step(quality=quality), 1)
            automatic += timed(lambda step=step: step(), 1)
            with torch.no_grad():
                estimator_only += timed(lambda est=est: est(x), 3)
        result[name] = {
            "step_with_explicit_quality_s": statistics.median(explicit),
            "step_with_estimator_s": statistics.median(automatic),
            "estimator_alone_s": statistics.median(estimator_only),
            "estimator_alone_best_s": min(estimator_only),
            "estimator_share_of_step": statistics.median(estimator_only) / statistics.median(explicit),
            "step_overhead_share": statistics.median(automatic) / statistics.median(explicit) - 1,
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", help="folder of (face) images; default: scikit-image sample crops")
    parser.add_argument("--out", default="outputs/quality")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fidelity-images", type=int, default=500)
    parser.add_argument("--degradation-images", type=int, default=100, help="base crops, x 6 levels x 4 variants")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--reference-images", type=int, default=32, help="images per timed reference run")
    parser.add_argument("--train-repeats", type=int, default=3)
    parser.add_argument("--skip-train", action="store_true", help="skip the ViT-S/16 training-step measurement")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.fidelity_images, args.degradation_images, args.repeats, args.train_repeats = 40, 16, 3, 1
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    crops, source = load_images(args.images, max(args.fidelity_images, args.degradation_images, 64), args.seed)
    reference = reference_brisque()
    results = {"images": source, "threads": args.threads, "load_average_at_start": os.getloadavg()}
    print(f"images: {source}; torch threads: {args.threads}; load average {os.getloadavg()[0]:.1f}")

    results["degradation"] = degradation_ranking(crops[: args.degradation_images], out, args.seed)
    for name in ("resolution", "brisque"):
        r = results["degradation"][name]
        per = ", ".join(f"{k} {v:.3f}" for k, v in r["per_variant"].items())
        print(f"[degradation] {name:10s} Spearman vs level {r['spearman_vs_level']:.3f} ({per}); "
              f"clean-vs-<=16px AUC {r['auc_clean_vs_le16px']:.3f}")  # fmt: skip

    if reference is not None:
        results["brisque_fidelity"] = brisque_fidelity(crops[: args.fidelity_images], reference, args.seed)
        f = results["brisque_fidelity"]
        print(f"[fidelity] ours vs brisque 0.2.0 over {f['images']} crops: Spearman {f['spearman']:.4f} "
              f"(float64 {f['spearman_float64']:.4f}), median |diff| {f['median_abs_diff']:.4f}, "
              f"max {f['max_abs_diff']:.3f}")  # fmt: skip
    else:
        print("[fidelity] the `brisque` reference package is not installed: skipped")

    results["throughput"] = t = throughput(crops, reference, args.repeats, args.reference_images)

    def rate(entry):
        return f"{entry['images_per_s']:.0f} img/s (best {entry['best_images_per_s']:.0f})"

    line = (f"[throughput] 112 px, batch 64, {t['threads']} threads, median (best): resolution {rate(t['resolution'])}"
            f", brisque {rate(t['brisque'])}")  # fmt: skip
    if "reference_brisque_package" in t:
        speedup, best = t["brisque_speedup_vs_reference"], t["brisque_speedup_vs_reference_best"]
        line += (
            f", reference brisque package {rate(t['reference_brisque_package'])} -> {speedup:.0f}x (best {best:.0f}x)"
        )
    print(line)

    if not args.skip_train:
        results["training_step"] = s = training_step_cost(args.train_repeats)
        for name, r in s.items():
            print(f"[train step] ViT-S/16 b64 112px: step {r['step_with_explicit_quality_s']:.2f} s (quality given), "
                  f"{r['step_with_estimator_s']:.2f} s (estimated, {100 * r['step_overhead_share']:+.1f}%); "
                  f"{name} alone {r['estimator_alone_s'] * 1e3:.1f} ms (best {r['estimator_alone_best_s'] * 1e3:.1f})"
                  f" = {100 * r['estimator_share_of_step']:.2f}% of a step")  # fmt: skip

    fd, tmp = tempfile.mkstemp(dir=out, suffix=".json")
    with os.fdopen(fd, "w") as handle:
        json.dump(results, handle, indent=2)
    os.chmod(tmp, 0o644)
    os.replace(tmp, out / "results.json")
    print(f"wrote {out / 'results.json'} and figures in {out}")


if __name__ == "__main__":
    main()
