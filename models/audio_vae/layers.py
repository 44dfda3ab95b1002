"""Building blocks of the audio VAE, channels-last (B, time, mel, C) as MLX convolutions want.

"Height" in the official code is the time axis (axis 1 here), "width" the mel axis (axis 2).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ltx2.models.conv import conv2d
from ltx2.models.cpu_math import silu


def _split(total: int) -> tuple[int, int]:
    return total // 2, total - total // 2


def causal_pads(axis: str, kh: int, kw: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(time pad, mel pad) for a stride-1 conv: the causal axis is padded on its past side only."""
    ph, pw = kh - 1, kw - 1
    if axis == "none":
        return _split(ph), _split(pw)
    if axis == "height":
        return (ph, 0), _split(pw)
    return _split(ph), (pw, 0)  # "width" and "width-compatibility"


class CausalConv2d(nn.Module):
    """Conv2d with explicit zero padding so no output frame sees a later input frame."""

    def __init__(self, cin: int, cout: int, kernel: int, axis: str):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=1, padding=0)
        self.pad_t, self.pad_f = causal_pads(axis, kernel, kernel)

    def __call__(self, x: mx.array) -> mx.array:
        if any(self.pad_t) or any(self.pad_f):
            x = mx.pad(x, [(0, 0), self.pad_t, self.pad_f, (0, 0)])
        return conv2d(x, self.conv.weight, self.conv.bias)  # the parameters stay nn.Conv2d's (the key map's names)


class PixelNorm(nn.Module):
    """RMS normalisation over channels at every (time, mel) position; no parameters."""

    def __init__(self, eps: float = 1e-6):
        super().__init__()
        self.eps = eps

    def __call__(self, x: mx.array) -> mx.array:
        return mx.fast.rms_norm(x, None, self.eps)  # x / sqrt(mean(x^2) + eps) in one pass


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, axis: str):
        super().__init__()
        self.norm1 = PixelNorm()
        self.conv1 = CausalConv2d(cin, cout, 3, axis)
        self.norm2 = PixelNorm()
        self.conv2 = CausalConv2d(cout, cout, 3, axis)
        # 1x1 projection only where the width changes (the official conv_shortcut variant is never built)
        if cin != cout:
            self.nin_shortcut = CausalConv2d(cin, cout, 1, axis)

    def __call__(self, x: mx.array) -> mx.array:
        h = self.conv1(silu(self.norm1(x)))
        h = self.conv2(silu(self.norm2(h)))  # dropout: identity at inference
        if "nin_shortcut" in self:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all (time, mel) positions, 1x1-conv projections."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = PixelNorm()
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def __call__(self, x: mx.array) -> mx.array:
        b, t, f, c = x.shape
        h = self.norm(x)
        q, k, v = (m(h).reshape(b, 1, t * f, c) for m in (self.q, self.k, self.v))
        o = mx.fast.scaled_dot_product_attention(q, k, v, scale=c ** -0.5)
        return x + self.proj_out(o.reshape(b, t, f, c))


class Downsample(nn.Module):
    """Stride-2 3x3 conv; the padding puts the extra row on the past side of the causal axis."""

    _PADS = {  # axis -> (time pad, mel pad)
        "none": ((0, 1), (0, 1)),
        "height": ((2, 0), (0, 1)),
        "width": ((0, 1), (2, 0)),
        "width-compatibility": ((0, 1), (1, 0)),
    }

    def __init__(self, channels: int, axis: str):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)
        self.pad_t, self.pad_f = self._PADS[axis]

    def __call__(self, x: mx.array) -> mx.array:
        return self.conv(mx.pad(x, [(0, 0), self.pad_t, self.pad_f, (0, 0)]))


class Upsample(nn.Module):
    """Nearest x2 on both axes, causal 3x3 conv, then drop the first step of the causal axis.

    Dropping the first (not the last) step keeps a length of 2n - 1 per doubling, the inverse of
    the encoder's causal downsampling, and the first output then depends only on the first input.
    """

    def __init__(self, channels: int, axis: str):
        super().__init__()
        self.conv = CausalConv2d(channels, channels, 3, axis)
        self.axis = axis

    def __call__(self, x: mx.array) -> mx.array:
        x = mx.repeat(mx.repeat(x, 2, axis=1), 2, axis=2)
        x = self.conv(x)
        if self.axis == "height":
            x = x[:, 1:]
        elif self.axis == "width":
            x = x[:, :, 1:]
        return x


class MidBlock(nn.Module):
    def __init__(self, channels: int, axis: str, attention: bool):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, axis)
        if attention:
            self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, axis)

    def __call__(self, x: mx.array) -> mx.array:
        x = self.block_1(x)
        if "attn_1" in self:
            x = self.attn_1(x)
        return self.block_2(x)
