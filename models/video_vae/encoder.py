"""Video VAE encoder: video (B, F, H, W, 3) in [-1, 1] -> normalised latent means (B, F', H', W', 128)."""

from __future__ import annotations

import logging

import mlx.core as mx
import mlx.nn as nn

from ltx2.models.cpu_math import silu

from .config import VideoVAEConfig
from .layers import (CausalConv3d, PerChannelStatistics, ResnetBlock3D, SpaceToDepthDownsample, UNetMidBlock3D,
                     patchify, pixel_norm)

log = logging.getLogger(__name__)


def _encoder_block(name: str, params: dict, w_in: int, w_out: int, pad: str) -> nn.Module:
    if name == "res_x":
        return UNetMidBlock3D(w_in, params["num_layers"], pad)
    if name == "res_x_y":
        return ResnetBlock3D(w_in, w_out, pad)
    stride = {"compress_time": (2, 1, 1), "compress_space": (1, 2, 2)}.get(name.removesuffix("_res"), (2, 2, 2))
    if name.endswith("_res"):
        return SpaceToDepthDownsample(w_in, w_out, stride, pad)
    return CausalConv3d(w_in, w_out, stride=stride, padding_mode=pad)  # compress_{time,space,all}[_x_y]


class VideoEncoder(nn.Module):
    def __init__(self, cfg: VideoVAEConfig):
        super().__init__()
        self.cfg = cfg
        pad = cfg.encoder_padding
        self.per_channel_statistics = PerChannelStatistics(cfg.latent_channels)
        self.conv_in = CausalConv3d(cfg.in_channels * cfg.patch_size ** 2, cfg.latent_channels, padding_mode=pad)
        stages = cfg.encoder_stages()
        self.down_blocks = [_encoder_block(n, p, wi, wo, pad) for n, p, wi, wo in stages]
        width = stages[-1][3] if stages else cfg.latent_channels
        # conv_out also predicts the log-variance: one shared channel, or one per latent channel
        extra = cfg.latent_channels if cfg.latent_log_var == "per_channel" else 1
        self.conv_out = CausalConv3d(width, cfg.latent_channels + extra, padding_mode=pad)

    @property
    def dtype(self) -> mx.Dtype:
        """The compute dtype: its weights' (see models/precision.py)."""
        return self.conv_in.conv.weight.dtype

    def __call__(self, video: mx.array) -> mx.array:
        video = video.astype(self.dtype)
        frames = video.shape[1]
        step, px = self.cfg.encoder_scales
        if (frames - 1) % step:  # as the official encoder: drop frames down to 1 + step * k
            drop = (frames - 1) % step
            log.warning("encode: %d frames is not 1 + %dk; dropping the last %d", frames, step, drop)
            video = video[:, :frames - drop]
        h, w = video.shape[2:4]
        if h % px or w % px:
            raise ValueError(f"encode: height and width must be multiples of {px}, got {h}x{w}")
        x = self.conv_in(patchify(video, self.cfg.patch_size))
        for block in self.down_blocks:
            x = block(x)
        x = self.conv_out(silu(pixel_norm(x)))
        # the latent is the mean: the first latent_channels outputs whatever the log-variance layout
        return self.per_channel_statistics.normalize(x[..., :self.cfg.latent_channels])
