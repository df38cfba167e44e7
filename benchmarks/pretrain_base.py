"""Build the pretrained face-ViT base and show it is meaningfully better than a random-init ViT.

Run: ``python benchmarks/pretrain_base.py [--rebuild] [--ship] [--plot PNG] [--cache-dir DIR] [--steps N]
[--olivetti DIR]``

Without ``--rebuild`` the shipped (or cached) base is loaded and only evaluated. ``--rebuild`` trains it from
scratch, timing wall and CPU seconds, printing the loss curve and (for the default settings) whether the
rebuild reproduces the shipped fp16 weights bit for bit. ``--ship`` (maintainers) also writes the build into
``petal_peft/zoo/weights/`` so it ships with the package.

Prints, side by side for the pretrained base and a random-init model of the same config:
- 1:1 verification (10-fold best-threshold accuracy over cosine scores, and ROC AUC), and
- closed-set identification (rank-1 / rank-5, one gallery image per identity),
on (a) held-out SYNTHETIC identities (the eval group of ``synthetic_identity_groups()``, never seen
in pretraining; not faces), and (b) the eval identity group
of the real Olivetti faces when a local copy exists (see docs/real_faces.md), else says it is missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from petal_peft.data.real_faces import RealFacesUnavailableError, load_olivetti_faces, split_identities
from petal_peft.recipes.synthetic_base import (
    PretrainSettings,
    base_cache_dir,
    build_pretrained_base,
    embed,
    get_pretrained_base,
    load_base_dir,
    normalize_pixels,
    random_init_base,
    save_base_dir,
    shipped_base_dir,
    synthetic_identity_groups,
)


@torch.no_grad()
def embeddings(model, images: torch.Tensor, batch: int = 128) -> torch.Tensor:
    """Flip-fused, L2-normalised embeddings of [0, 1] images [N, 3, H, W]."""
    out = []
    for i in range(0, len(images), batch):
        x = normalize_pixels(images[i : i + batch])
        e = embed(model, x) + embed(model, x.flip(-1))
        out.append(F.normalize(e, dim=1))
    return torch.cat(out)


def _auc(scores: np.ndarray, same: np.ndarray) -> float:
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    pos = same.sum()
    neg = len(same) - pos
    return float((ranks[same].sum() - pos * (pos + 1) / 2) / (pos * neg))


def verification(emb: torch.Tensor, labels: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """All genuine pairs plus as many random impostor pairs; 10-fold accuracy and AUC of cosine scores."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    i, j = np.triu_indices(n, 1)
    same = labels[i] == labels[j]
    gi, gj = i[same], j[same]
    imp = rng.choice(np.flatnonzero(~same), size=min(len(gi), int((~same).sum())), replace=False)
    pi, pj = np.concatenate([gi, i[imp]]), np.concatenate([gj, j[imp]])
    issame = np.concatenate([np.ones(len(gi), bool), np.zeros(len(imp), bool)])
    perm = rng.permutation(len(pi))
    pi, pj, issame = pi[perm], pj[perm], issame[perm]
    scores = (emb[pi] * emb[pj]).sum(1).numpy()
    folds = np.array_split(np.arange(len(scores)), 10)
    thresholds = np.linspace(-1, 1, 401)
    accs = []
    for k in range(10):
        test = folds[k]
        train = np.concatenate([folds[m] for m in range(10) if m != k])
        acc_tr = [((scores[train] > t) == issame[train]).mean() for t in thresholds]
        t = thresholds[int(np.argmax(acc_tr))]
        accs.append(((scores[test] > t) == issame[test]).mean())
    return float(np.mean(accs)), _auc(scores, issame)


def identification(emb: torch.Tensor, labels: np.ndarray) -> tuple[float, float]:
    """First image of each identity is its gallery entry; every other image is a probe. Rank-1 / rank-5."""
    names = np.unique(labels)
    first = np.array([np.flatnonzero(labels == n)[0] for n in names])
    probes = np.setdiff1d(np.arange(len(labels)), first)
    sims = emb[probes] @ emb[first].T
    order = torch.argsort(sims, dim=1, descending=True).numpy()
    hit = names[order] == labels[probes][:, None]
    return float(hit[:, :1].any(1).mean()), float(hit[:, : min(5, len(names))].any(1).mean())


