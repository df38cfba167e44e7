"""dlib's ResNet face descriptor (``dlib_face_recognition_resnet_model_v1.dat``) as a PyTorch module.

dlib's face recognition network (Davis King, 2017; 99.38 % on LFW in dlib's own protocol) is a 29-layer ResNet
on 150x150 RGB face chips that maps a face to a 128-d descriptor; two faces are the same person when their
descriptors are closer than 0.6 (Euclidean). Its weights are in the public domain (CC0 1.0 Universal, as the
``face_recognition_models`` package states). This module reads them with petal-peft's own parser of dlib's format
(:mod:`petal_peft.zoo.dlib_serialization`, no dlib needed) and runs the same network in torch, batched, with
gradients if wanted: a fast teacher for distillation and a reference recogniser.

Network (dlib's ``dnn_face_recognition_ex.cpp``): conv 7x7/2 (32) -> affine -> relu -> max-pool 3x3/2, then
residual units of two 3x3 convs each followed by a per-channel affine (batch norm frozen into scale and shift),
with a relu between them and after the sum; the units that halve the resolution run their first conv with stride
2 and average-pool the shortcut 2x2/2, and where the two sides of a sum differ in size (channels, or 3x3 vs 4x4
pixels at the last stages) dlib adds them as if the smaller were zero-padded at the end. Then the spatial mean
and a 128x256 linear map without bias. Input: RGB values in 0..255 minus a per-channel mean, divided by 256.
Each affine is folded into the conv before it at load time (the same function, one op fewer).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from petal_peft.align.model_files import dlib_model_file
from petal_peft.zoo.dlib_serialization import CONV_MODE, DlibLayer, DlibNetwork, read_dlib_network

__all__ = [
    "DLIB_FACE_MODEL_FILE",
    "DlibFaceResNet",
    "DlibResidualUnit",
    "dlib_face_model_path",
    "load_dlib_face_resnet",
]

DLIB_FACE_MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"


def dlib_face_model_path() -> Path:
    """Path of dlib's face descriptor network (``dlib_face_recognition_resnet_model_v1.dat``)."""
    return dlib_model_file(DLIB_FACE_MODEL_FILE)


def _pad_to(x: torch.Tensor, channels: int, height: int, width: int) -> torch.Tensor:
    dc, dh, dw = channels - x.shape[1], height - x.shape[2], width - x.shape[3]
    return F.pad(x, (0, dw, 0, dh, 0, dc)) if (dc or dh or dw) else x


def add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: the sum of two [B, C, H, W] tensors, the smaller one zero-padded at the end."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))
    return _pad_to(a, c, h, w) + _pad_to(b, c, h, w)


class DlibResidualUnit(nn.Module):
    """relu(conv2(relu(conv1(x))) + shortcut(x)), the shortcut average-pooled 2x2/2 when ``downsample``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, padding: int, downsample: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=padding)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        shortcut = F.avg_pool2d(x, 2, 2) if self.downsample else x
        return F.relu(add_zero_padded(y, shortcut))


@dataclass(frozen=True)
class _UnitSpec:
    in_channels: int
    out_channels: int
    stride: int
    padding: int
    downsample: bool
    convs: tuple[DlibLayer, DlibLayer]
    affines: tuple[DlibLayer, DlibLayer]


class DlibFaceResNet(nn.Module):
    """dlib's face ResNet: ``forward(images)`` maps RGB [B, 3, S, S] in [0, 1] to raw 128-d descriptors.

    ``S`` is the chip size the network was trained on (150). Descriptors are not normalised (dlib's are not
    either: compare them by Euclidean distance, threshold 0.6, or by cosine).
    """

    def __init__(
        self,
        stem_channels: int,
        stem_kernel: int,
        units: list[tuple[int, int, int, int, bool]],
        embedding_dim: int,
        image_size: int = 150,
        channel_means: tuple[float, float, float] = (122.782, 117.001, 104.298),
    ) -> None:
        super().__init__()
        self.image_size = image_size
        self.stem = nn.Conv2d(3, stem_channels, stem_kernel, stride=2, padding=0)
        self.units = nn.ModuleList(DlibResidualUnit(*u) for u in units)
        width = units[-1][1] if units else stem_channels
        self.fc = nn.Linear(width, embedding_dim, bias=False)
        self.register_buffer("channel_means", torch.tensor(channel_means, dtype=torch.float32).view(1, 3, 1, 1))

    @property
    def embedding_dim(self) -> int:
        return self.fc.out_features

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """dlib's input transform: (255 * x - channel mean) / 256."""
        return (images * 255.0 - self.channel_means) / 256.0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be RGB [batch, 3, height, width], got shape {tuple(images.shape)}.")
        x = F.max_pool2d(F.relu(self.stem(self.normalize(images))), 3, 2)
        for unit in self.units:
            x = unit(x)
        return self.fc(x.mean(dim=(2, 3)))


