"""Face benchmarks for petal-peft adapters: TinyFace, 1:1 verification (.bin / pair lists), IJB-B/C.

Protocols follow CVLface / insightface (see docs/evaluation.md) so numbers compare with the PETALface paper.
Importing this package registers the built-in evaluators in :data:`EVALUATORS`.
"""

from .. import _moved
from ..embedding.extractor import (
    Embedder,
    EmbeddingExtractor,
    Embeddings,
    ProxyEncoderEmbedder,
    SingleEncoderEmbedder,
    build_quality_fn,
    gated_embedder,
    load_proxy_encoders,
    merge_proxy_encoders,
    plain_embedder,
    pooled_embedding,
    proxy_embedder,
    proxy_embedder_from_adapter,
)
from ..embedding.images import ImageTransform
from . import ijb, tinyface, verification  # noqa: F401  (register the evaluators)
from .base import EVALUATORS, EvaluationResult, Evaluator
from .ijb import IJBEvaluator
from .metrics import (
    DISTRACTOR_LABEL,
    IJB_FARS,
    closed_set_identification,
    fuse_flip,
    kfold_verification_accuracy,
    roc_curve,
    tar_at_far,
    template_features,
)
from .report import metrics_to_model_index, report_to_model_index, write_json_atomic
from .run import build_embedders, build_transform, evaluate
from .safe_pickle import UnsafePickleError, load_verification_bin
from .tinyface import TinyFaceEvaluator
from .verification import VerificationEvaluator

_moved.install()  # petal_peft.evaluation.extractor / .images moved to petal_peft.embedding

__all__ = [
    "DISTRACTOR_LABEL",
    "EVALUATORS",
    "IJB_FARS",
    "Embedder",
    "Embeddings",
    "EmbeddingExtractor",
    "EvaluationResult",
    "Evaluator",
    "IJBEvaluator",
    "ImageTransform",
    "ProxyEncoderEmbedder",
    "SingleEncoderEmbedder",
    "TinyFaceEvaluator",
    "UnsafePickleError",
    "VerificationEvaluator",
    "build_embedders",
    "build_quality_fn",
    "build_transform",
    "closed_set_identification",
    "evaluate",
    "fuse_flip",
    "gated_embedder",
    "kfold_verification_accuracy",
    "load_proxy_encoders",
    "load_verification_bin",
    "merge_proxy_encoders",
    "metrics_to_model_index",
    "plain_embedder",
    "pooled_embedding",
    "proxy_embedder",
    "proxy_embedder_from_adapter",
    "report_to_model_index",
    "roc_curve",
    "tar_at_far",
    "template_features",
    "write_json_atomic",
]
