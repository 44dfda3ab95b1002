"""BigVGAN v2 pieces: Snake / SnakeBeta, the anti-aliased activation and the AMP residual block.

The anti-aliased activation runs the periodic nonlinearity at twice the rate: upsample x2 with a
Kaiser-windowed sinc low-pass, apply Snake, low-pass and decimate x2 again, so the harmonics the
nonlinearity creates do not alias back into the band. The filters are constants; official
checkpoints store them (``...upsample.filter``, ``...downsample.lowpass.filter``) and they are
loaded from there, but the same values are computed here by default.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .layers import Conv1d


def kaiser_sinc_filter(cutoff: float, half_width: float, kernel: int) -> np.ndarray:
    """Low-pass FIR of ``kernel`` taps, cutoff as a fraction of the sample rate, unit DC gain."""
    half = kernel // 2
    even = kernel % 2 == 0
    # Kaiser's formula for the window shape parameter from the attenuation the transition band allows
    atten = 2.285 * (half - 1) * math.pi * (4 * half_width) + 7.95
    if atten > 50.0:
        beta = 0.1102 * (atten - 8.7)
    elif atten >= 21.0:
        beta = 0.5842 * (atten - 21.0) ** 0.4 + 0.07886 * (atten - 21.0)
    else:
        beta = 0.0
    window = np.kaiser(kernel, beta)
    t = (np.arange(-half, half) + 0.5) if even else (np.arange(kernel) - half)
    if cutoff == 0:
        return np.zeros(kernel)
    taps = 2 * cutoff * window * np.sinc(2 * cutoff * t)
    return taps / taps.sum()


def _depthwise(x: mx.array, fn) -> mx.array:
    """Apply a single-channel filter op to every channel: fold channels into the batch."""
    b, n, c = x.shape
    y = fn(x.transpose(0, 2, 1).reshape(b * c, n, 1))
    return y.reshape(b, c, y.shape[1]).transpose(0, 2, 1)


class UpSample1d(nn.Module):
    """x2 (or xratio) band-limited upsampling: edge-pad, zero-stuff + filter (transposed conv), trim."""

    def __init__(self, ratio: int = 2, kernel: int = 12):
        super().__init__()
        self.ratio = ratio
        self.pad = kernel // ratio - 1
        self.trim_left = self.pad * ratio + (kernel - ratio) // 2
        self.trim_right = self.pad * ratio + (kernel - ratio + 1) // 2
        self.filter = mx.array(kaiser_sinc_filter(0.5 / ratio, 0.6 / ratio, kernel).astype(np.float32))

    def __call__(self, x: mx.array) -> mx.array:
        x = mx.pad(x, [(0, 0), (self.pad, self.pad), (0, 0)], mode="edge")
        w = self.filter.reshape(1, -1, 1)
        y = _depthwise(x, lambda v: mx.conv_transpose1d(v, w, stride=self.ratio))
        # the filter has unit DC gain at the high rate; x ratio restores the amplitude after zero-stuffing
        return self.ratio * y[:, self.trim_left: y.shape[1] - self.trim_right]


class LowPassFilter1d(nn.Module):
    def __init__(self, cutoff: float, half_width: float, stride: int, kernel: int):
        super().__init__()
        self.stride = stride
        self.pad = (kernel // 2 - int(kernel % 2 == 0), kernel // 2)
        self.filter = mx.array(kaiser_sinc_filter(cutoff, half_width, kernel).astype(np.float32))

    def __call__(self, x: mx.array) -> mx.array:
        x = mx.pad(x, [(0, 0), self.pad, (0, 0)], mode="edge")
        w = self.filter.reshape(1, -1, 1)
        return _depthwise(x, lambda v: mx.conv1d(v, w, stride=self.stride))


class DownSample1d(nn.Module):
    def __init__(self, ratio: int = 2, kernel: int = 12):
        super().__init__()
        self.lowpass = LowPassFilter1d(0.5 / ratio, 0.6 / ratio, ratio, kernel)

    def __call__(self, x: mx.array) -> mx.array:
        return self.lowpass(x)


class Snake(nn.Module):
    """x + sin^2(a x) / a, per channel, a = exp(alpha) (log-scale parameter)."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = mx.zeros((channels,))

    def __call__(self, x: mx.array) -> mx.array:
        a = mx.exp(self.alpha)
        return x + mx.square(mx.sin(x * a)) / (a + 1e-9)


class SnakeBeta(nn.Module):
    """x + sin^2(a x) / b with separate frequency a = exp(alpha) and magnitude b = exp(beta)."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = mx.zeros((channels,))
        self.beta = mx.zeros((channels,))

    def __call__(self, x: mx.array) -> mx.array:
        return x + mx.square(mx.sin(x * mx.exp(self.alpha))) / (mx.exp(self.beta) + 1e-9)


def make_snake(kind: str, channels: int) -> nn.Module:
    return SnakeBeta(channels) if kind == "snakebeta" else Snake(channels)


class Activation1d(nn.Module):
    """Anti-aliased activation: upsample x2, nonlinearity, low-pass and decimate x2."""

    def __init__(self, act: nn.Module):
        super().__init__()
        self.act = act
        self.upsample = UpSample1d(2, 12)
        self.downsample = DownSample1d(2, 12)

    def __call__(self, x: mx.array) -> mx.array:
        return self.downsample(self.act(self.upsample(x)))


class AMPBlock1(nn.Module):
    """BigVGAN residual block: three (anti-aliased snake, dilated conv, anti-aliased snake, conv) units."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...], activation: str):
        super().__init__()

        def pad(d: int) -> tuple[int, int]:  # symmetric (k*d - d) // 2, as the official block pads
            p = (kernel * d - d) // 2
            return p, p

        self.convs1 = [Conv1d(channels, channels, kernel, d, pad(d)) for d in dilations]
        self.convs2 = [Conv1d(channels, channels, kernel, 1, pad(1)) for _ in dilations]
        self.acts1 = [Activation1d(make_snake(activation, channels)) for _ in dilations]
        self.acts2 = [Activation1d(make_snake(activation, channels)) for _ in dilations]

    def __call__(self, x: mx.array) -> mx.array:
        for c1, c2, a1, a2 in zip(self.convs1, self.convs2, self.acts1, self.acts2):
            x = x + c2(a2(c1(a1(x))))
        return x
