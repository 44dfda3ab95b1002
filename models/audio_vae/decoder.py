"""Audio VAE decoder: normalised latent (B, z, T, F) -> stereo log-mel (B, out_ch, 4T-3, mel)."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ltx2.models.cpu_math import silu

from .config import LATENT_DOWNSAMPLE_FACTOR, AudioVAEConfig
from .layers import AttnBlock, CausalConv2d, MidBlock, PixelNorm, ResnetBlock, Upsample
from .statistics import PerChannelStatistics


class UpStage(nn.Module):
    """One resolution level: num_res_blocks + 1 residual blocks (optionally with attention), then an upsample."""

    def __init__(self, cin: int, cout: int, n_blocks: int, attention: bool, upsample: bool, axis: str):
        super().__init__()
        self.block = [ResnetBlock(cin if i == 0 else cout, cout, axis) for i in range(n_blocks)]
        self.attn = [AttnBlock(cout) for _ in range(n_blocks)] if attention else []
        if upsample:
            self.upsample = Upsample(cout, axis)

    def __call__(self, x: mx.array) -> mx.array:
        for i, block in enumerate(self.block):
            x = block(x)
            if self.attn:
                x = self.attn[i](x)
        if "upsample" in self:
            x = self.upsample(x)
        return x


class AudioDecoder(nn.Module):
    def __init__(self, cfg: AudioVAEConfig):
        super().__init__()
        self.cfg = cfg
        axis = cfg.causality_axis
        # The official decoder always builds vanilla attention where the config places it: ddconfig.attn_type
        # only reaches the encoder.
        attn_on = True
        width = cfg.ch * cfg.ch_mult[-1]
        self.per_channel_statistics = PerChannelStatistics(cfg.ch)
        self.conv_in = CausalConv2d(cfg.z_channels, width, 3, axis)
        self.mid = MidBlock(width, axis, attn_on and cfg.mid_block_add_attention)
        # Built from the deepest level up (each level's input width is the previous level's output);
        # stored so that up[level] is that level, the checkpoint's numbering.
        stages: dict[int, UpStage] = {}
        res = cfg.resolution // 2 ** (cfg.num_resolutions - 1)
        cin = width
        for level in reversed(range(cfg.num_resolutions)):
            cout = cfg.ch * cfg.ch_mult[level]
            stages[level] = UpStage(cin, cout, cfg.num_res_blocks + 1, attn_on and res in cfg.attn_resolutions,
                                    level != 0, axis)
            cin = cout
            if level != 0:
                res *= 2
        self.up = [stages[level] for level in range(cfg.num_resolutions)]
        self.norm_out = PixelNorm()
        self.conv_out = CausalConv2d(cin, cfg.out_ch, 3, axis)

    def output_frames(self, latent_frames: int) -> int:
        """Mel frames decoded from ``latent_frames``: 4T, less 3 when causal (the first latent covers one frame)."""
        n = latent_frames * LATENT_DOWNSAMPLE_FACTOR
        if self.cfg.causality_axis != "none":
            n = max(n - (LATENT_DOWNSAMPLE_FACTOR - 1), 1)
        return n

    @property
    def dtype(self) -> mx.Dtype:
        """The compute dtype: its weights' (see models/precision.py)."""
        return self.conv_in.conv.weight.dtype

    def __call__(self, latent: mx.array) -> mx.array:
        """latent (B, z, T, F), normalised -> mel (B, out_ch, output_frames(T), mel_bins); official layouts."""
        _, _, t, f = latent.shape
        x = self.per_channel_statistics.un_normalize(latent.astype(self.dtype).transpose(0, 2, 3, 1))
        h = self.mid(self.conv_in(x))
        for level in reversed(range(self.cfg.num_resolutions)):
            h = self.up[level](h)
        h = self.conv_out(silu(self.norm_out(h)))
        return self._fit(h, self.output_frames(t), self.cfg.mel_bins or f).transpose(0, 3, 1, 2)

    def _fit(self, h: mx.array, frames: int, bins: int) -> mx.array:
        """Crop (then zero-pad if short) time and mel axes to the target size."""
        h = h[:, :frames, :bins, : self.cfg.out_ch]
        pad_t, pad_f = frames - h.shape[1], bins - h.shape[2]
        if pad_t > 0 or pad_f > 0:
            h = mx.pad(h, [(0, 0), (0, max(pad_t, 0)), (0, max(pad_f, 0)), (0, 0)])
        return h
