"""Latents <-> token sequences, in the exact token and channel order the transformer was trained on.

Video: (B, C, F, H, W) -> (B, F*(H/p)*(W/p), C*p*p), tokens in frame-major raster order, each token's
features ordered channel-major then patch row then patch column (the pipelines use p = 1).
Audio: (B, C, T, M) -> (B, T, C*M), features channel-major then mel bin.
"""

from __future__ import annotations

import mlx.core as mx


def patchify_video(latent: mx.array, patch_size: int = 1) -> mx.array:
    b, c, f, h, w = latent.shape
    p = int(patch_size)
    if h % p or w % p:
        raise ValueError(f"video latent {h}x{w} is not divisible by patch size {p}")
    x = latent.reshape(b, c, f, h // p, p, w // p, p)
    x = x.transpose(0, 2, 3, 5, 1, 4, 6)  # b f h w c p q
    return x.reshape(b, f * (h // p) * (w // p), c * p * p)


def unpatchify_video(tokens: mx.array, frames: int, height: int, width: int, patch_size: int = 1) -> mx.array:
    """Inverse of ``patchify_video``; ``frames/height/width`` are the latent grid's (unpatchified) sizes."""
    b, n, d = tokens.shape
    p = int(patch_size)
    hp, wp = height // p, width // p
    if n != frames * hp * wp or d % (p * p):
        raise ValueError(f"{n} tokens of width {d} do not tile a {frames}x{height}x{width} grid with patch {p}")
    c = d // (p * p)
    x = tokens.reshape(b, frames, hp, wp, c, p, p)
    x = x.transpose(0, 4, 1, 2, 5, 3, 6)  # b c f h p w q
    return x.reshape(b, c, frames, height, width)


def patchify_audio(latent: mx.array) -> mx.array:
    b, c, t, m = latent.shape
    return latent.transpose(0, 2, 1, 3).reshape(b, t, c * m)


def unpatchify_audio(tokens: mx.array, channels: int, mel_bins: int) -> mx.array:
    b, t, d = tokens.shape
    if d != channels * mel_bins:
        raise ValueError(f"audio tokens of width {d} cannot be split into {channels} channels x {mel_bins} mel bins")
    return tokens.reshape(b, t, channels, mel_bins).transpose(0, 2, 1, 3)
