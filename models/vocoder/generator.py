"""The mel -> waveform generator (HiFi-GAN, or BigVGAN v2 when the config says resblock "AMP1")."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ltx2.models.conv import ConvTranspose1d

from .bigvgan import Activation1d, AMPBlock1, SnakeBeta
from .config import VocoderConfig
from .layers import LRELU_SLOPE, Conv1d, ResBlock1


class Vocoder(nn.Module):
    """Stereo log-mel (B, 2, frames, 64) -> waveform (B, 2, frames * prod(upsample_rates)), in [-1, 1] unless
    the config leaves out the final activation."""

    def __init__(self, cfg: VocoderConfig):
        super().__init__()
        self.cfg = cfg
        c0 = cfg.upsample_initial_channel
        self.conv_pre = Conv1d(cfg.in_channels, c0, 7, pad=(3, 3))
        self.ups = [ConvTranspose1d(c0 // 2 ** i, c0 // 2 ** (i + 1), k, stride=r, padding=(k - r) // 2)
                    for i, (r, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes))]
        # resblocks[i * n_kernels + j]: level i, kernel j (the checkpoint's flat numbering)
        self.resblocks = []
        for i in range(len(cfg.upsample_rates)):
            ch = c0 // 2 ** (i + 1)
            for k, ds in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes):
                self.resblocks.append(AMPBlock1(ch, k, ds, cfg.activation) if cfg.is_amp else ResBlock1(ch, k, ds))
        final = c0 // 2 ** len(cfg.upsample_rates)
        if cfg.is_amp:
            # the post activation is SnakeBeta whatever `activation` says, as in the official generator
            self.act_post = Activation1d(SnakeBeta(final))
        self.conv_post = Conv1d(final, cfg.out_channels, 7, pad=(3, 3), bias=cfg.use_bias_at_final)

    def __call__(self, mel: mx.array) -> mx.array:
        b, s, t, m = mel.shape
        if s != 2 or m * s != self.cfg.in_channels:
            raise ValueError(f"vocoder input must be stereo log-mel (B, 2, frames, {self.cfg.mel_bins}), "
                             f"got {mel.shape}")
        # (B, 2, T, mel) -> (B, T, 2*mel), stereo-channel-major like the official "b s c t -> b (s c) t"
        mel = mel.astype(self.conv_pre.weight.dtype)  # the compute dtype: its weights' (models/precision.py)
        x = self.conv_pre(mel.transpose(0, 2, 1, 3).reshape(b, t, s * m))
        n = len(self.cfg.resblock_kernel_sizes)
        for i, up in enumerate(self.ups):
            if not self.cfg.is_amp:
                x = nn.leaky_relu(x, LRELU_SLOPE)
            x = up(x)
            # the parallel residual blocks of one level see the same input; their mean goes on
            acc = self.resblocks[i * n](x)
            for j in range(1, n):
                acc = acc + self.resblocks[i * n + j](x)
            x = acc / n
        # HiFi-GAN's final leaky ReLU has PyTorch's default slope 0.01, not the generator's 0.1
        x = self.act_post(x) if self.cfg.is_amp else nn.leaky_relu(x, 0.01)
        x = self.conv_post(x)
        if self.cfg.apply_final_activation:
            x = mx.tanh(x) if self.cfg.use_tanh_at_final else mx.clip(x, -1.0, 1.0)
        return x.transpose(0, 2, 1)
