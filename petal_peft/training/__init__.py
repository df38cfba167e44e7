"""Training a quality-gated adapter and its margin head on face data (the PETALface recipe).

``train(FaceAdapterTrainingConfig(...))`` does the whole run with Accelerate; ``parse_args`` turns the config
fields into command-line flags (``examples/train_tinyface.py``). See docs/training.md.
"""

from ..files import atomic_directory, publish_directory, recover_directory
from .checkpointing import CheckpointManager, TrainingProgress
from .config import FaceAdapterTrainingConfig, parse_args
from .data import EpochShuffleSampler, build_train_dataloader, build_train_dataset
from .evaluation_hook import EvaluationHook, TinyFaceEvaluationHook, preserved_rng
from .model_card import push_adapter_folder, render_model_card
from .modeling import FaceEmbeddingClassifier
from .trainer import TrainResult, format_metrics_table, train

__all__ = [
    "CheckpointManager",
    "EpochShuffleSampler",
    "EvaluationHook",
    "FaceAdapterTrainingConfig",
    "FaceEmbeddingClassifier",
    "TinyFaceEvaluationHook",
    "TrainResult",
    "TrainingProgress",
    "atomic_directory",
    "build_train_dataloader",
    "build_train_dataset",
    "format_metrics_table",
    "parse_args",
    "preserved_rng",
    "publish_directory",
    "push_adapter_folder",
    "recover_directory",
    "render_model_card",
    "train",
]