# ------------------------------------------------------------------------------------------------------------
# From a parsed dlib network to the torch module
# ------------------------------------------------------------------------------------------------------------


def _expect(layers: list[DlibLayer], i: int, kind: str, what: str) -> DlibLayer:
    if i >= len(layers) or layers[i].kind != kind:
        found = layers[i].version or layers[i].kind if i < len(layers) else "the end"
        raise ValueError(
            f"not dlib's face ResNet: expected {kind} ({what}) at layer {i} from the input, found {found}."
        )
    return layers[i]


def _folded_conv(conv: DlibLayer, affine: DlibLayer | None) -> tuple[np.ndarray, np.ndarray]:
    """Conv weights [out, in, kh, kw] and bias with the following per-channel affine folded in."""
    weight = conv.arrays["filters"].astype(np.float64)
    bias = conv.arrays.get("biases", np.zeros(weight.shape[0], np.float32)).astype(np.float64)
    if affine is not None and not affine.fields.get("disabled", False):
        if affine.fields.get("mode", CONV_MODE) != CONV_MODE:
            raise ValueError("not dlib's face ResNet: an affine layer after a convolution is not per channel.")
        gamma, beta = affine.arrays["gamma"].astype(np.float64), affine.arrays["beta"].astype(np.float64)
        if gamma.shape != bias.shape:
            raise ValueError(f"affine of {gamma.shape[0]} channels after a conv of {bias.shape[0]} filters.")
        weight, bias = weight * gamma[:, None, None, None], bias * gamma + beta
    return weight.astype(np.float32), bias.astype(np.float32)


def _affine_layer(layer: DlibLayer) -> DlibLayer:
    """An ``affine`` layer, or a batch-norm layer frozen into one (as dlib does when it loads bn into affine)."""
    if layer.kind == "bn":
        a = layer.arrays
        gamma = a["gamma"] / np.sqrt(a["running_variances"] + layer.fields["eps"])
        return DlibLayer(
            "affine",
            layer.version,
            {"mode": layer.fields["mode"]},
            {
                "gamma": gamma.astype(np.float32),
                "beta": (a["beta"] - gamma * a["running_means"]).astype(np.float32),
            },
        )
    return layer


