"""Face benchmarks for petal-peft adapters: TinyFace, 1:1 verification (.bin / pair lists), IJB-B/C.

Protocols follow CVLface / insightface (see docs/evaluation.md) so numbers compare with the PETALface paper.
Importing this package registers the built-in evaluators in :data:`EVALUATORS`.
"""

from .. import _moved
from .. import embedding as _embedding
from ..embedding import *  # noqa: F403  (the embedders evaluation runs, offered here as they always were)
from . import ijb, tinyface, verification  # noqa: F401  (register the evaluators)
from .base import EVALUATORS, EvaluationResult, Evaluator
from .ijb import IJBEvaluator
from .metrics import (
    DISTRACTOR_LABEL,
    IJB_FARS,
    closed_set_identification,
    kfold_verification_accuracy,
    roc_curve,
    tar_at_far,
    template_features,
)
from .report import metrics_to_model_index, report_to_model_index
from .run import build_embedders, evaluate
from .safe_pickle import UnsafePickleError, load_verification_bin
from .tinyface import TinyFaceEvaluator
from .verification import VerificationEvaluator

_moved.install()  # petal_peft.evaluation.extractor / .images moved to petal_peft.embedding

__all__ = [
    *_embedding.__all__,
    "DISTRACTOR_LABEL",
    "EVALUATORS",
    "IJB_FARS",
    "EvaluationResult",
    "Evaluator",
    "IJBEvaluator",
    "TinyFaceEvaluator",
    "UnsafePickleError",
    "VerificationEvaluator",
    "build_embedders",
    "closed_set_identification",
    "evaluate",
    "kfold_verification_accuracy",
    "load_verification_bin",
    "metrics_to_model_index",
    "report_to_model_index",
    "roc_curve",
    "tar_at_far",
    "template_features",
]


def __getattr__(name: str):
    if name == "write_json_atomic":  # one JSON writer: petal_peft.files.write_json_atomic
        import os
        import warnings

        from ..files import to_jsonable, write_json_atomic

        warnings.warn(
            "petal_peft.evaluation.write_json_atomic is deprecated: use petal_peft.files.write_json_atomic "
            "(with petal_peft.files.to_jsonable for numpy values).",
            DeprecationWarning,
            stacklevel=2,
        )
        return lambda path, obj: os.fspath(write_json_atomic(path, to_jsonable(obj)))
    if name == "build_quality_fn":  # renamed: it clashed with petal_peft.quality.build_quality_fn
        import warnings

        from ..embedding.extractor import adapter_quality_fn

        warnings.warn(
            "petal_peft.evaluation.build_quality_fn is deprecated: use petal_peft.embedding.adapter_quality_fn.",
            DeprecationWarning,
            stacklevel=2,
        )
        return adapter_quality_fn
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
