"""Building blocks of the video VAE, channels-last: activations are (B, F, H, W, C).

Module and parameter names follow the official checkpoint keys, so the key map (loading.py) only has to move
convolution weights into MLX's layout.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

from ltx2.models.conv import conv3d
from ltx2.models.cpu_math import silu
from ltx2.models.ops import causal_time_padding, depth_to_space, pad_video, space_to_depth
from ltx2.models.precision import norm_float32
from ltx2.models.transformer.timestep import TimestepEmbedder

from .noise import NoiseSource

PIXEL_NORM_EPS = 1e-8  # the official PixelNorm default, used everywhere in the VAE
GROUP_NORM_EPS = 1e-6  # the res blocks' channel-changing shortcut norm
# The input patchify packs each p x p pixel block into channels as (channel, column, row): width
# sub-position before height, unlike the sampling blocks (see ltx2.models.ops).
PATCHIFY_ORDER = (0, 2, 1)

# Upper bound on the unfolded input a single convolution may allocate (see ops.conv3d_chunked).
CONV_TEMP_BYTES = 256 << 20


def patchify(video: mx.array, p: int) -> mx.array:
    """(B, F, H, W, C) -> (B, F, H/p, W/p, C*p*p), the encoder's first step."""
    return space_to_depth(video, (1, p, p), PATCHIFY_ORDER)


def unpatchify(x: mx.array, p: int) -> mx.array:
    """(B, F, H, W, C*p*p) -> (B, F, H*p, W*p, C), the decoder's last step."""
    return depth_to_space(x, (1, p, p), PATCHIFY_ORDER)


def pixel_norm(x: mx.array) -> mx.array:
    """x / sqrt(mean(x^2 over channels) + eps), per voxel."""
    return mx.fast.rms_norm(x, None, PIXEL_NORM_EPS)


class CausalConv3d(nn.Module):
    """3x3x3 convolution whose time axis is padded by repeating edge frames (all in front when causal).

    Space is padded by ``kernel // 2`` with zeros, reflection or replication; the parameters live in
    ``conv`` (an MLX Conv3d used only as the weight holder) to match the checkpoint's ``*.conv.*`` keys.
    The output is evaluated at once so one convolution's unfolded-input buffer is released before
    the next convolution allocates its own (MLX would otherwise run ahead and hold several); the
    memory estimate in tiling.py relies on it.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: tuple[int, int, int] = (1, 1, 1),
                 padding_mode: str = "zeros"):
        super().__init__()
        self.conv = nn.Conv3d(in_ch, out_ch, kernel, stride=stride, padding=0, bias=True)
        self.kernel = kernel
        self.stride = tuple(stride)
        self.padding_mode = padding_mode

    def __call__(self, x: mx.array, causal: bool = True) -> mx.array:
        front, back = causal_time_padding(self.kernel, causal)
        x = pad_video(x, front, back, self.kernel // 2, self.padding_mode)
        y = conv3d(x, self.conv.weight, self.conv.bias, self.stride, CONV_TEMP_BYTES)
        mx.eval(y)
        return y


class TimeEmbedder(nn.Module):
    """The official PixArt combined embedder: only its timestep MLP carries weights."""

    def __init__(self, dim: int):
        super().__init__()
        self.timestep_embedder = TimestepEmbedder(dim)

    def __call__(self, t: mx.array) -> mx.array:
        return self.timestep_embedder(t)


class GroupNorm1(nn.Module):
    """GroupNorm with one group: normalise over all but the batch axis, then a per-channel affine."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = mx.ones((channels,))
        self.bias = mx.zeros((channels,))

    def __call__(self, x: mx.array) -> mx.array:
        return norm_float32(self._normalize, x) * self.weight + self.bias  # statistics in float32 (a half input)

    @staticmethod
    def _normalize(x: mx.array) -> mx.array:
        axes = tuple(range(1, x.ndim))
        mean = mx.mean(x, axis=axes, keepdims=True)
        var = mx.var(x, axis=axes, keepdims=True)
        return (x - mean) * mx.rsqrt(var + GROUP_NORM_EPS)


