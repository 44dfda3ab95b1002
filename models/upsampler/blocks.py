"""Building blocks of the latent upsampler, all channels-last (N, [F,] H, W, C)."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ltx2.models.conv import conv3d
from ltx2.models.cpu_math import silu
from ltx2.models.precision import norm_float32

from .config import NORM_GROUPS


class Conv3d(nn.Conv3d):
    """3x3x3 'same' convolution computed in frame slabs (``conv.conv3d``, bounded as ``ops.conv3d_chunked``).

    MLX unfolds a 3-D convolution's input 27-fold; at the real width (1024 channels) on an upsampled
    latent that copy alone would be gigabytes, so it is bounded here. Same parameters as nn.Conv3d.
    """

    def __init__(self, cin: int, cout: int):
        super().__init__(cin, cout, kernel_size=3, padding=0)

    def __call__(self, x: mx.array) -> mx.array:
        x = mx.pad(x, [(0, 0), (1, 1), (1, 1), (1, 1), (0, 0)])
        return conv3d(x, self.weight, self.bias)


def conv(dims: int, cin: int, cout: int) -> nn.Module:
    """3x3(x3) convolution with 'same' padding."""
    return Conv3d(cin, cout) if dims == 3 else nn.Conv2d(cin, cout, kernel_size=3, padding=1)


class GroupNorm(nn.GroupNorm):
    """MLX's GroupNorm with its statistics in float32 for a half input (as torch's kernel keeps them)."""

    def __call__(self, x: mx.array) -> mx.array:
        return norm_float32(super().__call__, x)


def group_norm(channels: int) -> nn.GroupNorm:
    # pytorch_compatible: statistics over each group's contiguous channels and all positions
    return GroupNorm(NORM_GROUPS, channels, eps=1e-5, pytorch_compatible=True)


class ResBlock(nn.Module):
    """conv-norm-SiLU-conv-norm, residual added before the last SiLU."""

    def __init__(self, channels: int, dims: int):
        super().__init__()
        self.conv1 = conv(dims, channels, channels)
        self.norm1 = group_norm(channels)
        self.conv2 = conv(dims, channels, channels)
        self.norm2 = group_norm(channels)

    def __call__(self, x: mx.array) -> mx.array:
        h = silu(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return silu(h + x)