def _parse_face_resnet(net: DlibNetwork) -> tuple[DlibLayer, DlibLayer, list[_UnitSpec], DlibLayer, DlibLayer]:
    """Walk the layers bottom-up and recognise stem, residual units and head; raise if anything else is there."""
    layers = [_affine_layer(layer) for layer in reversed(net.layers)]  # input first
    _expect(layers, 0, "input_rgb_image", "the input layer")
    stem = _expect(layers, 1, "con", "the stem convolution")
    stem_affine = _expect(layers, 2, "affine", "the stem's affine")
    _expect(layers, 3, "relu", "the stem's relu")
    pool = _expect(layers, 4, "max_pool", "the stem's max pooling")
    if (stem.fields["stride_y"], stem.fields["padding_y"]) != (2, 0) or stem.fields["nr"] != stem.fields["nc"]:
        raise ValueError(f"not dlib's face ResNet: the stem convolution is {stem.fields}.")
    if (pool.fields["nr"], pool.fields["stride_y"], pool.fields["padding_y"]) != (3, 2, 0):
        raise ValueError(f"not dlib's face ResNet: the stem pooling is {pool.fields}.")
    i, channels, units = 5, stem.fields["num_filters"], []
    while i < len(layers) and layers[i].kind == "tag_or_skip":
        start = i
        conv1 = _expect(layers, i + 1, "con", "a unit's first convolution")
        affine1 = _expect(layers, i + 2, "affine", "a unit's first affine")
        _expect(layers, i + 3, "relu", "a unit's inner relu")
        conv2 = _expect(layers, i + 4, "con", "a unit's second convolution")
        affine2 = _expect(layers, i + 5, "affine", "a unit's second affine")
        i += 6
        downsample = layers[i].kind == "tag_or_skip"
        if downsample:  # tag2, skip1, avg_pool 2x2/2 of the unit's input
            _expect(layers, i + 1, "tag_or_skip", "the shortcut's skip")
            p = _expect(layers, i + 2, "avg_pool", "the shortcut's pooling")
            if (p.fields["nr"], p.fields["nc"], p.fields["stride_y"], p.fields["stride_x"]) != (2, 2, 2, 2):
                raise ValueError(f"not dlib's face ResNet: shortcut pooling {p.fields} (layer {i + 2}).")
            i += 3
        _expect(layers, i, "add_prev", "the residual sum")
        _expect(layers, i + 1, "relu", "the unit's output relu")
        i += 2
        stride = conv1.fields["stride_y"]
        if stride != (2 if downsample else 1) or conv2.fields["stride_y"] != 1 or conv2.fields["padding_y"] != 1:
            raise ValueError(f"not dlib's face ResNet: unit at layer {start} has convolutions {conv1.fields}.")
        out = conv1.fields["num_filters"]
        units.append(
            _UnitSpec(channels, out, stride, conv1.fields["padding_y"], downsample, (conv1, conv2), (affine1, affine2))
        )
        channels = out
    head_pool = _expect(layers, i, "avg_pool", "the global average pooling")
    if head_pool.fields["nr"] != 0 or head_pool.fields["nc"] != 0:
        raise ValueError(f"not dlib's face ResNet: the head pooling is {head_pool.fields}, not over everything.")
    fc = _expect(layers, i + 1, "fc", "the descriptor projection")
    _expect(layers, i + 2, "loss_metric", "the metric loss")
    if i + 3 != len(layers):
        raise ValueError(f"not dlib's face ResNet: {len(layers) - i - 3} layer(s) above the loss.")
    if fc.fields["use_bias"] or fc.fields["num_inputs"] != channels:
        raise ValueError(f"not dlib's face ResNet: the projection is {fc.fields} after {channels} channels.")
    return stem, stem_affine, units, fc, layers[0]


def face_resnet_from_dlib(net: DlibNetwork) -> DlibFaceResNet:
    """Build a :class:`DlibFaceResNet` from a parsed network and load its weights (affines folded into convs)."""
    stem, stem_affine, units, fc, input_layer = _parse_face_resnet(net)
    f = input_layer.fields
    model = DlibFaceResNet(
        stem_channels=stem.fields["num_filters"],
        stem_kernel=stem.fields["nr"],
        units=[(u.in_channels, u.out_channels, u.stride, u.padding, u.downsample) for u in units],
        embedding_dim=fc.fields["num_outputs"],
        image_size=int(f.get("nr", 150)),
        channel_means=(f["avg_red"], f["avg_green"], f["avg_blue"]),
    )
    state = {}
    state["stem.weight"], state["stem.bias"] = _folded_conv(stem, stem_affine)
    for k, u in enumerate(units):
        for j, (conv, affine) in enumerate(zip(u.convs, u.affines), start=1):
            state[f"units.{k}.conv{j}.weight"], state[f"units.{k}.conv{j}.bias"] = _folded_conv(conv, affine)
    state["fc.weight"] = fc.arrays["weights"].T
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
    tensors["channel_means"] = model.channel_means
    model.load_state_dict(tensors, strict=True)
    return model.eval()


def load_dlib_face_resnet(path: str | os.PathLike | None = None) -> DlibFaceResNet:
    """dlib's face descriptor network from ``path`` (default: the installed ``face_recognition_models`` file).

    Needs no dlib: the file is parsed in Python. The model is returned in eval mode, on CPU, in float32.
    """
    return face_resnet_from_dlib(read_dlib_network(dlib_face_model_path() if path is None else path))
