"""No-reference image quality for PETALface's gate: estimators, bounded gates, calibration, plots.

Importing this package registers the estimators (``brisque``, ``resolution``) in
``petal_peft.registry.QUALITY_ESTIMATORS`` and the gates (``sigmoid``, ``linear``, ``paper``) in
``QUALITY_GATES`` (plus the opt-in unbounded ``linear_unclamped``), which is how a QualityGatedLoraConfig
that names them is rebuilt after loading.
This package never imports the tuner.
"""

from .brisque import BrisqueEstimator, BrisqueFeatures
from .calibration import calibrate_gate, calibrate_gate_on_images, gate_quality_range, separation_auc
from .custom import CallableEstimator, register_quality_function
from .degrade import degrade
from .function import QualityFunction, build_estimator, build_quality_fn, quality_fn_from_settings
from .gate import (
    GATE_MODES,
    UNBOUNDED_GATE_MODES,
    LinearGate,
    PaperGate,
    QualityGate,
    SigmoidGate,
    UnclampedLinearGate,
    build_gate,
)
from .pixels import PixelDecoder
from .plotting import plot_quality_histogram
from .resolution import ResolutionEstimator

__all__ = [
    "GATE_MODES",
    "BrisqueEstimator",
    "BrisqueFeatures",
    "CallableEstimator",
    "LinearGate",
    "PaperGate",
    "PixelDecoder",
    "QualityFunction",
    "QualityGate",
    "ResolutionEstimator",
    "SigmoidGate",
    "UNBOUNDED_GATE_MODES",
    "UnclampedLinearGate",
    "build_estimator",
    "build_gate",
    "build_quality_fn",
    "quality_fn_from_settings",
    "calibrate_gate",
    "calibrate_gate_on_images",
    "gate_quality_range",
    "degrade",
    "plot_quality_histogram",
    "register_quality_function",
    "separation_auc",
]
