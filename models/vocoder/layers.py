"""1-D convolution with explicit (left, right) padding, and the HiFi-GAN residual block.

Everything is channels-last (B, samples, C).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ltx2.models.conv import conv1d

LRELU_SLOPE = 0.1  # inside the generator; the final activation of the HiFi-GAN path uses 0.01


class Conv1d(nn.Module):
    """Conv1d whose padding may be asymmetric (PyTorch's padding='same' with an even span is)."""

    def __init__(self, cin: int, cout: int, kernel: int, dilation: int = 1, pad: tuple[int, int] = (0, 0),
                 bias: bool = True):
        super().__init__()
        scale = (cin * kernel) ** -0.5
        self.weight = mx.random.uniform(-scale, scale, (cout, kernel, cin))
        if bias:
            self.bias = mx.zeros((cout,))
        self.dilation = dilation
        self.pad = pad

    def __call__(self, x: mx.array) -> mx.array:
        if any(self.pad):
            x = mx.pad(x, [(0, 0), self.pad, (0, 0)])
        y = conv1d(x, self.weight, self.dilation)
        return y + self.bias if "bias" in self else y


def same_pad(kernel: int, dilation: int) -> tuple[int, int]:
    """PyTorch padding='same' for stride 1: the odd element of an even span goes to the right."""
    total = dilation * (kernel - 1)
    return total // 2, total - total // 2


class ResBlock1(nn.Module):
    """HiFi-GAN residual block: three (leaky ReLU, dilated conv, leaky ReLU, conv) residual units."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs1 = [Conv1d(channels, channels, kernel, d, same_pad(kernel, d)) for d in dilations]
        self.convs2 = [Conv1d(channels, channels, kernel, 1, same_pad(kernel, 1)) for _ in dilations]

    def __call__(self, x: mx.array) -> mx.array:
        for c1, c2 in zip(self.convs1, self.convs2):
            h = c1(nn.leaky_relu(x, LRELU_SLOPE))
            x = x + c2(nn.leaky_relu(h, LRELU_SLOPE))
        return x
