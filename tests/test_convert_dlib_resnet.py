"""dlib's serialization format read in Python, and dlib's face ResNet rebuilt in torch.

A tiny network of the same family is written here in dlib's format (so no dlib is needed) and checked against a
direct computation from the written arrays; where dlib and real faces are at hand, the real network's descriptors
are compared with dlib's own.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from testing_utils import FACES, needs_dlib, needs_faces

from petal_peft.convert.dlib_resnet import face_resnet_from_dlib, load_dlib_face_resnet
from petal_peft.convert.dlib_serialization import DlibFormatError, DlibReader, read_dlib_network

# ------------------------------------------------------------------------------------------------------------
# A writer of dlib's format, following dlib's serialize.h / tensor.h / layers.h / core.h
# ------------------------------------------------------------------------------------------------------------


def w_int(v: int) -> bytes:
    mag, neg = abs(v), v < 0
    body = b""
    while True:
        body += bytes([mag & 0xFF])
        mag >>= 8
        if mag == 0:
            break
    return bytes([len(body) | (0x80 if neg else 0)]) + body


def w_float(v: float) -> bytes:
    if math.isinf(v):
        return w_int(0) + w_int(32000 if v > 0 else 32001)
    if math.isnan(v):
        return w_int(0) + w_int(32002)
    m, e = math.frexp(v)
    mantissa, exponent = int(m * (1 << 53)), e - 53
    while mantissa and mantissa & 0xFF == 0:
        mantissa, exponent = mantissa >> 8, exponent + 8
    return w_int(mantissa) + w_int(exponent)


def w_bool(v: bool) -> bytes:
    return b"1" if v else b"0"


def w_str(s: str) -> bytes:
    return w_int(len(s)) + s.encode()


def w_tensor(a: np.ndarray) -> bytes:
    shape = [1, 1, 1, 1] if a.size else [0, 0, 0, 0]
    shape[4 - a.ndim :] = a.shape if a.size else shape[4 - a.ndim :]
    return w_int(2) + b"".join(w_int(d) for d in shape) + np.asarray(a, "<f4").tobytes()


def w_alias(*dims: int) -> bytes:
    return w_int(1) + b"".join(w_int(d) for d in dims)


def w_con(weight: np.ndarray, bias: np.ndarray, stride: int, padding: int) -> bytes:
    out, cin, kh, kw = weight.shape
    params = np.concatenate([weight.ravel(), bias.ravel()])
    return (
        w_str("con_4")
        + w_tensor(params)
        + w_int(out)
        + w_int(kh)
        + w_int(kw)
        + w_int(stride)
        + w_int(stride)
        + w_int(padding)
        + w_int(padding)
        + w_alias(out, cin, kh, kw)
        + w_alias(1, out, 1, 1)
        + w_float(1.0)
        + w_float(1.0)
        + w_float(1.0)
        + w_float(0.0)
    )


def w_affine(gamma: np.ndarray, beta: np.ndarray) -> bytes:
    n = len(gamma)
    return w_str("affine_2") + w_tensor(np.concatenate([gamma, beta])) + w_alias(1, n, 1, 1) * 2 + w_int(0) + w_bool(0)


def w_bn_con(gamma, beta, mean, var, eps) -> bytes:
    n = len(gamma)
    empty = np.zeros(0, np.float32)
    return (
        w_str("bn_con2")
        + w_tensor(np.concatenate([gamma, beta]))
        + w_alias(1, n, 1, 1) * 2
        + w_tensor(empty)
        + w_tensor(empty)
        + w_tensor(mean.reshape(1, n, 1, 1))
        + w_tensor(var.reshape(1, n, 1, 1))
        + w_int(7)
        + w_int(100)
        + w_float(1.0)
        + w_float(1.0)
        + w_float(1.0)
        + w_float(0.0)
        + w_float(eps)
    )


def w_pool(kind: str, n: int, stride: int) -> bytes:
    return w_str(f"{kind}_2") + w_int(n) + w_int(n) + w_int(stride) + w_int(stride) + w_int(0) + w_int(0)


def w_fc(weights: np.ndarray) -> bytes:  # weights [inputs, outputs], no bias
    return (
        w_str("fc_2")
        + w_int(weights.shape[1])
        + w_int(weights.shape[0])
        + w_tensor(weights)
        + w_alias(*weights.shape, 1, 1)
        + w_alias(0, 0, 0, 0)
        + w_int(1)
        + w_float(1.0)
        + w_float(1.0)
        + w_float(1.0)
        + w_float(0.0)
    )


def layer_state(bottom: bool) -> bytes:
    empty = w_tensor(np.zeros(0, np.float32))
    return w_bool(1) + w_bool(0) + w_bool(0) + empty * 3 + (w_int(1) if bottom else b"")


def write_network(top_down: list[bytes | None], input_details: bytes) -> bytes:
    """``top_down``: each layer's details from the one under the loss to the bottom computational layer, ``None``
    for a tag/skip; writes add_loss_layer -> nested add/tag/skip layers -> the input layer."""
    loss = w_str("loss_metric_2") + w_float(0.04) + w_float(0.6)
    wrappers = b"".join(w_int(1 if d is None else 2) for d in top_down[:-1]) + w_int(3)
    body = input_details + top_down[-1] + layer_state(bottom=True)
    for details in reversed(top_down[:-1]):
        body += b"" if details is None else details + layer_state(bottom=False)
    return w_int(1) + loss + wrappers + body


def tiny_layers(rng: np.random.Generator, bn_in_second_unit: bool = True) -> tuple[list, bytes, dict]:
    """Stem 7x7/2 (4) + max-pool, a unit 4->4, a downsampling unit 4->8, mean, fc 8->6; 40x40 input."""

    def conv(o, i, k):
        return rng.normal(0, 0.3, (o, i, k, k)).astype(np.float32), rng.normal(0, 0.1, o).astype(np.float32)

    def aff(n):
        return rng.uniform(0.5, 1.5, n).astype(np.float32), rng.normal(0, 0.1, n).astype(np.float32)

    w = {
        "stem": conv(4, 3, 7),
        "stem_aff": aff(4),
        "u0c1": conv(4, 4, 3),
        "u0a1": aff(4),
        "u0c2": conv(4, 4, 3),
        "u0a2": aff(4),
        "u1c1": conv(8, 4, 3),
        "u1a1": aff(8),
        "u1c2": conv(8, 8, 3),
        "u1a2": aff(8),
        "fc": rng.normal(0, 0.3, (8, 6)).astype(np.float32),
        "means": (120.5, -3.25, 100.0),
    }
    bn_mean, bn_var = rng.normal(0, 0.2, 8).astype(np.float32), rng.uniform(0.5, 2, 8).astype(np.float32)
    w["bn"] = (bn_mean, bn_var)
    u1a2 = w_bn_con(*w["u1a2"], bn_mean, bn_var, 1e-5) if bn_in_second_unit else w_affine(*w["u1a2"])
    top_down = [
        w_fc(w["fc"]),
        w_pool("avg_pool", 0, 1),
        # unit 1 (downsampling): relu, add_prev, avg_pool, skip1, tag2, affine, con, relu, affine, con/2, tag1
        w_str("relu_2") + w_bool(0),
        w_str("add_prev_"),
        w_pool("avg_pool", 2, 2),
        None,
        None,
        u1a2,
        w_con(*w["u1c2"], 1, 1),
        w_str("relu_2") + w_bool(0),
        w_affine(*w["u1a1"]),
        w_con(*w["u1c1"], 2, 0),
        None,
        # unit 0: relu, add_prev, affine, con, relu, affine, con, tag1
        w_str("relu_2") + w_bool(0),
        w_str("add_prev_"),
        w_affine(*w["u0a2"]),
        w_con(*w["u0c2"], 1, 1),
        w_str("relu_"),
        w_affine(*w["u0a1"]),
        w_con(*w["u0c1"], 1, 1),
        None,
        # stem
        w_pool("max_pool", 3, 2),
        w_str("relu_2") + w_bool(0),
        w_affine(*w["stem_aff"]),
        w_con(*w["stem"], 2, 0),
    ]
    input_details = w_str("input_rgb_image_sized") + b"".join(w_float(m) for m in w["means"]) + w_int(40) + w_int(40)
    return top_down, input_details, w


def tiny_face_resnet(rng: np.random.Generator, bn_in_second_unit: bool = True) -> tuple[bytes, dict]:
    top_down, input_details, w = tiny_layers(rng, bn_in_second_unit)
    return write_network(top_down, input_details), w


def reference_forward(w: dict, images: torch.Tensor, bn: bool = True) -> torch.Tensor:
    """The tiny network computed step by step from the written arrays (affines applied after each conv)."""
    t = {k: tuple(torch.from_numpy(np.asarray(a)) for a in v) if isinstance(v, tuple) else v for k, v in w.items()}

    def conv_aff(x, c, a, stride, pad):
        y = F.conv2d(x, c[0], c[1], stride=stride, padding=pad)
        return y * a[0].view(1, -1, 1, 1) + a[1].view(1, -1, 1, 1)

    means = torch.tensor(w["means"], dtype=torch.float32).view(1, 3, 1, 1)
    x = (images * 255 - means) / 256
    x = F.max_pool2d(torch.relu(conv_aff(x, t["stem"], t["stem_aff"], 2, 0)), 3, 2)
    x = torch.relu(conv_aff(torch.relu(conv_aff(x, t["u0c1"], t["u0a1"], 1, 1)), t["u0c2"], t["u0a2"], 1, 1) + x)
    a2 = t["u1a2"]
    if bn:
        mean, var = t["bn"]
        scale = a2[0] / torch.sqrt(var + 1e-5)
        a2 = (scale, a2[1] - scale * mean)
    y = conv_aff(torch.relu(conv_aff(x, t["u1c1"], t["u1a1"], 2, 0)), t["u1c2"], a2, 1, 1)
    s = F.avg_pool2d(x, 2, 2)
    padded = torch.zeros(y.shape[0], 8, max(y.shape[2], s.shape[2]), max(y.shape[3], s.shape[3]))
    padded[:, : y.shape[1], : y.shape[2], : y.shape[3]] += y
    padded[:, : s.shape[1], : s.shape[2], : s.shape[3]] += s
    x = torch.relu(padded)
    return x.mean(dim=(2, 3)) @ torch.from_numpy(w["fc"])


# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 1, -1, 127, 255, 256, -70000, 2**40 + 3, -(2**62)])
def test_integers_round_trip(value):
    assert DlibReader(w_int(value)).int() == value


@pytest.mark.parametrize("value", [0.0, 1.0, -3.5, 0.1, 122.782, 1e-30, -6.02e23])
def test_floats_round_trip(value):
    assert DlibReader(w_float(value)).float() == value


def test_special_floats_bools_and_strings():
    r = DlibReader(w_float(float("inf")) + w_float(float("-inf")) + w_float(float("nan")) + b"10" + w_str("con_4"))
    assert r.float() == float("inf") and r.float() == float("-inf") and math.isnan(r.float())
    assert r.bool() is True and r.bool() is False and r.string() == "con_4"


def test_known_dlib_bytes():
    # the loss margin 0.04f as dlib_face_recognition_resnet_model_v1.dat stores it: 0xa3d70a * 2**-28
    assert DlibReader(b"\x03\x0a\xd7\xa3\x81\x1c").float() == pytest.approx(0.04, rel=1e-7)
    assert DlibReader(b"\x01\x96").int() == 150


def test_tiny_network_parses_into_dlib_layer_order():
    data, _ = tiny_face_resnet(np.random.default_rng(0))
    net = read_dlib_network(data)
    kinds = net.kinds()
    assert kinds[0] == "loss_metric" and kinds[-1] == "input_rgb_image"
    assert kinds[1:5] == ["fc", "avg_pool", "relu", "add_prev"]
    assert kinds.count("tag_or_skip") == 4 and kinds.count("con") == 5 and kinds.count("bn") == 1
    assert net.loss.fields["distance_threshold"] == pytest.approx(0.6)
    assert net.input.fields == {"avg_red": 120.5, "avg_green": -3.25, "avg_blue": 100.0, "nr": 40, "nc": 40}
    assert net.layers[1].arrays["weights"].shape == (8, 6)


@pytest.mark.parametrize("bn", [True, False])
def test_tiny_network_matches_a_step_by_step_computation(bn):
    rng = np.random.default_rng(1)
    data, w = tiny_face_resnet(rng, bn_in_second_unit=bn)
    model = face_resnet_from_dlib(read_dlib_network(data))
    assert [u.downsample for u in model.units] == [False, True]
    images = torch.rand(3, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(images), reference_forward(w, images, bn=bn), rtol=1e-4, atol=1e-5)


def test_sizes_that_need_zero_padding_in_the_sum():
    # 33 px: the downsampling unit's conv gives 2x2 from 6x6 while the pooled shortcut is 3x3 (40 px: 3x3 vs 4x4)
    data, w = tiny_face_resnet(np.random.default_rng(2))
    model = face_resnet_from_dlib(read_dlib_network(data))
    images = torch.rand(2, 3, 33, 33, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(images), reference_forward(w, images), rtol=1e-4, atol=1e-5)


def test_truncated_and_foreign_data_give_clear_errors(tmp_path):
    data, _ = tiny_face_resnet(np.random.default_rng(0))
    with pytest.raises(DlibFormatError, match="ends early"):
        read_dlib_network(data[:-7])
    with pytest.raises(DlibFormatError, match="unread byte"):
        read_dlib_network(data + b"\x00")
    with pytest.raises(DlibFormatError, match="not a dlib network|version"):
        read_dlib_network(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(FileNotFoundError, match="no such dlib network file"):
        read_dlib_network(tmp_path / "missing.dat")
    other = data.replace(b"\x05con_4", b"\x05xon_4", 1)
    with pytest.raises(DlibFormatError, match="unsupported layer type 'xon_4'"):
        read_dlib_network(other)


def test_a_network_of_another_shape_is_refused():
    top_down, input_details, _ = tiny_layers(np.random.default_rng(0))
    without_stem_relu = top_down[:-3] + top_down[-2:]
    with pytest.raises(ValueError, match="expected relu .the stem's relu. at layer 3"):
        face_resnet_from_dlib(read_dlib_network(write_network(without_stem_relu, input_details)))
    with pytest.raises(DlibFormatError, match="not a loss layer"):
        read_dlib_network(w_int(1) + w_str("relu_2") + w_bool(0))


# ------------------------------------------------------------------------------------------------------------
# The real network against dlib on real faces
# ------------------------------------------------------------------------------------------------------------


@needs_dlib
@needs_faces
def test_torch_port_equals_dlib_on_real_face_chips():
    import dlib
    from PIL import Image

    from petal_peft.align.model_files import dlib_model_file
    from petal_peft.convert.dlib_resnet import dlib_face_model_path

    files = sorted((FACES / "lfw").glob("*/*.jpg"))[:400:100]
    detector = dlib.get_frontal_face_detector()
    landmarks = dlib.shape_predictor(str(dlib_model_file("shape_predictor_5_face_landmarks.dat")))
    recogniser = dlib.face_recognition_model_v1(str(dlib_face_model_path()))
    chips = []
    for f in files:
        img = np.asarray(Image.open(f).convert("RGB"))
        boxes = detector(img, 1)
        box = boxes[0] if len(boxes) else dlib.rectangle(0, 0, img.shape[1] - 1, img.shape[0] - 1)
        chips.append(dlib.get_face_chip(img, landmarks(img, box), size=150, padding=0.25))
    expected = np.stack([np.asarray(recogniser.compute_face_descriptor(c)) for c in chips])
    model = load_dlib_face_resnet()
    with torch.no_grad():
        got = model(torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float() / 255).numpy()
    assert np.abs(got - expected).max() < 1e-4
