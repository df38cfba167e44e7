"""dlib's face descriptor file (``dlib_face_recognition_resnet_model_v1.dat``) -> :class:`DlibFaceResNet`.

The file is read with petal-peft's own parser of dlib's format (:mod:`petal_peft.convert.dlib_serialization`, no
dlib needed); the layers are checked to be dlib's face ResNet and each affine (batch norm frozen) is folded into
the convolution before it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from petal_peft.align.model_files import dlib_model_file
from petal_peft.convert.dlib_serialization import CONV_MODE, DlibLayer, DlibNetwork, read_dlib_network
from petal_peft.models.dlib_resnet.modeling_dlib_resnet import DlibFaceResNet

__all__ = ["DLIB_FACE_MODEL_FILE", "dlib_face_model_path", "face_resnet_from_dlib", "load_dlib_face_resnet"]

DLIB_FACE_MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"


def dlib_face_model_path() -> Path:
    """Path of dlib's face descriptor network (``dlib_face_recognition_resnet_model_v1.dat``)."""
    return dlib_model_file(DLIB_FACE_MODEL_FILE)


@dataclass(frozen=True)
class _UnitSpec:
    in_channels: int
    out_channels: int
    stride: int
    padding: int
    downsample: bool
    convs: tuple[DlibLayer, DlibLayer]
    affines: tuple[DlibLayer, DlibLayer]


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
