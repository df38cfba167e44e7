"""Margin-based classification heads for face-recognition training (ArcFace, CosFace, AdaFace).

The backbone is frozen in PETALface; the head is the one new full-size module, trained from scratch over the
training identities and thrown away after training (evaluation uses the embeddings only). Each head keeps one
weight matrix ``[num_classes, embedding_size]`` whose rows are class centres on the unit sphere and returns
scaled cosine logits with a margin on the target class, ready for ``torch.nn.functional.cross_entropy``.

The margin arithmetic runs in fp32 whatever the input dtype: ``arccos`` and ``cos(theta + m)`` near
``|cos| = 1`` lose all precision in fp16/bf16, and logits scaled by ``s = 64`` overflow fp16 easily.
"""

from __future__ import annotations

import inspect
import json
import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from petal_peft.files import write_file_atomic
from petal_peft.registry import Registry

__all__ = [
    "HEADS",
    "HEAD_CONFIG_NAME",
    "HEAD_WEIGHTS_NAME",
    "AdaFaceHead",
    "CombinedMarginHead",
    "FaceHead",
    "build_head",
    "load_head",
]

#: name -> head factory taking ``embedding_size``, ``num_classes`` and the head's own keyword arguments.
HEADS = Registry("face-recognition head")

HEAD_CONFIG_NAME = "head_config.json"
HEAD_WEIGHTS_NAME = "head.safetensors"

# Cosines are clamped this far inside [-1, 1] before arccos: d/dx arccos(x) is infinite at |x| = 1.
_COS_EPS = 1e-6
# Labels equal to this value (PyTorch's cross-entropy ignore_index) get no margin and are ignored by the loss.
IGNORE_INDEX = -100


