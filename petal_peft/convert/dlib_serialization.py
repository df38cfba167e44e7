"""A reader for dlib's binary serialization of deep networks (``*.dat`` files written by ``dlib::serialize``).

Written from dlib's format as its sources define it, so reading a network needs neither dlib nor a C++ compiler:

- integers: one control byte (low 4 bits: how many value bytes follow, bit 0x80: negative), then the magnitude's
  bytes, least significant first;
- floating point numbers: a 64-bit integer mantissa and a 16-bit integer exponent (value = mantissa * 2**exponent;
  exponents 32000 / 32001 / 32002 stand for +inf / -inf / NaN), both as integers above;
- ``bool``: the character ``'1'`` or ``'0'``; strings: their length, then the bytes;
- tensors: version 2, four dimensions (num_samples, k, nr, nc), then little-endian IEEE float32 values;
  tensor views (``alias_tensor``): version 1 and the four dimensions only.

A network is ``add_loss_layer(version, loss details, subnetwork)``; each computational layer is
``add_layer(version, subnetwork, details, state...)``, so the subnetwork comes first and the layers' details
appear bottom-up after the input layer. ``tag`` and ``skip`` layers write only a version number (their ids live in
the C++ type, not in the file). :func:`read_dlib_network` therefore returns the layers in dlib's own top-down
numbering (``layer<0>`` is the loss, as ``print(net)`` in dlib shows) with each tag/skip as a ``"tag_or_skip"``
entry; whoever builds a model from it knows which ids they carry.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DlibFormatError", "DlibLayer", "DlibNetwork", "DlibReader", "read_dlib_network"]

_FLOAT_INF, _FLOAT_NINF, _FLOAT_NAN = 32000, 32001, 32002
#: dlib's ``layer_mode`` (affine / batch-norm layers: per channel or per value) and ``fc_bias_mode``
CONV_MODE, FC_MODE = 0, 1
FC_HAS_BIAS, FC_NO_BIAS = 0, 1


class DlibFormatError(ValueError):
    """The bytes are not a dlib network this reader understands; the message names the offset and what was read."""


@dataclass
class DlibLayer:
    """One layer: ``kind`` (``"con"``, ``"affine"``, ``"relu"``, ...), the version tag dlib wrote (``"con_4"``),
    its scalar fields and its parameter arrays (float32, already reshaped: e.g. ``filters`` [out, in, kh, kw])."""

    kind: str
    version: str
    fields: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in self.arrays.items())
        return f"DlibLayer({self.version}, {self.fields}{', ' + shapes if shapes else ''})"


@dataclass
class DlibNetwork:
    """A parsed network: ``layers[0]`` is the loss and ``layers[-1]`` the input layer (dlib's numbering)."""

    layers: list[DlibLayer]

    @property
    def loss(self) -> DlibLayer:
        return self.layers[0]

    @property
    def input(self) -> DlibLayer:
        return self.layers[-1]

    def kinds(self) -> list[str]:
        return [layer.kind for layer in self.layers]


class DlibReader:
    """Primitive readers over a bytes buffer; every error names the byte offset."""

    def __init__(self, data: bytes, source: str = "<bytes>") -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.source = source

    def error(self, message: str) -> DlibFormatError:
        return DlibFormatError(f"{self.source}: at byte {self.pos}: {message}")

    def _take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise self.error(f"the data ends early (wanted {n} more byte(s), {len(self.data) - self.pos} left).")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def peek_int(self) -> int:
        start = self.pos
        try:
            return self.int()
        finally:
            self.pos = start

    def int(self) -> int:
        control = self._take(1)[0]
        if control & 0x70:
            raise self.error(f"byte 0x{control:02x} is not an integer control byte.")
        size = control & 0x0F
        if not 1 <= size <= 8:
            raise self.error(f"an integer cannot have {size} value bytes.")
        value = int.from_bytes(self._take(size), "little")
        return -value if control & 0x80 else value

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        if exponent == _FLOAT_INF:
            return float("inf")
        if exponent == _FLOAT_NINF:
            return float("-inf")
        if exponent == _FLOAT_NAN:
            return float("nan")
        return float(np.ldexp(np.float64(mantissa), exponent))

    def bool(self) -> bool:
        ch = bytes(self._take(1))
        if ch not in (b"0", b"1"):
            raise self.error(f"expected a bool ('0' or '1'), got {ch!r}.")
        return ch == b"1"

    def string(self, max_length: int = 1 << 16) -> str:
        n = self.int()
        if not 0 <= n <= max_length:
            raise self.error(f"a string of length {n} is implausible here.")
        try:
            return bytes(self._take(n)).decode("ascii")
        except UnicodeDecodeError:
            raise self.error("a layer name is not ASCII text.") from None

    def tensor(self) -> np.ndarray:
        """A ``resizable_tensor``: [num_samples, k, nr, nc] float32 (version 1 stored each value as a dlib float)."""
        version = self.int()
        if version not in (1, 2):
            raise self.error(f"unknown tensor version {version}.")
        shape = tuple(self.int() for _ in range(4))
        if any(d < 0 for d in shape):
            raise self.error(f"negative tensor dimensions {shape}.")
        count = int(np.prod(shape))
        if version == 2:
            values = np.frombuffer(self._take(4 * count), dtype="<f4").astype(np.float32)
        else:
            values = np.array([self.float() for _ in range(count)], dtype=np.float32)
        return values.reshape(shape)

    def alias_tensor(self) -> tuple[int, int, int, int]:
        version = self.int()
        if version != 1:
            raise self.error(f"unknown alias_tensor version {version}.")
        return tuple(self.int() for _ in range(4))  # type: ignore[return-value]

    def version_tag(self) -> str:
        return self.string(max_length=64)


def _split_params(reader: DlibReader, params: np.ndarray, views: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Cut a layer's flat parameter tensor into its named views (consecutive, in the given order)."""
    flat = params.reshape(-1)
    out, offset = {}, 0
    for name, shape in views.items():
        n = int(np.prod(shape))
        if n == 0:
            continue
        if offset + n > flat.size:
            raise reader.error(f"{name} {list(shape)} does not fit in a parameter tensor of {flat.size} values.")
        out[name] = flat[offset : offset + n].reshape(shape).copy()
        offset += n
    if offset != flat.size:
        raise reader.error(f"the parameter tensor holds {flat.size} values, its views use {offset}.")
    return out


def _read_con(r: DlibReader, version: str) -> DlibLayer:
    if version not in ("con_4", "con_5", "con_6"):
        raise r.error(f"unsupported convolution version {version!r}.")
    params = r.tensor()
    f = {
        "num_filters": r.int(),
        "nr": r.int(),
        "nc": r.int(),
        "stride_y": r.int(),
        "stride_x": r.int(),
        "padding_y": r.int(),
        "padding_x": r.int(),
    }
    filters, biases = r.alias_tensor(), r.alias_tensor()
    for name in ("learning_rate_multiplier", "weight_decay_multiplier"):
        f[name] = r.float()
    for name in ("bias_learning_rate_multiplier", "bias_weight_decay_multiplier"):
        f[name] = r.float()
    f["use_bias"] = r.bool() if version in ("con_5", "con_6") else True
    f["use_relu"] = r.bool() if version == "con_6" else False
    views = {"filters": filters, "biases": (biases[1],) if f["use_bias"] else (0,)}
    return DlibLayer("con", version, f, _split_params(r, params, views))


def _read_fc(r: DlibReader, version: str) -> DlibLayer:
    if version not in ("fc_2", "fc_3"):
        raise r.error(f"unsupported fully connected version {version!r}.")
    f = {"num_outputs": r.int(), "num_inputs": r.int()}
    params = r.tensor()
    weights, biases = r.alias_tensor(), r.alias_tensor()
    f["bias_mode"] = r.int()
    for name in (
        "learning_rate_multiplier",
        "weight_decay_multiplier",
        "bias_learning_rate_multiplier",
        "bias_weight_decay_multiplier",
    ):
        f[name] = r.float()
    f["use_bias"] = r.bool() if version == "fc_3" else f["bias_mode"] == FC_HAS_BIAS
    # dlib multiplies [samples, inputs] by weights [inputs, outputs]; a bias row follows when there is one
    views = {"weights": (weights[0], weights[1]), "biases": (biases[1],) if biases[0] * biases[1] else (0,)}
    return DlibLayer("fc", version, f, _split_params(r, params, views))


def _read_affine(r: DlibReader, version: str) -> DlibLayer:
    params = r.tensor()
    gamma, beta = r.alias_tensor(), r.alias_tensor()
    f = {"mode": r.int()}
    f["disabled"] = r.bool() if version == "affine_2" else False
    views = {"gamma": (int(np.prod(gamma)),), "beta": (int(np.prod(beta)),)}
    return DlibLayer("affine", version, f, _split_params(r, params, views))


def _read_bn(r: DlibReader, version: str) -> DlibLayer:
    params = r.tensor()
    gamma, beta = r.alias_tensor(), r.alias_tensor()
    stats = {name: r.tensor().reshape(-1) for name in ("means", "invstds", "running_means", "running_variances")}
    f = {"num_updates": r.int(), "running_stats_window_size": r.int()}
    for name in (
        "learning_rate_multiplier",
        "weight_decay_multiplier",
        "bias_learning_rate_multiplier",
        "bias_weight_decay_multiplier",
        "eps",
    ):
        f[name] = r.float()
    f["mode"] = CONV_MODE if version == "bn_con2" else FC_MODE
    arrays = _split_params(r, params, {"gamma": (int(np.prod(gamma)),), "beta": (int(np.prod(beta)),)})
    arrays.update(running_means=stats["running_means"], running_variances=stats["running_variances"])
    return DlibLayer("bn", version, f, arrays)


def _read_pool(kind: str):
    def read(r: DlibReader, version: str) -> DlibLayer:
        if version != f"{kind}_2":
            raise r.error(f"unsupported {kind} version {version!r}.")
        names = ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
        return DlibLayer(kind, version, {name: r.int() for name in names})

    return read


def _read_relu(r: DlibReader, version: str) -> DlibLayer:
    return DlibLayer("relu", version, {"disabled": r.bool() if version == "relu_2" else False})


def _read_input_rgb(r: DlibReader, version: str) -> DlibLayer:
    f = {"avg_red": r.float(), "avg_green": r.float(), "avg_blue": r.float()}
    if version == "input_rgb_image_sized":
        f["nr"], f["nc"] = r.int(), r.int()
    return DlibLayer("input_rgb_image", version, f)


def _read_loss_metric(r: DlibReader, version: str) -> DlibLayer:
    if version == "loss_metric_":  # older files: the values were fixed
        return DlibLayer("loss_metric", version, {"margin": 0.1, "distance_threshold": 0.75})
    return DlibLayer("loss_metric", version, {"margin": r.float(), "distance_threshold": r.float()})


#: version tag -> reader of the layer details that follow it
LAYER_READERS = {
    **{v: _read_con for v in ("con_4", "con_5", "con_6")},
    **{v: _read_fc for v in ("fc_2", "fc_3")},
    **{v: _read_affine for v in ("affine_", "affine_2")},
    **{v: _read_bn for v in ("bn_con2", "bn_fc2")},
    "max_pool_2": _read_pool("max_pool"),
    "avg_pool_2": _read_pool("avg_pool"),
    "relu_": _read_relu,
    "relu_2": _read_relu,
    "add_prev_": lambda r, v: DlibLayer("add_prev", v),
    **{v: _read_input_rgb for v in ("input_rgb_image", "input_rgb_image_sized")},
    **{v: _read_loss_metric for v in ("loss_metric_", "loss_metric_2")},
}


def _read_layer_details(r: DlibReader) -> DlibLayer:
    at = r.pos
    version = r.version_tag()
    reader = LAYER_READERS.get(version)
    if reader is None:
        r.pos = at
        raise r.error(f"unsupported layer type {version!r} (supported: {sorted(LAYER_READERS)}).")
    return reader(r, version)


def _looks_like_layer_name(r: DlibReader) -> bool:
    """Whether a length-prefixed ASCII name of a known layer starts here (and not another wrapper version)."""
    start = r.pos
    try:
        return r.version_tag() in LAYER_READERS
    except DlibFormatError:
        return False
    finally:
        r.pos = start


def read_dlib_network(source: str | os.PathLike | bytes) -> DlibNetwork:
    """Parse a serialized dlib network (a ``loss(...)`` over add/tag/skip layers down to an input layer).

    Raises :class:`DlibFormatError` naming the offset when the data is not such a network, or uses a layer type
    this reader does not know.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        r = DlibReader(bytes(source))
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such dlib network file.")
        r = DlibReader(path.read_bytes(), source=str(path))
    try:
        version = r.int()
        loss = _read_layer_details(r) if version == 1 else None
    except DlibFormatError as err:
        raise DlibFormatError(f"{r.source}: not a dlib network (it does not start with a loss layer): {err}") from None
    if loss is None:
        raise r.error(f"not a dlib network: expected add_loss_layer version 1, found the integer {version}.")
    if loss.kind != "loss_metric":
        raise r.error(f"the top layer is {loss.version!r}, not a loss layer.")
    # Wrapper versions top-down: add_layer 2 (the bottom one, over the input layer: 2-3), tag/skip 1. The input
    # layer's name follows the last one. (add_layer version 1, from 2016, would be indistinguishable from a tag.)
    wrappers: list[int] = []
    while not (wrappers and _looks_like_layer_name(r)):
        v = r.int()
        if v not in (1, 2, 3):
            raise r.error(f"expected a layer version (1-3), found {v}.")
        wrappers.append(v)
        if len(wrappers) > 100_000:
            raise r.error("no input layer found.")
    input_version = wrappers.pop()
    if input_version not in (2, 3):
        raise r.error(f"the bottom add_layer has version {input_version}; this reader knows 2 and 3.")
    input_layer = _read_layer_details(r)
    if input_layer.kind != "input_rgb_image":
        raise r.error(f"the bottom layer is {input_layer.version!r}, not an input layer.")
    # The bottom add_layer holds the input layer and the first computational layer, then its state.
    bottom_up = [_read_layer_details(r)]
    _read_layer_state(r, bottom=True, version=input_version)
    # Details of the remaining add_layers, bottom-up; tag/skip wrappers (version 1) write nothing after.
    for v in reversed(wrappers):
        if v == 1:
            bottom_up.append(DlibLayer("tag_or_skip", ""))
            continue
        layer = _read_layer_details(r)
        _read_layer_state(r, bottom=False, version=v)
        bottom_up.append(layer)
    if r.pos != len(r.data):
        raise r.error(f"{len(r.data) - r.pos} unread byte(s) after the network.")
    return DlibNetwork([loss, *reversed(bottom_up), input_layer])


def _read_layer_state(r: DlibReader, bottom: bool, version: int) -> None:
    """Skip what add_layer stores besides its details: three flags and its cached (training-time) tensors."""
    for _ in range(3):  # this_layer_setup_called, gradient_input_is_stale, get_output_and_gradient_input_disabled
        r.bool()
    r.tensor()  # x_grad
    r.tensor()  # cached_output
    if bottom:
        r.tensor()  # grad_final
        if version >= 3:
            r.int()  # sample_expansion_factor
    elif version >= 2:
        r.tensor()  # params_grad
