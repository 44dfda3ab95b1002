"""Audio VAE encoder: stereo log-mel (B, 2, T, mel) -> normalised latent (B, z, T', mel/4)."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

from ltx2.models.cpu_math import silu

from .config import AudioVAEConfig
from .layers import AttnBlock, CausalConv2d, Downsample, MidBlock, PixelNorm, ResnetBlock
from .statistics import PerChannelStatistics


class DownStage(nn.Module):
    """One resolution level: residual blocks (each optionally followed by attention), then a downsample."""

    def __init__(self, cin: int, cout: int, n_blocks: int, attention: bool, downsample: bool, axis: str):
        super().__init__()
        self.block = [ResnetBlock(cin if i == 0 else cout, cout, axis) for i in range(n_blocks)]
        self.attn = [AttnBlock(cout) for _ in range(n_blocks)] if attention else []
        if downsample:
            self.downsample = Downsample(cout, axis)

    def __call__(self, x: mx.array) -> mx.array:
        for i, block in enumerate(self.block):
            x = block(x)
            if self.attn:
                x = self.attn[i](x)
        if "downsample" in self:
            x = self.downsample(x)
        return x


class AudioEncoder(nn.Module):
    def __init__(self, cfg: AudioVAEConfig):
        super().__init__()
        self.cfg = cfg
        axis = cfg.causality_axis
        attn_on = cfg.attn_type == "vanilla"
        self.conv_in = CausalConv2d(cfg.in_channels, cfg.ch, 3, axis)
        mults = (1, *cfg.ch_mult)
        res = cfg.resolution
        self.down = []
        for level in range(cfg.num_resolutions):
            last = level == cfg.num_resolutions - 1
            self.down.append(DownStage(cfg.ch * mults[level], cfg.ch * cfg.ch_mult[level], cfg.num_res_blocks,
                                       attn_on and res in cfg.attn_resolutions, not last, axis))
            if not last:
                res //= 2
        width = cfg.ch * cfg.ch_mult[-1]
        self.mid = MidBlock(width, axis, attn_on and cfg.mid_block_add_attention)
        self.norm_out = PixelNorm()
        self.conv_out = CausalConv2d(width, 2 * cfg.z_channels if cfg.double_z else cfg.z_channels, 3, axis)
        # Statistics over the patchified latent (z * latent mel bins numbers); the official model sizes them by `ch`.
        self.per_channel_statistics = PerChannelStatistics(cfg.ch)

    @property
    def dtype(self) -> mx.Dtype:
        """The compute dtype: its weights' (see models/precision.py)."""
        return self.conv_in.conv.weight.dtype

    def __call__(self, spectrogram: mx.array) -> mx.array:
        """spectrogram (B, in_channels, T, mel) -> latent (B, z, T', F'), normalised; official layouts."""
        h = self.conv_in(spectrogram.astype(self.dtype).transpose(0, 2, 3, 1))
        for stage in self.down:
            h = stage(h)
        h = self.mid(h)
        h = self.conv_out(silu(self.norm_out(h)))
        # Keep the posterior mean: the first half of the channels (torch.chunk rounds the first half up).
        means = h[..., : math.ceil(h.shape[-1] / 2)]
        return self.per_channel_statistics.normalize(means).transpose(0, 3, 1, 2)
