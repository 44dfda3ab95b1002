"""The LTX-2 latent upsampler: conv stem, res blocks, an upsampling head, res blocks, conv out.

Input and output are channels-last latents (B, F, H, W, C). The spatial heads work frame by frame;
the temporal heads double the frame count and drop the first new frame, because the causal VAE's
first latent frame stands for a single pixel frame (F latent frames -> 2F - 1).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ltx2.models.cpu_math import silu

from .blocks import ResBlock, conv, group_norm
from .config import UpsamplerConfig
from .resample import _per_frame, make_head


class LatentUpsampler(nn.Module):
    def __init__(self, cfg: UpsamplerConfig):
        super().__init__()
        self.config = cfg
        d, c = cfg.dims, cfg.mid_channels
        self.initial_conv = conv(d, cfg.in_channels, c)
        self.initial_norm = group_norm(c)
        self.res_blocks = [ResBlock(c, d) for _ in range(cfg.num_blocks_per_stage)]
        self.upsampler = make_head(cfg)
        self.post_upsample_res_blocks = [ResBlock(c, d) for _ in range(cfg.num_blocks_per_stage)]
        self.final_conv = conv(d, c, cfg.in_channels)

    def _trunk(self, x: mx.array, blocks) -> mx.array:
        for b in blocks:
            x = b(x)
        return x

    @property
    def dtype(self) -> mx.Dtype:
        """The compute dtype: its weights' (see models/precision.py)."""
        return self.initial_conv.weight.dtype

    def __call__(self, latent: mx.array) -> mx.array:
        """(B, F, H, W, C) -> upsampled (B, F', H', W', C), channels-last."""
        if latent.ndim != 5 or latent.shape[-1] != self.config.in_channels:
            raise ValueError(f"latent upsampler expects (B, F, H, W, {self.config.in_channels}) channels-last, "
                             f"got {tuple(latent.shape)}")
        latent = latent.astype(self.dtype)
        if self.config.dims == 2:
            # 2-D network: every frame on its own, all the way through
            return _per_frame(self._forward_2d, latent)
        x = silu(self.initial_norm(self.initial_conv(latent)))
        x = self._trunk(x, self.res_blocks)
        mode = self.config.mode
        if mode in ("temporal", "spatiotemporal"):
            x = self.upsampler(x)[:, 1:]
        elif mode == "rational":
            x = self.upsampler(x)
        else:
            x = _per_frame(self.upsampler, x)
        x = self._trunk(x, self.post_upsample_res_blocks)
        return self.final_conv(x)

    def _forward_2d(self, x: mx.array) -> mx.array:
        x = silu(self.initial_norm(self.initial_conv(x)))
        x = self._trunk(x, self.res_blocks)
        x = self.upsampler(x)
        x = self._trunk(x, self.post_upsample_res_blocks)
        return self.final_conv(x)
