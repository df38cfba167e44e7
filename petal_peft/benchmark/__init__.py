"""The low-resolution adaptation benchmark (TinyFace/BRIAR-like protocol), as a library: one protocol, several
data sources.

A pretrained face model (it saw only the *base* identities) is adapted on the *adaptation* identities, degraded
to low resolution, with each method at the same budget; then it is evaluated on *evaluation* identities it never
saw: degraded probes against a sharp gallery with distractors (closed-set CMC, rank 1/5/10/20, mAP) and sharp
1:1 verification (10-fold accuracy) to measure forgetting. Rows: the base untouched, full fine-tuning, PEFT's
plain LoRA with the same trainable-parameter count, the quality-gated adapter (per-image gate, and merged proxy
encoders) in a few variants, of which the best is picked on *validation* identities (never on the evaluation
group), and reference models that are not trained (e.g. dlib's face descriptor).

Pieces: :mod:`.settings` (one dataclass, every field a flag), :mod:`.sources` (``DATA_SOURCES``:
``synthetic`` identities — NOT faces, the fast pipeline check —, ``real_faces`` — LFW folds + extra sets —,
``identity_folder``), :mod:`.prepare` (image preparation / alignment by name), :mod:`.methods` (the rows),
:mod:`.models`, :mod:`.evaluate`, :mod:`.reference` (``REFERENCE_MODELS``), :mod:`.run`, :mod:`.aggregate`,
:mod:`.report`. Command lines: ``benchmarks/lowres_benchmark.py`` (synthetic) and ``benchmarks/real_faces.py``.
"""

from .aggregate import aggregate, mean_std, row_label
from .data import DATA_SOURCES, DISTRACTOR, BenchmarkData, EvalSplit
from .evaluate import evaluate_split, model_embedder, reference_embedder
from .methods import MethodSpec, default_methods, select_methods, train_config
from .prepare import IMAGE_PREPARATIONS, build_preparation, center_crop
from .reference import REFERENCE_MODELS, DlibFaceDescriptor
from .report import format_table, plot_cmc, plot_forgetting, run_summary, write_outputs
from .run import benchmark_gate, run_benchmark
from .settings import REAL_FACE_DEFAULTS, BenchmarkSettings, quick_settings, real_face_settings
from .sources import build_data, plan_real_faces
from .sources.synthetic import SYNTHETIC_NOTE

__all__ = [
    "DATA_SOURCES",
    "DISTRACTOR",
    "IMAGE_PREPARATIONS",
    "REAL_FACE_DEFAULTS",
    "REFERENCE_MODELS",
    "SYNTHETIC_NOTE",
    "BenchmarkData",
    "BenchmarkSettings",
    "DlibFaceDescriptor",
    "EvalSplit",
    "MethodSpec",
    "aggregate",
    "build_data",
    "benchmark_gate",
    "build_preparation",
    "center_crop",
    "default_methods",
    "evaluate_split",
    "format_table",
    "run_summary",
    "mean_std",
    "model_embedder",
    "plan_real_faces",
    "plot_cmc",
    "plot_forgetting",
    "quick_settings",
    "real_face_settings",
    "reference_embedder",
    "row_label",
    "run_benchmark",
    "select_methods",
    "train_config",
    "write_outputs",
]


def __getattr__(name: str):
    if name == "calibrate_gate":  # the old name of benchmark_gate
        import warnings

        warnings.warn(
            "petal_peft.benchmark.calibrate_gate is deprecated: use petal_peft.benchmark.benchmark_gate (or "
            "petal_peft.quality.calibrate_gate_on_images).",
            DeprecationWarning,
            stacklevel=2,
        )
        return benchmark_gate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
