"""Shipping an adapted face model: ONNX export of the proxy encoders and the gated model, checked with onnxruntime.

``export_onnx(base_or_peft_model, adapter, out_dir)`` writes ``gallery_encoder.onnx``, ``probe_encoder.onnx``,
``gated.onnx`` (inputs ``pixel_values`` and ``quality``) and, when the adapter has a quality estimator that
exports, ``gated_estimator.onnx``, plus ``export_card.json``. Importing this package does not import onnx,
onnxscript or onnxruntime (the ``onnx`` extra); they are imported when an export or a session needs them.
"""

from .. import _moved
from ..embedding.loading import AdapterMismatchError, load_adapter, load_base_model
from .card import CARD_NAME, build_card, load_export_card, render_card_markdown
from .onnx import (
    DEFAULT_OPSET,
    GALLERY_ENCODER,
    GATED,
    GATED_ESTIMATOR,
    PARTS,
    PROBE_ENCODER,
    EmbeddingEncoder,
    ExportParityError,
    ExportUnsupportedError,
    GatedEncoder,
    SelfGatedEncoder,
    export_module,
    export_onnx,
)
from .parity import (
    DEFAULT_TOLERANCE,
    compare_with_torch,
    max_relative_difference,
    onnx_session,
    parity_batches,
    run_session,
    smooth_images,
)
from .requirements import MissingExtraError

_moved.install()  # petal_peft.export.loading moved to petal_peft.embedding.loading

__all__ = [
    "CARD_NAME",
    "DEFAULT_OPSET",
    "DEFAULT_TOLERANCE",
    "GALLERY_ENCODER",
    "GATED",
    "GATED_ESTIMATOR",
    "PARTS",
    "PROBE_ENCODER",
    "AdapterMismatchError",
    "EmbeddingEncoder",
    "ExportParityError",
    "ExportUnsupportedError",
    "GatedEncoder",
    "MissingExtraError",
    "SelfGatedEncoder",
    "build_card",
    "compare_with_torch",
    "export_module",
    "export_onnx",
    "load_adapter",
    "load_base_model",
    "load_export_card",
    "max_relative_difference",
    "onnx_session",
    "parity_batches",
    "render_card_markdown",
    "run_session",
    "smooth_images",
]
