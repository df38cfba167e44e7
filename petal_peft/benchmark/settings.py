"""The settings of one benchmark run: data source, sizes, degradations and the budget every method shares."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["BenchmarkSettings", "quick_settings", "real_face_settings"]


@dataclass
class BenchmarkSettings:
    """Sizes, budget and data of one benchmark run (every field is a command-line flag of the scripts).

    ``source`` names a registered data source (:data:`petal_peft.benchmark.DATA_SOURCES`); each source reads
    the fields of its own section below and ignores the others. The defaults are the synthetic-identity run
    of docs/benchmark.md; :func:`real_face_settings` gives the real-face defaults.
    """

    out: str = "outputs/benchmark"
    seeds: tuple[int, ...] = (0, 1, 2)
    # base: "pretrained" (the shipped small face ViT), "random" (a tiny random ViT: pipeline checks),
    # "standin-vit" (a random ViT of a real face base's size: timing), or a folder AutoModel loads
    base: str = "pretrained"
    source: str = "synthetic"
    # real_faces: the folder holding lfw/ (and the extra sets); identity_folder: a root/<identity>/<image>
    # tree, or "olivetti"
    faces: str | None = None
    # -- synthetic identities ----------------------------------------------------------------------------
    adapt_identities: int = 300
    adapt_images: int = 16
    val_identities: int = 60
    eval_identities: int = 200
    distractor_identities: int = 200
    gallery_images: int = 2
    probe_images: int = 3
    verification_images: int = 4
    verification_pairs: int = 3000
    # -- real faces: LFW View-2 folds as identity groups, extra sets joined by name ------------------------
    extra_face_sets: tuple[str, ...] = ("glint_celeb24",)  # sub-folders of `faces`, used where present
    eval_folds: tuple[int, ...] = (0, 1, 2)
    validation_folds: tuple[int, ...] = (3,)
    adapt_folds: tuple[int, ...] = (4, 5)
    base_folds: tuple[int, ...] = (6, 7, 8, 9)
    prepare: str = "center-crop"  # a registered image preparation (IMAGE_PREPARATIONS)
    adapt_min_images: int = 1  # adaptation identities need at least this many images
    base_identities: str | None = None  # a file listing the base model's identities: checked disjoint
    # -- degradations ----------------------------------------------------------------------------------------
    # capture size (short side, px) of probes and of degraded training images, as fractions of the base's
    # input size, or in pixels when the *_px field is set (TinyFace faces are ~20 px)
    probe_size_fraction: tuple[float, float] = (0.1875, 0.375)
    train_size_fraction: tuple[float, float] = (0.1875, 0.5)
    probe_size_px: tuple[int, int] | None = None
    train_size_px: tuple[int, int] | None = None
    degrade_fraction: float = 0.5
    # -- training budget, the same for every method ---------------------------------------------------------
    steps: int = 400
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    lora_r: int = 8
    # -- objective and targets of the trained rows (each objective gives its own rows; see methods.py) ------
    objectives: tuple[str, ...] = ("margin",)  # margin, distill, margin+distill
    distill_weight: float = 1.0  # of the distillation term in margin+distill
    distill_degrade_fraction: float = 0.5  # share of degraded images in a distillation batch (the rest sharp)
    head_init: str = "random"  # the margin head: random, or imprint (class prototypes of the frozen base)
    # the gated rows' gate, calibrated on sharp vs degraded adaptation images: "sigmoid", or "linear" (a clamped
    # ramp of the same slope: clearly sharp images get exactly q = 1, clearly degraded ones q = 0)
    gate_mode: str = "sigmoid"
    targets: str = "default"  # the adapters' target modules: default, all-linear, or a named set of the base
    head: str = "cosface"
    head_scale: float = 32.0
    head_margin: float = 0.2
    calibration_images: int = 600
    # -- rows: names of default_methods() to run (empty: all), and reference rows by REFERENCE_MODELS name --
    rows: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    # which rows are also evaluated on the validation group: "all", or "variants" (only the candidates for the
    # best variant need it; saves evaluation time)
    validation_rows: str = "all"
    # the evaluation modes of the quality-gated rows (a subset of gate, proxy: fewer modes, less evaluation time)
    gated_modes: tuple[str, ...] = ("gate", "proxy")
    # the groups evaluated: ("val",) for an ablation that must not look at the evaluation folds
    groups: tuple[str, ...] = ("val", "eval")
    flip_test: bool = True  # embed each image and its mirror (flip-fused embeddings)
    num_threads: int = 2
    eval_batch_size: int = 256
    progress: bool = True
    quick: bool = False
    # a folder (outside any repository) where prepared images are kept between runs: later runs skip the alignment
    prepared_cache: str | None = None
    keep_work: bool = False  # keep <out>/work (the prepared adaptation images) after the run
    resume: bool = False  # reuse rows whose <out>/<method>/[seed<k>/]metrics.json has these settings' fingerprint

    #: fields that do not change a row's numbers (where it is written, how it is shown, how it is resumed)
    NOT_FINGERPRINTED = (
        "out",
        "seeds",
        "progress",
        "keep_work",
        "resume",
        "quick",
        "rows",
        "references",
        "prepared_cache",
    )

    def __post_init__(self) -> None:
        self.objectives = tuple(self.objectives)
        from ..training.objectives import OBJECTIVES

        bad = [o for o in self.objectives if o not in OBJECTIVES]
        if bad or not self.objectives or len(set(self.objectives)) != len(self.objectives):
            raise ValueError(f"objectives must be distinct names among {OBJECTIVES}, got {self.objectives}.")
        if self.head_init not in ("random", "imprint"):
            raise ValueError(f"head_init must be 'random' or 'imprint', got {self.head_init!r}.")
        if self.gate_mode not in ("sigmoid", "linear"):
            raise ValueError(f"gate_mode must be 'sigmoid' or 'linear', got {self.gate_mode!r}.")
        if not 0.0 <= self.distill_degrade_fraction <= 1.0:
            raise ValueError(f"distill_degrade_fraction must be in [0, 1], got {self.distill_degrade_fraction}.")
        self.groups = tuple(self.groups)
        self.gated_modes = tuple(self.gated_modes)
        if not self.gated_modes or not set(self.gated_modes) <= {"gate", "proxy"}:
            raise ValueError(f"gated_modes must be among ('gate', 'proxy'), got {self.gated_modes}.")
        if not self.groups or not set(self.groups) <= {"val", "eval"}:
            raise ValueError(f"groups must be among ('val', 'eval'), got {self.groups}.")
        for name in ("seeds", "extra_face_sets", "eval_folds", "validation_folds", "adapt_folds", "base_folds"):
            setattr(self, name, tuple(getattr(self, name)))
        self.references = tuple(self.references)
        self.rows = tuple(self.rows)
        for name in ("probe_size_fraction", "train_size_fraction", "probe_size_px", "train_size_px"):
            value = getattr(self, name)
            if value is not None:
                value = tuple(value)
                if len(value) != 2 or not 0 < value[0] <= value[1]:
                    raise ValueError(f"{name} must be two increasing positive numbers (min, max), got {value}.")
                setattr(self, name, value)
        if not self.seeds:
            raise ValueError("at least one seed is needed.")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}.")
        for name in ("steps", "batch_size", "lora_r", "num_threads", "eval_batch_size", "adapt_min_images"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.validation_rows not in ("all", "variants"):
            raise ValueError(f"validation_rows must be 'all' or 'variants', got {self.validation_rows!r}.")
        if not 0.0 <= self.degrade_fraction <= 1.0:
            raise ValueError(f"degrade_fraction must be in [0, 1], got {self.degrade_fraction}.")

    def capture_sizes(self, kind: str, image_size: int) -> tuple[int, int]:
        """(min, max) short side in px of degraded ``"probe"`` or ``"train"`` images for a base of ``image_size``."""
        px = self.probe_size_px if kind == "probe" else self.train_size_px
        if px is not None:
            return int(px[0]), int(px[1])
        frac = self.probe_size_fraction if kind == "probe" else self.train_size_fraction
        return max(2, round(frac[0] * image_size)), max(2, round(frac[1] * image_size))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def fingerprint(self, **extra: Any) -> str:
        """A hash of every setting that changes a row's numbers (plus ``extra``, e.g. the row's own spec)."""
        import hashlib
        import json

        values = {k: v for k, v in self.to_dict().items() if k not in self.NOT_FINGERPRINTED}
        text = json.dumps({**values, **extra}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}


def quick_settings(out: str, **overrides: Any) -> BenchmarkSettings:
    """A pipeline check: one seed, a tiny random base, a handful of identities and steps (well under a minute)."""
    values: dict[str, Any] = dict(
        out=out,
        seeds=(0,),
        base="random",
        adapt_identities=12,
        adapt_images=6,
        val_identities=6,
        eval_identities=10,
        distractor_identities=6,
        verification_images=3,
        verification_pairs=200,
        steps=6,
        batch_size=16,
        calibration_images=48,
        quick=True,
    )
    values.update(overrides)
    return BenchmarkSettings(**values)


#: the real-face run's defaults (docs/benchmark_real_faces.md). Captures of 18-36 px for the whole crop: the face
#: spans about two thirds of an aligned or LFW crop, so faces of about 12-24 px (TinyFace's are ~20 px); every
#: adaptation image degraded (TinyFace's training set is all low resolution); the paper's optimiser and CosFace
#: head; a budget that fits about 75 minutes on a quiet 2-core CPU with the planned real base (a 6-layer, 256-wide
#: transformer on 36 tokens from a conv stem; the variant trained with the degradation level left out; run
#: ``benchmarks/real_faces.py budget`` with the actual base); the dlib descriptor as a reference row; images
#: aligned to the ArcFace crop, the framing the real-face base is built on (needs the ``align`` extra).
REAL_FACE_DEFAULTS: dict[str, Any] = dict(
    source="real_faces",
    prepare="arcface",
    probe_size_px=(18, 36),
    train_size_px=(18, 36),
    degrade_fraction=1.0,
    steps=240,
    batch_size=48,
    learning_rate=5e-4,
    weight_decay=0.1,
    head_scale=64.0,
    head_margin=0.4,
    calibration_images=600,
    rows=("pretrained", "full", "lora", "ours", "ours-alllin"),
    references=("dlib",),
    validation_rows="variants",
)


def real_face_settings(faces: str | None, out: str, **overrides: Any) -> BenchmarkSettings:
    """Settings of the real-face run (:data:`REAL_FACE_DEFAULTS`), with ``overrides`` on top."""
    values: dict[str, Any] = dict(REAL_FACE_DEFAULTS, faces=faces, out=out)
    values.update(overrides)
    return BenchmarkSettings(**values)
