"""The upsampling heads: pixel shuffle (x2 in space, time, or both) and the rational resampler.

All work channels-last. A head's conv produces ``factor`` times the channels, ordered
(channel, factor_t, factor_h, factor_w) as in the reference, and the pixel shuffle moves the factors
into the grid.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

from ltx2.models.ops import depth_to_space

from .blocks import Conv3d
from .config import UpsamplerConfig


def _per_frame(fn, x: mx.array) -> mx.array:
    """Apply a 2-D op to each frame of (N, F, H, W, C)."""
    n, f = x.shape[:2]
    y = fn(x.reshape(n * f, *x.shape[2:]))
    return y.reshape(n, f, *y.shape[1:])


class PixelShuffleHead(nn.Module):
    """conv to C*prod(factors) channels, then pixel shuffle by ``factors`` over (F, H, W) or (H, W)."""

    def __init__(self, channels: int, factors: tuple[int, ...]):
        super().__init__()
        self.factors = tuple(factors)
        cout = channels * math.prod(self.factors)
        # stored at index 0 of the reference's Sequential(conv, shuffle): keys `upsampler.0.*`
        self.layers = [Conv3d(channels, cout) if len(self.factors) == 3
                       else nn.Conv2d(channels, cout, kernel_size=3, padding=1)]

    def __call__(self, x: mx.array) -> mx.array:
        return depth_to_space(self.layers[0](x), self.factors)


class BlurDownsample(nn.Module):
    """Anti-aliased stride-``stride`` downsampling of (N, H, W, C) with a fixed 5x5 binomial kernel.

    The kernel (``kernel``, shape (1, 1, 5, 5) as stored in the checkpoint) is applied to every
    channel alike, so channels are folded into the batch and one single-channel conv does the work
    (no grouped convolution needed).
    """

    def __init__(self, stride: int, kernel_size: int = 5):
        super().__init__()
        self.stride = int(stride)
        self.kernel_size = int(kernel_size)
        row = mx.array([math.comb(kernel_size - 1, k) for k in range(kernel_size)], dtype=mx.float32)
        k2 = row[:, None] * row[None, :]
        self.kernel = (k2 / k2.sum())[None, None]  # overwritten by the checkpoint's copy on load

    def __call__(self, x: mx.array) -> mx.array:
        if self.stride == 1:
            return x
        n, h, w, c = x.shape
        k = self.kernel.reshape(1, self.kernel_size, self.kernel_size, 1).astype(x.dtype)
        y = x.transpose(0, 3, 1, 2).reshape(n * c, h, w, 1)
        y = mx.conv2d(y, k, stride=self.stride, padding=self.kernel_size // 2)
        return y.reshape(n, c, y.shape[1], y.shape[2]).transpose(0, 2, 3, 1)


class RationalResampler(nn.Module):
    """Per frame: x``up`` by pixel shuffle, then blurred stride-``down``: a spatial scale of up/down."""

    def __init__(self, channels: int, up: int, down: int):
        super().__init__()
        self.up = up
        self.conv = nn.Conv2d(channels, channels * up * up, kernel_size=3, padding=1)
        self.blur_down = BlurDownsample(down)

    def __call__(self, x: mx.array) -> mx.array:
        return _per_frame(lambda y: self.blur_down(depth_to_space(self.conv(y), (self.up, self.up))), x)


def make_head(cfg: UpsamplerConfig) -> nn.Module:
    mode, c = cfg.mode, cfg.mid_channels
    if mode == "spatiotemporal":
        return PixelShuffleHead(c, (2, 2, 2))
    if mode == "temporal":
        return PixelShuffleHead(c, (2, 1, 1))
    if mode == "rational":
        return RationalResampler(c, *cfg.rational)
    return PixelShuffleHead(c, (2, 2))
