"""dlib's ResNet face descriptor (``dlib_face_recognition_resnet_model_v1.dat``) as a PyTorch module.

dlib's face recognition network (Davis King, 2017; 99.38 % on LFW in dlib's own protocol) is a 29-layer ResNet
on 150x150 RGB face chips that maps a face to a 128-d descriptor; two faces are the same person when their
descriptors are closer than 0.6 (Euclidean). Its weights are in the public domain (CC0 1.0 Universal, as the
``face_recognition_models`` package states). :mod:`petal_peft.convert.dlib_resnet` reads them (petal-peft's own
parser of dlib's format, no dlib needed) into this module, which runs the same network in torch, batched, with
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

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DlibFaceResNet", "DlibResidualUnit", "add_zero_padded"]


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