class ResnetBlock3D(nn.Module):
    """norm -> (AdaLN) -> SiLU -> conv -> (noise) -> norm -> (AdaLN) -> SiLU -> conv -> (noise), plus shortcut."""

    def __init__(self, in_ch: int, out_ch: int, padding_mode: str, inject_noise: bool = False,
                 timestep_conditioning: bool = False):
        super().__init__()
        self.conv1 = CausalConv3d(in_ch, out_ch, padding_mode=padding_mode)
        self.conv2 = CausalConv3d(out_ch, out_ch, padding_mode=padding_mode)
        self.inject_noise = inject_noise
        self.timestep_conditioning = timestep_conditioning
        if inject_noise:
            self.per_channel_scale1 = mx.zeros((in_ch, 1, 1))
            self.per_channel_scale2 = mx.zeros((in_ch, 1, 1))
        if in_ch != out_ch:
            self.norm3 = GroupNorm1(in_ch)
            self.conv_shortcut = nn.Conv3d(in_ch, out_ch, 1)
        if timestep_conditioning:
            self.scale_shift_table = mx.zeros((4, in_ch))

    def _noise(self, h: mx.array, scale: mx.array, noise: NoiseSource | None) -> mx.array:
        if noise is None:
            raise ValueError("this decoder injects noise: pass a noise source (e.g. KeyNoise(mx.random.key(seed)))")
        spatial = noise.draw(tuple(h.shape[2:4])).astype(h.dtype)  # one (H, W) field shared by all frames, channels
        return h + spatial[None, None, :, :, None] * scale.reshape(-1)

    def __call__(self, x: mx.array, causal: bool = True, temb: mx.array | None = None,
                 noise: NoiseSource | None = None) -> mx.array:
        h = pixel_norm(x)
        if self.timestep_conditioning:
            # temb (B, 4*C) -> shift1, scale1, shift2, scale2, each broadcast over (F, H, W)
            ada = self.scale_shift_table + temb.reshape(temb.shape[0], 4, -1)
            ada = ada[:, :, None, None, None, :]
            h = h * (1 + ada[:, 1]) + ada[:, 0]
        h = self.conv1(silu(h), causal)
        if self.inject_noise:
            h = self._noise(h, self.per_channel_scale1, noise)
        h = pixel_norm(h)
        if self.timestep_conditioning:
            h = h * (1 + ada[:, 3]) + ada[:, 2]
        h = self.conv2(silu(h), causal)
        if self.inject_noise:
            h = self._noise(h, self.per_channel_scale2, noise)
        if "conv_shortcut" in self:
            x = self.conv_shortcut(self.norm3(x))
        return x + h


class UNetMidBlock3D(nn.Module):
    """A stack of same-width res blocks sharing one timestep embedding (``res_x``)."""

    def __init__(self, ch: int, num_layers: int, padding_mode: str, inject_noise: bool = False,
                 timestep_conditioning: bool = False):
        super().__init__()
        self.timestep_conditioning = timestep_conditioning
        if timestep_conditioning:
            self.time_embedder = TimeEmbedder(4 * ch)
        self.res_blocks = [ResnetBlock3D(ch, ch, padding_mode, inject_noise, timestep_conditioning)
                           for _ in range(num_layers)]

    def __call__(self, x: mx.array, causal: bool = True, timestep: mx.array | None = None,
                 noise: NoiseSource | None = None) -> mx.array:
        temb = self.time_embedder(timestep) if self.timestep_conditioning else None
        for block in self.res_blocks:
            x = block(x, causal, temb, noise)
        return x


class SpaceToDepthDownsample(nn.Module):
    """Encoder downsampling: conv then space-to-depth, plus a space-to-depth + group-mean shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: tuple[int, int, int], padding_mode: str):
        super().__init__()
        self.stride = stride
        self.group = in_ch * math.prod(stride) // out_ch
        self.conv = CausalConv3d(in_ch, out_ch // math.prod(stride), padding_mode=padding_mode)

    def __call__(self, x: mx.array, causal: bool = True) -> mx.array:
        if self.stride[0] == 2:  # repeat the first frame so 1 + 8k frames halve evenly
            x = mx.concatenate([x[:, :1], x], axis=1)
        short = space_to_depth(x, self.stride)
        short = short.reshape(*short.shape[:-1], -1, self.group).mean(axis=-1)
        return space_to_depth(self.conv(x, causal), self.stride) + short


class DepthToSpaceUpsample(nn.Module):
    """Decoder upsampling: conv then depth-to-space (dropping the extra first frame when time doubles),
    optionally plus the input itself depth-to-spaced and repeated over channels."""

    def __init__(self, in_ch: int, stride: tuple[int, int, int], residual: bool, reduction: int, padding_mode: str):
        super().__init__()
        self.stride = stride
        self.residual = residual
        self.repeats = math.prod(stride) // reduction
        self.conv = CausalConv3d(in_ch, math.prod(stride) * in_ch // reduction, padding_mode=padding_mode)

    def __call__(self, x: mx.array, causal: bool = True) -> mx.array:
        drop = 1 if self.stride[0] == 2 else 0
        y = depth_to_space(self.conv(x, causal), self.stride)[:, drop:]
        if self.residual:
            short = depth_to_space(x, self.stride)[:, drop:]
            y = y + mx.tile(short, (1, 1, 1, 1, self.repeats))
        return y


class PerChannelStatistics(nn.Module):
    """The latent normalisation the encoder applies and the decoder undoes (per channel)."""

    def __init__(self, channels: int):
        super().__init__()
        self.std_of_means = mx.ones((channels,))
        self.mean_of_means = mx.zeros((channels,))

    def normalize(self, x: mx.array) -> mx.array:
        return (x - self.mean_of_means) / self.std_of_means

    def un_normalize(self, x: mx.array) -> mx.array:
        return x * self.std_of_means + self.mean_of_means