def report(name: str, images: torch.Tensor, labels: np.ndarray, models: dict) -> None:
    print(f"\n== {name}: {len(np.unique(labels))} identities, {len(labels)} images ==")
    print(f"{'model':<22}{'verif acc':>11}{'AUC':>8}{'rank-1':>9}{'rank-5':>9}")
    for mname, model in models.items():
        e = embeddings(model, images)
        acc, auc = verification(e, labels)
        r1, r5 = identification(e, labels)
        print(f"{mname:<22}{acc:>11.4f}{auc:>8.4f}{r1:>9.4f}{r5:>9.4f}")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _loss_summary(losses: list[float], plot: str | None) -> None:
    arr = np.asarray(losses)
    k = max(1, len(arr) // 10)
    means = [f"{arr[i : i + k].mean():.2f}" for i in range(0, len(arr), k)]
    print(f"loss (mean of each tenth of training, {len(arr)} steps): " + " -> ".join(means))
    if plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(arr, lw=0.5, alpha=0.4, label="step")
        w = max(1, len(arr) // 50)
        ax.plot(np.arange(w - 1, len(arr)), np.convolve(arr, np.ones(w) / w, mode="valid"), label=f"mean of {w}")
        ax.set(xlabel="step", ylabel="CosFace loss", title="face-ViT base pretraining (synthetic identities)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(plot, dpi=120)
        print(f"loss plot: {plot}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--rebuild", action="store_true", help="retrain even if a shipped/cached base exists")
    ap.add_argument("--ship", action="store_true", help="rebuild and write it into petal_peft/zoo/weights/")
    ap.add_argument("--plot", default=None, help="write the loss curve of a rebuild to this PNG")
    ap.add_argument("--steps", type=int, default=None, help="override training steps (changes the cache key)")
    ap.add_argument("--olivetti", default=None, help="scikit-learn data_home holding the Olivetti cache")
    ap.add_argument("--eval-identities", type=int, default=200)
    ap.add_argument("--eval-images", type=int, default=6)
    args = ap.parse_args()

    default = PretrainSettings()
    settings = default if args.steps is None else dataclasses.replace(default, steps=args.steps)
    torch.set_num_threads(settings.num_threads)
    print(f"settings: {settings.to_dict()}")
    if args.rebuild or args.ship:
        losses: list[float] = []
        t0, c0 = time.perf_counter(), time.process_time()
        base = build_pretrained_base(settings, loss_log=losses)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"build: {wall:.1f} s wall, {cpu:.1f} s CPU ({settings.num_threads} threads; CPU shared, so noisy)")
        _loss_summary(losses, args.plot)
        out = base_cache_dir(args.cache_dir) / f"face-vit-base-{settings.cache_key()}"
        save_base_dir(base, settings, out)
        base, proc = load_base_dir(out)  # evaluate exactly what is stored (fp16-rounded weights)
        shipped = shipped_base_dir() / "model.safetensors"
        if settings == default and shipped.is_file():
            same = _sha(out / "model.safetensors") == _sha(shipped)
            print(f"rebuild reproduces the shipped weights bit for bit: {same}")
        if args.ship:
            if settings != default:
                raise SystemExit("--ship writes only the default settings (they are what get_pretrained_base loads).")
            save_base_dir(base, settings, shipped_base_dir())
            print(f"shipped: {shipped_base_dir()}")
    else:
        t0 = time.perf_counter()
        base, proc = get_pretrained_base(args.cache_dir, settings=settings)
        print(f"get_pretrained_base: {time.perf_counter() - t0:.2f} s (shipped or cached weights)")
    shipped = shipped_base_dir() / "model.safetensors"
    if shipped.is_file():
        print(f"shipped weight file: {shipped.stat().st_size / 2**20:.2f} MiB ({shipped})")
    models = {"pretrained base": base, "random init (same cfg)": random_init_base(settings, seed=1234)}

    # (a) held-out synthetic identities: the eval group (disjoint from pretraining), image indices never used.
    groups = synthetic_identity_groups()
    if args.eval_identities > len(groups.eval):
        raise SystemExit(f"--eval-identities must be <= {len(groups.eval)}.")
    pop = groups.population(proc["image_size"])
    ids = torch.tensor(list(groups.eval[: args.eval_identities])).repeat_interleave(args.eval_images)
    img_ids = torch.arange(args.eval_images).repeat(args.eval_identities) + 10_000
    images = pop.render(ids, img_ids)
    report("SYNTHETIC held-out identities (eval group, not faces)", images, ids.numpy(), models)

    # (b) real faces: the eval group of the Olivetti identity split.
    try:
        faces = load_olivetti_faces(args.olivetti)
    except RealFacesUnavailableError as err:
        print(f"\n== real faces (Olivetti eval group): NOT AVAILABLE on this machine ==\n{err}")
        return
    split = split_identities([f.identity for f in faces], seed=0)
    keep = [f for f in faces if f.identity in set(split.eval)]
    size = proc["image_size"]
    x = torch.stack(
        [
            torch.from_numpy(np.asarray(f.image.resize((size, size)), dtype=np.float32) / 255.0).permute(2, 0, 1)
            for f in keep
        ]
    )
    report("REAL faces: Olivetti eval identity group", x, np.array([f.identity for f in keep]), models)


if __name__ == "__main__":
    main()
