"""Gates: raw estimator score [B] -> quality q [B] in [0, 1], with q = 1 meaning high quality.

``sigmoid`` (default) is smooth, monotone and bounded; it is signed by the estimator's direction so that q keeps
its meaning whichever estimator feeds it. ``linear`` is the reference's straight-line rule made bounded and signed.
``paper`` is the PETALface reference rule ``0.5 + (score - threshold)`` exactly (temperature ignored), only
clamped to [0, 1]: unsigned, so with a lower-is-better estimator (BRISQUE) q = 1 there means LOW quality, as in the
reference, where the meaning of the branches flips with the IQA. Use it only to reproduce the reference.

``linear_unclamped`` is the reference's rule as it was trained, in our orientation: ``0.5 + sign * (score -
threshold) / temperature`` with NO clamp, so q can leave [0, 1] (a BRISQUE score 10 above the threshold gives
q = -9.5). It is the one gate that runs a converted PETALface model exactly as released; because it extrapolates
the two branches, the tuner accepts it only with ``QualityGatedLoraConfig(allow_unbounded_quality=True)``.
"""

from __future__ import annotations

import math

import torch

from ..registry import QUALITY_GATES

#: the bounded gates (what calibrate_gate fits); ``linear_unclamped`` is registered too, as an explicit opt-in
GATE_MODES = ("sigmoid", "linear", "paper")
UNBOUNDED_GATE_MODES = ("linear_unclamped",)


class QualityGate(torch.nn.Module):
    """Base gate: holds the settings and checks scores; subclasses define ``_map``."""

    mode: str = ""
    #: whether q always lies in [0, 1]; the tuner refuses an unbounded gate unless the config opts in
    bounded: bool = True

    def __init__(self, threshold: float = 0.0, temperature: float = 1.0, higher_is_better: bool = True) -> None:
        super().__init__()
        threshold, temperature = float(threshold), float(temperature)
        if not math.isfinite(threshold):
            raise ValueError(f"gate threshold must be finite, got {threshold}.")
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"gate temperature must be a finite positive number, got {temperature}.")
        self.threshold = threshold
        self.temperature = temperature
        self.higher_is_better = bool(higher_is_better)

    @property
    def sign(self) -> float:
        return 1.0 if self.higher_is_better else -1.0

    def settings(self) -> dict:
        """The gate as plain JSON-able values (the QualityGatedLoraConfig field names)."""
        return {"gate_mode": self.mode, "gate_threshold": self.threshold, "gate_temperature": self.temperature}

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        if not isinstance(scores, torch.Tensor):
            scores = torch.as_tensor(scores, dtype=torch.float32)
        if scores.dim() != 1:
            raise ValueError(f"quality scores must have shape [B], got {tuple(scores.shape)}.")
        # a value check reads the data, which torch.export / torch.compile cannot trace: eager mode only
        if not torch.compiler.is_compiling() and scores.numel() and not torch.isfinite(scores).all():
            raise ValueError("quality scores contain NaN or infinite values.")
        return self._map(scores.to(torch.float32))

    def _map(self, scores: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        settings = f"threshold={self.threshold:.6g}, temperature={self.temperature:.6g}"
        return f"{settings}, higher_is_better={self.higher_is_better}"


@QUALITY_GATES.register("sigmoid")
class SigmoidGate(QualityGate):
    """q = sigmoid(sign * (score - threshold) / temperature); q = 0.5 at the threshold."""

    mode = "sigmoid"

    def _map(self, scores: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.sign * (scores - self.threshold) / self.temperature)


@QUALITY_GATES.register("linear")
class LinearGate(QualityGate):
    """q = clamp(0.5 + sign * (score - threshold) / temperature, 0, 1): the reference's ramp, signed and bounded."""

    mode = "linear"

    def _map(self, scores: torch.Tensor) -> torch.Tensor:
        return (0.5 + self.sign * (scores - self.threshold) / self.temperature).clamp(0.0, 1.0)


@QUALITY_GATES.register("paper")
class PaperGate(QualityGate):
    """The reference rule q = clamp(0.5 + (score - threshold), 0, 1); unsigned, temperature ignored."""

    mode = "paper"

    def _map(self, scores: torch.Tensor) -> torch.Tensor:
        return (0.5 + (scores - self.threshold)).clamp(0.0, 1.0)


@QUALITY_GATES.register("linear_unclamped")
class UnclampedLinearGate(QualityGate):
    """q = 0.5 + sign * (score - threshold) / temperature, not clamped: the reference's gate as it was trained.

    With temperature 1 and the reference's IQA threshold, q equals the reference's ``1 - alpha`` for BRISQUE (lower
    is better) and its ``alpha`` for CNNIQA (higher is better), i.e. the weight of the high-quality branch.
    """

    mode = "linear_unclamped"
    bounded = False

    def _map(self, scores: torch.Tensor) -> torch.Tensor:
        return 0.5 + self.sign * (scores - self.threshold) / self.temperature


def build_gate(
    mode: str = "sigmoid", threshold: float = 0.0, temperature: float = 1.0, higher_is_better: bool = True
) -> QualityGate:
    """Build a registered gate by name (what the tuner does from the adapter config)."""
    return QUALITY_GATES.build(mode, threshold=threshold, temperature=temperature, higher_is_better=higher_is_better)