def _check_inputs(embeddings: torch.Tensor, labels: torch.Tensor | None, embedding_size: int, num_classes: int) -> None:
    if not isinstance(embeddings, torch.Tensor):
        raise TypeError(f"embeddings must be a torch.Tensor, got {type(embeddings).__name__}.")
    if embeddings.dim() != 2 or embeddings.shape[1] != embedding_size:
        raise ValueError(f"embeddings must have shape [batch, {embedding_size}], got {tuple(embeddings.shape)}.")
    if not embeddings.is_floating_point():
        raise TypeError(f"embeddings must be a floating-point tensor, got dtype {embeddings.dtype}.")
    if labels is None:
        return
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor of dtype long, got {type(labels).__name__}.")
    if labels.dtype not in (torch.long, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise TypeError(f"labels must be an integer tensor (torch.long), got dtype {labels.dtype}.")
    if labels.shape != (embeddings.shape[0],):
        raise ValueError(f"labels must have shape [batch] = [{embeddings.shape[0]}], got {tuple(labels.shape)}.")
    # One host sync per step; cheap next to a backbone forward, and a wrong label is otherwise a silent bug
    # (or a device-side assert far away in cross_entropy).
    if labels.numel() and not torch.compiler.is_compiling():
        valid = (labels == IGNORE_INDEX) | ((labels >= 0) & (labels < num_classes))
        if not bool(valid.all()):
            bad = labels[~valid][:5].tolist()
            raise ValueError(
                f"labels must be in [0, {num_classes}) (or {IGNORE_INDEX} to ignore a sample); got e.g. {bad}."
            )


class FaceHead(nn.Module):
    """Common parts: the class-centre weight, cosine logits, and safetensors save/load."""

    #: name under which ``from_pretrained`` finds the class again (set by subclasses).
    head_type: str = ""

    def __init__(self, embedding_size: int, num_classes: int, s: float) -> None:
        super().__init__()
        if int(embedding_size) != embedding_size or embedding_size < 1:
            raise ValueError(f"embedding_size must be a positive integer, got {embedding_size!r}.")
        if int(num_classes) != num_classes or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}.")
        if not (math.isfinite(s) and s > 0):
            raise ValueError(f"scale s must be a positive finite number, got {s!r}.")
        self.embedding_size = int(embedding_size)
        self.num_classes = int(num_classes)
        self.s = float(s)
        # insightface initialises the centres with N(0, 0.01); only their direction matters.
        self.weight = nn.Parameter(torch.empty(self.num_classes, self.embedding_size))
        nn.init.normal_(self.weight, std=0.01)

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Cosine similarity [B, C] between L2-normalised embeddings and class centres, in fp32."""
        emb = F.normalize(embeddings.float(), dim=1)
        w = F.normalize(self.weight.float(), dim=1)
        return (emb @ w.t()).clamp(-1.0, 1.0)

    def extra_repr(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.config_dict().items())
        return f"{args}, head_type={self.head_type!r}"

    # ---- serialisation -------------------------------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this head; stored in ``head_config.json``.

        Each argument of the head's constructor, read from the attribute of the same name (every head keeps its
        arguments under their own names).
        """
        names = [name for name in inspect.signature(type(self).__init__).parameters if name != "self"]
        return {name: getattr(self, name) for name in names}

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write ``head.safetensors`` and ``head_config.json`` (each atomically) into ``save_directory``."""
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        write_file_atomic(out / HEAD_WEIGHTS_NAME, lambda p: save_file(tensors, p, metadata={"format": "pt"}))
        config = {"head_type": self.head_type, **self.config_dict()}
        text = json.dumps(config, indent=2, sort_keys=True) + "\n"
        write_file_atomic(out / HEAD_CONFIG_NAME, lambda p: Path(p).write_text(text))

    @classmethod
    def from_pretrained(cls, load_directory: str | os.PathLike, map_location: str = "cpu") -> FaceHead:
        """Rebuild a head saved with ``save_pretrained``. Called on ``FaceHead`` it returns whichever head
        type was saved; called on a subclass it refuses a directory holding another type."""
        src = Path(load_directory)
        cfg_path, weights_path = src / HEAD_CONFIG_NAME, src / HEAD_WEIGHTS_NAME
        for p in (cfg_path, weights_path):
            if not p.is_file():
                raise FileNotFoundError(f"{p} not found: not a directory written by save_pretrained().")
        config = json.loads(cfg_path.read_text())
        head_type = config.pop("head_type", None)
        if head_type not in HEADS:
            raise ValueError(f"{cfg_path}: unknown head_type {head_type!r}; registered: {HEADS.names()}.")
        head = HEADS.build(head_type, **config)
        if cls is not FaceHead and not isinstance(head, cls):
            raise TypeError(f"{src} holds a {type(head).__name__} ({head_type!r}), not a {cls.__name__}.")
        state = load_file(str(weights_path), device=map_location)
        expected = head.state_dict()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(f"{weights_path}: missing tensors {missing}, unexpected tensors {unexpected}.")
        for name, tensor in state.items():
            if tensor.shape != expected[name].shape:
                raise ValueError(
                    f"{weights_path}: tensor {name!r} has shape {tuple(tensor.shape)}, config implies "
                    f"{tuple(expected[name].shape)}."
                )
        head.load_state_dict(state)
        return head


class CombinedMarginHead(FaceHead):
    """insightface's combined margin: target logit ``s * (cos(m1 * theta + m2) - m3)``, others ``s * cos``.

    ArcFace is ``(m1, m2, m3) = (1, 0.5, 0)``, CosFace ``(1, 0, 0.4)``, SphereFace-like ``m1 > 1``.

    Where ``m1 * theta + m2`` passes pi, ``cos`` would turn back up and reward a *worse* angle. Past that
    point the target logit continues as ``cos(theta) - c`` with ``c`` chosen so that it meets the margin
    curve at the switch point: continuous and strictly decreasing in theta over [0, pi] (insightface's
    ArcFace fallback, ``cos(theta) - m sin(m)``, has the same shape but a small jump). ``easy_margin=True``
    instead applies the margin only where ``cos(theta) > 0`` (the ArcFace paper's "easy margin").
    """

    head_type = "combined"

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        s: float = 64.0,
        m1: float = 1.0,
        m2: float = 0.5,
        m3: float = 0.0,
        easy_margin: bool = False,
    ) -> None:
        super().__init__(embedding_size, num_classes, s)
        for name, value in (("m1", m1), ("m2", m2), ("m3", m3)):
            if not math.isfinite(value):
                raise ValueError(f"margin {name} must be finite, got {value!r}.")
        if m1 <= 0:
            raise ValueError(f"m1 (multiplicative angular margin) must be > 0, got {m1!r}.")
        if not 0 <= m2 < math.pi:
            raise ValueError(f"m2 (additive angular margin) must be in [0, pi), got {m2!r}.")
        self.m1, self.m2, self.m3 = float(m1), float(m2), float(m3)
        self.easy_margin = bool(easy_margin)
        # theta at which m1 * theta + m2 reaches pi; beyond it the monotone fallback takes over.
        self._theta_switch = min(math.pi, (math.pi - self.m2) / self.m1)
        self._fallback_shift = math.cos(self._theta_switch) - math.cos(self.m1 * self._theta_switch + self.m2)

    def margin_target(self, cos_t: torch.Tensor) -> torch.Tensor:
        """Target-class cosine after the margin (fp32 in, fp32 out)."""
        if self.m1 == 1.0 and self.m2 == 0.0:
            return cos_t - self.m3  # CosFace: no angle needed.
        if self.m1 == 1.0:
            # cos(theta + m) = cos cos m - sin sin m; better conditioned than arccos near |cos| = 1.
            sin_t = (1.0 - cos_t * cos_t).clamp_min(1e-12).sqrt()  # finite grad at |cos| = 1
            with_margin = cos_t * math.cos(self.m2) - sin_t * math.sin(self.m2)
            beyond = cos_t < math.cos(self._theta_switch)
        else:
            theta = torch.acos(cos_t.clamp(-1.0 + _COS_EPS, 1.0 - _COS_EPS))
            with_margin = torch.cos(self.m1 * theta + self.m2)
            beyond = theta > self._theta_switch
        if self.easy_margin:
            out = torch.where(cos_t > 0, with_margin, cos_t)
        else:
            out = torch.where(beyond, cos_t - self._fallback_shift, with_margin)
        return out - self.m3

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, C] in fp32: ``s * cos`` with the margin on each sample's target class (none if
        ``labels`` is None, i.e. plain scaled cosine for inference; none for label -100)."""
        _check_inputs(embeddings, labels, self.embedding_size, self.num_classes)
        cos = self.cosine(embeddings)
        if labels is None:
            return cos * self.s
        labels = labels.long()
        keep = labels != IGNORE_INDEX
        idx = labels.clamp_min(0).unsqueeze(1)
        cos_t = cos.gather(1, idx)
        target = torch.where(keep.unsqueeze(1), self.margin_target(cos_t), cos_t)
        return cos.scatter(1, idx, target) * self.s


class AdaFaceHead(FaceHead):
    """AdaFace (Kim et al., CVPR 2022): the margin adapts to image quality, read from the feature norm.

    The raw (un-normalised) embedding norm is standardised with running batch statistics and scaled by
    ``h`` into ``z`` in [-1, 1]. The target logit is ``s * (cos(theta + g_angle) - g_add)`` with
    ``g_angle = -m z`` and ``g_add = m z + m``. Low-norm (poor) images, ``z -> -1``, get ArcFace's
    ``cos(theta + m)``, which weights easy samples, so unrecognisable images are not forced; high-norm
    (sharp) ones, ``z -> 1``, get ``cos(theta - m) - 2m``, which, like CurricularFace, weights hard samples.
    The norm statistics are buffers (saved with the head), updated with momentum ``t_alpha`` in training.
    """

    head_type = "adaface"

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        s: float = 64.0,
        m: float = 0.4,
        h: float = 0.333,
        t_alpha: float = 0.01,
    ) -> None:
        super().__init__(embedding_size, num_classes, s)
        if not (math.isfinite(m) and 0 <= m < math.pi / 2):
            raise ValueError(f"margin m must be in [0, pi/2), got {m!r}.")
        if not (math.isfinite(h) and h > 0):
            raise ValueError(f"h must be > 0, got {h!r}.")
        if not 0 < t_alpha <= 1:
            raise ValueError(f"t_alpha (momentum of the norm statistics) must be in (0, 1], got {t_alpha!r}.")
        self.m, self.h, self.t_alpha = float(m), float(h), float(t_alpha)
        # AdaFace's initial statistics: a wide prior, so early batches barely move the margin.
        self.register_buffer("batch_mean", torch.tensor(20.0))
        self.register_buffer("batch_std", torch.tensor(100.0))

    def norm_scaler(self, embeddings: torch.Tensor, update: bool | None = None) -> torch.Tensor:
        """``z`` in [-1, 1] per sample from the raw feature norm; updates the running stats in training."""
        norms = embeddings.detach().float().norm(dim=1).clamp(1e-3, 100.0)
        if update is None:
            update = self.training
        if update and norms.numel() > 1:
            with torch.no_grad():
                self.batch_mean.mul_(1 - self.t_alpha).add_(self.t_alpha * norms.mean())
                self.batch_std.mul_(1 - self.t_alpha).add_(self.t_alpha * norms.std())
        z = (norms - self.batch_mean) / (self.batch_std + 1e-3)
        return (z * self.h).clamp(-1.0, 1.0)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, C] in fp32 from RAW embeddings (their norm drives the margin)."""
        _check_inputs(embeddings, labels, self.embedding_size, self.num_classes)
        cos = self.cosine(embeddings)
        if labels is None:
            return cos * self.s
        z = self.norm_scaler(embeddings).unsqueeze(1)
        labels = labels.long()
        keep = (labels != IGNORE_INDEX).unsqueeze(1)
        idx = labels.clamp_min(0).unsqueeze(1)
        cos_t = cos.gather(1, idx)
        theta = torch.acos(cos_t.clamp(-1.0 + _COS_EPS, 1.0 - _COS_EPS))
        theta_m = (theta - self.m * z).clamp(_COS_EPS, math.pi - _COS_EPS)
        target = torch.cos(theta_m) - (self.m + self.m * z)
        target = torch.where(keep, target, cos_t)
        return cos.scatter(1, idx, target) * self.s


@HEADS.register("combined")
def _build_combined(**kwargs: Any) -> CombinedMarginHead:
    return CombinedMarginHead(**kwargs)


@HEADS.register("arcface")
def _build_arcface(embedding_size: int, num_classes: int, s: float = 64.0, m: float = 0.5, **kw: Any):
    """ArcFace: additive angular margin ``cos(theta + m)``."""
    # Saved as "combined" with explicit margins, so the head reloads exactly whatever the preset defaults.
    return CombinedMarginHead(embedding_size, num_classes, s=s, m1=1.0, m2=m, m3=0.0, **kw)


@HEADS.register("cosface")
def _build_cosface(embedding_size: int, num_classes: int, s: float = 64.0, m: float = 0.4, **kw: Any):
    """CosFace: additive cosine margin ``cos(theta) - m``."""
    return CombinedMarginHead(embedding_size, num_classes, s=s, m1=1.0, m2=0.0, m3=m, **kw)


HEADS.register("adaface", AdaFaceHead)


def build_head(name: str, *, embedding_size: int, num_classes: int, **kwargs: Any) -> FaceHead:
    """Build a head by name.

    Args:
        name: ``"arcface"`` (m=0.5), ``"cosface"`` (m=0.4), ``"adaface"``, ``"combined"``, or a name registered in
            :data:`HEADS`.
        embedding_size: the backbone's embedding width.
        num_classes: the number of training identities.
        **kwargs: the head's own settings (scale ``s``, margins).

    Returns:
        The head, with freshly initialised class centres.
    """
    return HEADS.build(name, embedding_size=embedding_size, num_classes=num_classes, **kwargs)


def load_head(load_directory: str | os.PathLike, map_location: str = "cpu") -> FaceHead:
    """Load whichever head type ``save_pretrained`` wrote into ``load_directory``.

    Args:
        load_directory: a folder with ``head_config.json`` and ``head.safetensors``.
        map_location: the device to load the weights onto.

    Returns:
        The head, of the type that was saved.
    """
    return FaceHead.from_pretrained(load_directory, map_location=map_location)
