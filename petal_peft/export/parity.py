"""Does the exported graph compute what PyTorch computes? Inputs to compare on, onnxruntime sessions, the measure.

The measure is ``max |onnx - torch| / max |torch|`` per output: a relative error that stays meaningful for
embedding entries near zero (an element-wise ratio would not). Inputs are random normal images (every pixel
independent, the hard case for windowed attention and patch boundaries) and smooth "real-looking" images
(a few low-frequency blobs and a shading gradient, in the model's normalisation), with per-image qualities
mixed in one batch, 0 and 1 included, so that a graph that ignored or mixed up ``quality`` would fail.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .requirements import require_onnxruntime

#: the tolerance the export check and the tests hold the ONNX graphs to
DEFAULT_TOLERANCE = 1e-4


def smooth_images(
    batch: int,
    size: tuple[int, int],
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
    seed: int = 0,
) -> torch.Tensor:
    """Smooth colour images [batch, 3, H, W], normalised like the model's input (no face data involved).

    Each is a random 4x4 colour field upsampled bicubically to the full size, plus a linear shading ramp:
    piecewise smooth like a photograph, intensities in [0, 1] before normalisation.
    """
    generator = torch.Generator().manual_seed(seed)
    height, width = size
    coarse = torch.rand(batch, 3, 4, 4, generator=generator)
    field = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)
    ramp_y = torch.linspace(0, 1, height).view(1, 1, height, 1)
    ramp_x = torch.linspace(0, 1, width).view(1, 1, 1, width)
    weights = torch.rand(batch, 2, 1, 1, 1, generator=generator) * 0.4 - 0.2
    intensity = (field + weights[:, 0] * ramp_y + weights[:, 1] * ramp_x).clamp(0.0, 1.0)
    mean_t = torch.tensor(list(mean) * (3 if len(mean) == 1 else 1), dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(list(std) * (3 if len(std) == 1 else 1), dtype=torch.float32).view(1, 3, 1, 1)
    return (intensity - mean_t) / std_t


def random_images(batch: int, size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """Independent standard-normal pixels [batch, 3, H, W]."""
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


def mixed_qualities(batch: int, seed: int = 0) -> torch.Tensor:
    """Per-image qualities in [0, 1], shuffled, with 0 and 1 among them when batch >= 2."""
    values = torch.linspace(0.0, 1.0, batch) if batch >= 2 else torch.tensor([0.5])
    return values[torch.randperm(batch, generator=torch.Generator().manual_seed(seed))]


def parity_batches(
    size: tuple[int, int],
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
    batches: Sequence[int] = (5, 1),
    seed: int = 0,
) -> list[dict[str, torch.Tensor]]:
    """Batches to compare on: for each batch size, random and smooth images, each with mixed qualities."""
    out = []
    for i, batch in enumerate(batches):
        for j, images in enumerate(
            (random_images(batch, size, seed + i), smooth_images(batch, size, mean, std, seed + i))
        ):
            out.append({"pixel_values": images, "quality": mixed_qualities(batch, seed + 2 * i + j)})
    return out


def max_relative_difference(actual: Any, expected: Any, min_scale: float = 0.0) -> float:
    """``max |actual - expected| / max(max |expected|, min_scale)`` (0 when both are all zero).

    ``min_scale`` is for bounded outputs: a quality in [0, 1] is compared against its range, so that 7e-18 vs 0
    far below a steep gate's threshold does not count as a 100 % difference.
    """
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {e.shape}.")
    scale = max(float(np.abs(e).max()) if e.size else 0.0, float(min_scale))
    diff = float(np.abs(a - e).max()) if e.size else 0.0
    if scale == 0.0:
        return diff
    return diff / scale


def onnx_session(path: str | os.PathLike, threads: int | None = None) -> Any:
    """An onnxruntime CPU session for ``path`` (``threads``: intra-op threads, None = onnxruntime's default)."""
    ort = require_onnxruntime()
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    return ort.InferenceSession(os.fspath(path), sess_options=options, providers=["CPUExecutionProvider"])


def run_session(session: Any, inputs: Mapping[str, torch.Tensor | np.ndarray]) -> dict[str, np.ndarray]:
    """Run a session on the inputs it declares (extra entries are ignored); outputs by name."""
    names = [i.name for i in session.get_inputs()]
    missing = [n for n in names if n not in inputs]
    if missing:
        raise ValueError(f"the ONNX model needs inputs {missing}, which were not given.")
    feeds = {
        n: (inputs[n].detach().cpu().numpy() if isinstance(inputs[n], torch.Tensor) else np.asarray(inputs[n]))
        for n in names
    }
    outputs = session.run(None, feeds)
    return {o.name: value for o, value in zip(session.get_outputs(), outputs)}


@torch.no_grad()
def compare_with_torch(
    module: nn.Module,
    onnx_path: str | os.PathLike,
    batches: Sequence[Mapping[str, torch.Tensor]],
    input_names: Sequence[str],
    output_names: Sequence[str],
    expected_given: Callable[..., Sequence[torch.Tensor]] | None = None,
    min_scales: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """The largest relative difference per output between ``module`` and its ONNX export over ``batches``.

    Args:
        module: the PyTorch module that was exported.
        onnx_path: its ``.onnx`` file.
        batches: inputs by name.
        input_names: the module's positional inputs, in order.
        output_names: its outputs, in order.
        expected_given: for a chain of stages, ``f(*inputs, actual)`` giving each output as PyTorch computes it
            from the ONNX graph's own earlier outputs (``actual``, by name), so that each stage is checked on its
            own input: a steep gate turns a float32 rounding difference in its score into a large one in its
            output, which says nothing about whether the gate was exported right. None: ``module(*inputs)``.
        min_scales: per output, the smallest scale a difference is divided by (see
            :func:`max_relative_difference`); e.g. ``{"quality": 1.0}`` for a quality in [0, 1].

    Returns:
        ``{output name: max |onnx - torch| / max |torch|}`` over all batches.
    """
    session = onnx_session(onnx_path)
    worst = dict.fromkeys(output_names, 0.0)
    for batch in batches:
        inputs = [batch[name] for name in input_names]
        actual = run_session(session, batch)
        expected = module(*inputs) if expected_given is None else expected_given(*inputs, actual)
        expected = expected if isinstance(expected, (tuple, list)) else (expected,)
        for name, value in zip(output_names, expected):
            floor = (min_scales or {}).get(name, 0.0)
            difference = max_relative_difference(actual[name], value.float().cpu().numpy(), floor)
            worst[name] = max(worst[name], difference)
    return worst
