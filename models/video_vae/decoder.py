"""Video VAE decoder: normalised latent (B, F', H', W', 128) -> video (B, F, H, W, 3) in about [-1, 1].

F = 8 (F' - 1) + 1, H = 32 H', W = 32 W' for LTX-2. With timestep conditioning the latent is first
blended with a little noise (2.5%) and every res stack is modulated by the decode timestep (0.05).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ltx2.models.cpu_math import silu

from .config import VideoVAEConfig
from .layers import (CausalConv3d, DepthToSpaceUpsample, PerChannelStatistics, ResnetBlock3D, TimeEmbedder,
                     UNetMidBlock3D, pixel_norm, unpatchify)
from .noise import NoiseSource

DECODE_NOISE_SCALE = 0.025  # latent = noise * s + latent * (1 - s) before decoding
DECODE_TIMESTEP = 0.05

_UPSAMPLE_STRIDE = {"compress_time": (2, 1, 1), "compress_space": (1, 2, 2), "compress_all": (2, 2, 2)}


def _decoder_block(name: str, p: dict, w_in: int, w_out: int, pad: str, tsc: bool) -> nn.Module:
    noise = bool(p.get("inject_noise", False))
    if name == "res_x":
        return UNetMidBlock3D(w_in, p["num_layers"], pad, noise, tsc)
    if name == "res_x_y":
        return ResnetBlock3D(w_in, w_out, pad, noise, timestep_conditioning=False)
    # the official code honours "residual" on compress_all only
    residual = bool(p.get("residual", False)) and name == "compress_all"
    return DepthToSpaceUpsample(w_in, _UPSAMPLE_STRIDE[name], residual, p.get("multiplier", 1), pad)


class VideoDecoder(nn.Module):
    def __init__(self, cfg: VideoVAEConfig):
        super().__init__()
        self.cfg = cfg
        pad = cfg.decoder_padding
        tsc = cfg.timestep_conditioning
        self.per_channel_statistics = PerChannelStatistics(cfg.latent_channels)
        self.conv_in = CausalConv3d(cfg.latent_channels, cfg.decoder_width, padding_mode=pad)
        stages = cfg.decoder_stages()
        self.up_blocks = [_decoder_block(n, p, wi, wo, pad, tsc) for n, p, wi, wo in stages]
        width = stages[-1][3] if stages else cfg.decoder_width
        self.conv_out = CausalConv3d(width, cfg.out_channels * cfg.patch_size ** 2, padding_mode=pad)
        if tsc:
            self.timestep_scale_multiplier = mx.array(1000.0)
            self.last_time_embedder = TimeEmbedder(2 * width)
            self.last_scale_shift_table = mx.zeros((2, width))

    @property
    def dtype(self) -> mx.Dtype:
        """The compute dtype: its weights' (see models/precision.py)."""
        return self.conv_in.conv.weight.dtype

    @property
    def needs_noise(self) -> bool:
        return self.cfg.timestep_conditioning or any(p.get("inject_noise") for _, p in self.cfg.decoder_blocks)

    def __call__(self, latent: mx.array, timestep: float | mx.array | None = None,
                 noise: NoiseSource | None = None) -> mx.array:
        """Decode a channels-last latent. ``noise`` is required when the decoder draws any (see noise.py);
        ``timestep`` defaults to the official decode timestep 0.05."""
        if self.needs_noise and noise is None:
            raise ValueError("this decoder draws noise: pass noise=KeyNoise(mx.random.key(seed)) "
                             "(or SuppliedNoise([...]) to replay given noise)")
        cfg = self.cfg
        batch = latent.shape[0]
        x = latent.astype(self.dtype)
        scaled_t = None
        if cfg.timestep_conditioning:
            x = noise.draw(tuple(x.shape)).astype(x.dtype) * DECODE_NOISE_SCALE + (1.0 - DECODE_NOISE_SCALE) * x
            t = DECODE_TIMESTEP if timestep is None else timestep
            scaled_t = mx.broadcast_to(mx.array(t, dtype=mx.float32), (batch,)) * self.timestep_scale_multiplier
        x = self.per_channel_statistics.un_normalize(x)
        x = self.conv_in(x, cfg.causal_decoder)
        for block in self.up_blocks:
            if isinstance(block, UNetMidBlock3D):
                x = block(x, cfg.causal_decoder, scaled_t, noise)
            elif isinstance(block, ResnetBlock3D):
                x = block(x, cfg.causal_decoder, None, noise)
            else:
                x = block(x, cfg.causal_decoder)
        x = pixel_norm(x)
        if cfg.timestep_conditioning:
            emb = self.last_time_embedder(scaled_t).reshape(batch, 2, -1)
            ada = (self.last_scale_shift_table + emb)[:, :, None, None, None, :]
            x = x * (1 + ada[:, 1]) + ada[:, 0]
        return unpatchify(self.conv_out(silu(x), cfg.causal_decoder), cfg.patch_size)
