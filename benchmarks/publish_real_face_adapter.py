"""Publish one trained row of a real-face benchmark run as ``benchmarks/real_face_adapter/``.

    python benchmarks/publish_real_face_adapter.py --run RUN --row ours-distill --seed 0 \
        --base-metrics RUN/pretrained/metrics.json --lora-metrics RUN/lora-distill/seed0/metrics.json

Copies the adapter (weights + ``adapter_config.json``, which carries the quality estimator and the calibrated
gate, so the adapter embeds without ``quality=``) and writes a model card with the run's measured figures (the
published seed's, beside the untouched base and plain LoRA) and the data's terms. The folder must stay under 2 MB.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_BYTES = 2 * 1024 * 1024
BASE = "benchmarks/real_face_base"


SPLITS = {
    "eval": (
        "LFW View-2 folds 0-2",
        "LR = 1,079 probes degraded to 18-36 px against 1,241 sharp gallery images (791 distractors), %; HR = the "
        "1,800 official sharp pairs, 10-fold accuracy, %",
    ),
    "val": (
        "LFW View-2 fold 3, the validation fold",
        "LR = 331 probes degraded to 18-36 px against 423 sharp gallery images (276 distractors), %; HR = the 600 "
        "official sharp pairs, 10-fold accuracy, %",
    ),
}


def _eval(metrics: dict, mode: str, split: str = "eval") -> dict:
    return metrics["modes"][mode][split]


def _row(label: str, ev: dict, base: dict | None) -> str:
    if base is None:
        return f"| {label} | {ev['rank-1']:.2f} | {ev['mAP']:.2f} | — | {ev['hr_verification']:.2f} | — |"
    return (
        f"| {label} | {ev['rank-1']:.2f} | {ev['mAP']:.2f} | {ev['rank-1'] - base['rank-1']:+.2f} | "
        f"{ev['hr_verification']:.2f} | {ev['hr_verification'] - base['hr_verification']:+.2f} |"
    )


def model_card(
    settings: dict, seed: int, config: dict, mine: dict, base: dict, lora: dict | None, split: str = "eval"
) -> str:
    """The README of the published adapter: what it is, how to load it, how it was trained, its measured figures
    (``mine``, ``base``, ``lora``: the rows' ``metrics.json``) and the data's terms."""
    b = _eval(base, "plain", split)
    where, protocol = SPLITS[split]
    lines = [
        f"| model (real faces, {where}) | LR rank-1 | LR mAP | Δ LR rank-1 | HR verification | Δ HR |",
        "|---|---|---|---|---|---|",
        _row("base (untouched)", b, None),
    ]
    if lora is not None:
        lines.append(
            _row(
                f"plain LoRA, same objective, targets and budget (seed {lora['seed']})", _eval(lora, "plain", split), b
            )
        )
    lines.append(_row(f"**this adapter** (seed {seed}, gate per image)", _eval(mine, "gate", split), b))
    if "proxy" in mine["modes"]:  # the same weights as two merged encoders: gallery at q = 1, probes at q = 0
        lines.append(_row(f"this adapter as proxy encoders (seed {seed})", _eval(mine, "proxy", split), b))
    targets = config.get("target_modules") or "the default: attention q/k/v and the final projection"
    distill = (
        "cross-resolution self-distillation: the frozen base's embedding of the sharp image is the target of the "
        "degraded copy, at its low quality, and of the sharp image, at its high quality"
    )
    head = f"a {config.get('head', 'margin')} margin head over the 841 training identities"
    if config.get("head_init") == "imprint":
        head += ", started from their mean sharp embeddings under the frozen base (imprinted)"
    what = {
        "distill": f"label-free {distill}",
        "margin": head,
        "margin+distill": f"{head}, plus {distill}",
    }.get(config.get("objective"), "see petal-peft docs/training.md")
    return f"""---
library_name: peft
base_model: {BASE}
tags: [petal-peft, quality-gated-lora, face-recognition, low-resolution]
---

# Real-face low-resolution adapter for the petal-peft real-face base

A quality-gated LoRA adapter (PETALface-style: a high-quality and a low-quality branch, mixed per image by a
quality score) for the face transformer in `{BASE}`, trained to recognise tiny, blurred faces
(about 12-24 px) against sharp gallery photographs. The quality estimator (`resolution`) and its calibrated gate
are stored in `adapter_config.json`: the model computes each image's quality itself.

```python
import petal_peft  # registers the adapter type with PEFT
from peft import PeftModel
from transformers import AutoModel

model = PeftModel.from_pretrained(
    AutoModel.from_pretrained("{BASE}"), "benchmarks/real_face_adapter"
)
embeddings = model(pixel_values=images).pooler_output  # images: [B, 3, 112, 112], normalised to [-1, 1]
```

The command line uses it as any adapter: `petal-peft embed --model {BASE} --adapter benchmarks/real_face_adapter
--images DIR --out index.safetensors` (and `search`, `verify`, `eval`, `export onnx`).

## How it was trained

- objective: `{config.get("objective")}` ({what});
- target modules: `{targets}` (rank {config.get("lora_r")} per branch);
- data: the benchmark's adaptation group, 1,502 photographs of 841 people (LFW View-2 folds 4-5 and Glint360K
  celebrities of those people), ArcFace-aligned, degraded to 18-36 px captures;
