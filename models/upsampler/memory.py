"""Activation memory of one latent-upsampler call, for the upscale stages' estimates (weights are counted apart)."""

from __future__ import annotations

import math

from ltx2.models.ops import conv3d_temp_bytes

from .config import UpsamplerConfig

# Peak RSS of the upscale stage (MLX 0.32, CPU, full-size x2 spatial upsampler, latents 16x4x6 to 16x16x24)
# less its weights, ~140 MiB of process and one conv-weight copy: two unfolded conv inputs (MLX allocates the
# next convolution's buffer before the previous one is released, chunked or not: 0.40 to 0.59 GiB measured
# where the buffer alone is 0.16 to 0.24 GiB) and 0 to 4 mid_channels-wide float32 activations of the largest
# grid (block input, padded copy, norm temporaries, residual sum; 4 at 16x32x48, where one is 96 MiB).
UNFOLDED_BUFFERS = 2
ACTIVATIONS = 4


def upsampled_fhw(cfg: UpsamplerConfig, latent_fhw: tuple[int, int, int]) -> tuple[int, int, int]:
    """(frames, height, width) of the latent the upsampler writes for a (frames, height, width) one."""
    f, h, w = latent_fhw
    mode = cfg.mode
    if mode == "rational":
        up, down = cfg.rational
        return f, -(-h * up // down), -(-w * up // down)  # blurred stride-`down`, padding 2, kernel 5
    ft = 2 * f - 1 if mode in ("temporal", "spatiotemporal") else f
    s = 1 if mode == "temporal" else 2
    return ft, h * s, w * s


def activation_bytes(cfg: UpsamplerConfig, latent_fhw: tuple[int, int, int], itemsize: int = 4) -> int:
    """Peak bytes above the weights while upsampling a (frames, height, width) latent.

    Two of the largest unfolded inputs of a 3x3(x3) convolution (MLX lowers a convolution to one matrix
    product over a kernel-fold copy of its input; conv3d_chunked caps the 3-D ones) plus ``ACTIVATIONS``
    activations of the largest grid. The copy MLX makes of a conv weight is not included (stages.memory)."""
    f, h, w = latent_fhw
    c = cfg.mid_channels
    out = upsampled_fhw(cfg, latent_fhw)
    grids = [(f, h, w), out]
    if cfg.mode == "rational":  # the pixel shuffle's output, before the blurred downsampling
        up, _ = cfg.rational
        grids.append((f, h * up, w * up))

    def unfold(fhw: tuple[int, int, int]) -> int:
        t, y, x = fhw
        if cfg.dims == 3:
            return conv3d_temp_bytes((1, t + 2, y + 2, x + 2, c), (3, 3, 3), itemsize=itemsize)
        return 9 * c * t * y * x * itemsize  # 2-D convolutions over every frame at once: not chunked

    # the 2-D heads (spatial, rational) convolve every input frame at once, unchunked
    head = 9 * c * f * h * w * itemsize if cfg.mode in ("spatial", "rational") else 0
    conv = max(unfold((f, h, w)), unfold(out), head)
    return UNFOLDED_BUFFERS * conv + ACTIVATIONS * c * max(math.prod(g) for g in grids) * itemsize
