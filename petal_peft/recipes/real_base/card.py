"""The README.md (model card) and NOTICE written into a built real-face base folder."""

from __future__ import annotations

from typing import Any

from petal_peft.recipes.real_base.settings import RealBaseSettings

#: the terms that travel with the weights (written into every built folder)
NOTICE = """These weights were learned from face photographs that are licensed for research use only.

- LFW (Labeled Faces in the Wild; G. B. Huang, M. Ramesh, T. Berg, E. Learned-Miller, UMass TR 07-49, 2007):
  View-2 folds 6-9. LFW publishes no licence; its photos are news pictures whose copyright stays with their owners.
- Glint360K: celebrities not named in LFW folds 0-5. Distributed for non-commercial research; web photos of
  public figures.

Use these weights for research measurements only. No photo, and no image derived from one, is included here.
The identities whose photos were used are listed in base_identities.json.

The teacher, dlib's dlib_face_recognition_resnet_model_v1 (Davis King), is in the public domain / CC0 1.0
Universal (as the face_recognition_models package states); part of the stem is copied from it.
"""


def _pct(m: dict[str, Any]) -> str:
    return f"{m['accuracy']:.2f} ± {m['accuracy_std']:.2f}"


def model_card(settings: RealBaseSettings, record: dict[str, Any]) -> str:
    """The README.md of a built base: what it is, its data and their terms, the teacher, the recipe, its accuracy."""
    s, m, t = settings, record["metrics"], record["timings"]
    groups = record["data"]["groups"]
    if s.architecture == "conv_vit":
        arch = (
            f"`FaceConvViTModel` (petal-peft; `import petal_peft` registers it with `AutoModel`): a residual conv "
            f"stem copied from the teacher's first {s.stem_units} residual units"
            f"{' (kept frozen while distilling)' if s.freeze_stem else ''}, whose feature-map cells become "
            f"tokens for {s.num_layers} pre-norm transformer layers (width {s.hidden_size}, {s.num_heads} heads, "
            f"attention `q_proj`/`k_proj`/`v_proj`/`o_proj`); the embedding is `pooler.dense` of the mean token"
        )
    else:
        arch = (
            f"plain transformers `ViTModel` ({s.num_layers} layers, width {s.hidden_size}, {s.num_heads} heads, "
            f"{s.patch_size} px patches); the embedding is `pooler_output`, a linear map of the CLS token"
        )
    framing = "the ArcFace 112x112 crop" if s.student_template == "arcface" else "dlib's 150x150 face chip"
    rows = [
        ("this base (fp16 file, as loaded)", m["student_fp16_weights"]),
        ("this base (fp32, before saving)", m["student"]),
        ("teacher: dlib ResNet (our torch port, same alignment)", m["teacher_dlib_resnet_torch"]),
    ]
    table = "\n".join(f"| {name} | {_pct(x)} | {_pct(x['balanced_order'])} | {x['auc']:.2f} |" for name, x in rows)
    return f"""# petal-peft real-face base: a face transformer distilled from dlib's ResNet

A {arch}. Input: {framing} of a face aligned with petal-peft's aligner (`petal_peft.align.FaceAligner()` or
`petal-peft align SRC DST`: dlib's detector and 5 landmarks, similarity warp), resized by the image processor to
{s.image_size}x{s.image_size}. Output: a {s.embedding_dim}-d embedding (`pooler_output`); compare faces by cosine.

```python
import petal_peft  # registers petal-peft's architectures with AutoModel
from transformers import AutoImageProcessor, AutoModel

model = AutoModel.from_pretrained("path/to/this/folder").eval()
processor = AutoImageProcessor.from_pretrained("path/to/this/folder")
# embedding = model(**processor(aligned_images, return_tensors="pt")).pooler_output
```

## Accuracy (real faces)

LFW View-2 pairs of folds 0-2 (1,800 pairs of people this base never saw), 10-fold verification accuracy (%) of
flip-fused unit embeddings by squared L2 distance (petal-peft's verification protocol), measured in the build:

| model | 10-fold accuracy, pairs in LFW's order | pairs interleaved (balanced folds) | AUC |
|---|---|---|---|
{table}

In LFW's order each official fold lists its 300 same-person pairs before its 300 different-person pairs, so some
of the ten contiguous folds hold one kind only; interleaving balances them. dlib's own pipeline (its chip
extraction, raw descriptors, Euclidean threshold) scores 98.8 % on all ten LFW folds.

## Data and terms

- **Photos**: the base identity group of `petal_peft.data.lfw.lfw_face_groups`: LFW View-2 folds 6-9 plus the
  Glint360K celebrities not named in LFW folds 0-5 ({groups["base"]["identities"]} identities,
  {groups["base"]["images"]} images); no labels were used. The identities are listed in `base_identities.json`;
  keep them out of adaptation and evaluation groups (LFW folds 0-2 evaluate, 3 validates, 4-5 adapt).
- **Terms: research use only.** LFW (G. B. Huang, M. Ramesh, T. Berg, E. Learned-Miller, "Labeled Faces in the
  Wild", UMass TR 07-49, 2007) publishes no licence; its photos are news pictures whose copyright stays with their
  owners. Glint360K is distributed for non-commercial research; its photos are web photos of public figures.
  These weights were learned from those photos: use them for research measurements only.
- **Teacher**: dlib's `dlib_face_recognition_resnet_model_v1` (Davis King), public domain / CC0 1.0 Universal as
  the `face_recognition_models` package states; run in torch by `petal_peft.models.dlib_resnet`.

## Recipe

Function matching (Beyer et al., CVPR 2022): every step, teacher and student see the same freshly augmented view
of a batch of {s.batch_size} base photos (random similarity warp: scale {s.scale_range[0]}-{s.scale_range[1]},
rotation ±{s.max_rotation_deg:g}°, shift ±{s.max_shift:g} px; mirror p={s.flip_prob}; brightness / contrast /
saturation ±{s.colour_jitter:g}; grey p={s.grey_prob}; mixup of two photos with weight ~ U(0, 1) for a share
{s.mixup_prob} of the batch). The teacher sees dlib's 150 px chip, the student {framing}, both cut from the same
augmented image. Loss: cosine distance to the teacher's descriptor centred on its mean over the base photos
(weight {s.cosine_weight}) plus the mean squared difference of the in-batch cosine-similarity matrices
(weight {s.relational_weight}). AdamW, lr {s.lr:g} ({s.warmup_steps} warmup steps, cosine decay to
{s.min_lr_ratio:g}x), weight decay {s.weight_decay:g}, gradient clip {s.grad_clip:g}, {s.steps} steps, seed {s.seed},
{s.threads} torch threads. Every setting: `build_record.json`.

Build: `python benchmarks/real_faces.py build-base --faces DIR --out DIR` ({t["total_s"] / 60:.1f} min wall on the build
machine: alignment {t["align_s"]:.0f} s, teacher evaluation {t["teacher_eval_s"]:.0f} s, distillation
{t["distill_s"]:.0f} s). The same machine, torch build and thread count reproduce it.
"""