- {settings["steps"]} steps, batch {settings["batch_size"]}, AdamW lr {settings["learning_rate"]}, weight decay
  {settings["weight_decay"]}, seed {seed}; gate threshold {config.get("gate_threshold"):.3f}, temperature
  {config.get("gate_temperature"):.3f}.

## Measured (real faces)

The real-face benchmark of petal-peft (`docs/benchmark_real_faces.md`): {where}, people neither the base nor the
adaptation saw; {protocol}. Flip test
{"on" if settings.get("flip_test", True) else "off"}. One seed is published; the benchmark's page gives the mean and
spread over three.

{chr(10).join(lines)}

## Data terms

Trained and evaluated on LFW (Labeled Faces in the Wild: news photographs, no licence; research use only; G. B.
Huang, M. Ramesh, T. Berg, E. Learned-Miller, UMass TR 07-49, 2007) and 24 Glint360K celebrities (distributed for
non-commercial research). This adapter is a research artefact under those terms: not for commercial use, and
not for identifying people without their consent. No image is distributed with it.
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="the benchmark run folder holding the row's <row>/seed<k>/")
    p.add_argument("--row", default="ours-distill")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--base-metrics", required=True, help="metrics.json of the untouched base (pretrained row)")
    p.add_argument("--lora-metrics", default=None, help="metrics.json of plain LoRA under the same recipe")
    p.add_argument("--split", choices=tuple(SPLITS), default="eval", help="the group whose figures the card shows")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "real_face_adapter"))
    args = p.parse_args(argv)
    src = Path(args.run) / args.row / f"seed{args.seed}"

    def read(path: Path | str) -> dict:
        return json.loads(Path(path).read_text(encoding="utf-8"))

    try:
        settings = read(Path(args.run) / "results.json")["settings"]
        config = read(src / "training_config.json")
        adapter_config = read(src / "adapter_config.json")
        mine, base = read(src / "metrics.json"), read(args.base_metrics)
        lora = read(args.lora_metrics) if args.lora_metrics else None
    except (OSError, ValueError, KeyError) as err:
        print(f"publish_real_face_adapter.py: error: {err}", file=sys.stderr)
        return 2
    from petal_peft.files import atomic_directory

    adapter_config["base_model_name_or_path"] = BASE
    card = model_card(settings, args.seed, config, mine, base, lora, args.split)
    with atomic_directory(args.out) as tmp:
        shutil.copy2(src / "adapter_model.safetensors", tmp / "adapter_model.safetensors")
        (tmp / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n")
        (tmp / "README.md").write_text(card, encoding="utf-8")
        size = sum(f.stat().st_size for f in tmp.iterdir())
        if size > MAX_BYTES:
            raise SystemExit(f"publish_real_face_adapter.py: error: {size} bytes, over the 2 MB limit")
    print(f"wrote {args.out} ({size / 1024:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
