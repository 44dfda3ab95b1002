"""Position grids the transformer's RoPE reads: one [start, end) interval per token and axis.

Video positions are in pixel space, (B, 3, T, 2) for (time in seconds, y, x): each latent cell spans
8 frames x 32 x 32 pixels; the causal VAE gives the first latent frame a single pixel frame, so every
time bound is shifted back by 7 frames and clamped at 0 before dividing by fps.
Audio positions are (B, 1, T, 2) in seconds of the 16 kHz mel grid, with the same causal shift on
its 4x latent downsampling.

These are small host-side constants, built with numpy and handed over as float32 MLX arrays.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from ltx2.spec.geometry import (AUDIO_HOP_LENGTH, AUDIO_LATENT_DOWNSAMPLE, AUDIO_SAMPLE_RATE, VIDEO_SPACE_SCALE,
                     VIDEO_TIME_SCALE)


def video_positions(frames: int, height: int, width: int, fps: float, batch: int = 1, patch_size: int = 1,
                    time_scale: int = VIDEO_TIME_SCALE, space_scale: int = VIDEO_SPACE_SCALE,
                    causal_fix: bool = True) -> mx.array:
    """(B, 3, F*H*W/p^2, 2) float32 pixel-space bounds for a latent grid of ``frames x height x width``."""
    p = int(patch_size)
    f, y, x = np.meshgrid(np.arange(0, frames, 1), np.arange(0, height, p), np.arange(0, width, p), indexing="ij")
    starts = np.stack([f, y, x]).reshape(3, -1).astype(np.int64)  # latent units, frame-major raster order
    ends = starts + np.array([1, p, p], np.int64)[:, None]
    scale = np.array([time_scale, space_scale, space_scale], np.int64)[:, None, None]
    bounds = np.stack([starts, ends], axis=-1) * scale
    if causal_fix:
        bounds[0] = np.maximum(bounds[0] + 1 - time_scale, 0)
    pos = bounds.astype(np.float32)
    pos[0] = pos[0] / np.float32(fps)
    return mx.array(np.broadcast_to(pos[None], (batch,) + pos.shape).copy())


def audio_positions(frames: int, batch: int = 1, shift: int = 0, sample_rate: int = AUDIO_SAMPLE_RATE,
                    hop_length: int = AUDIO_HOP_LENGTH, downsample: int = AUDIO_LATENT_DOWNSAMPLE,
                    causal: bool = True) -> mx.array:
    """(B, 1, T, 2) float32 [start, end) seconds of each audio latent frame (``shift``: index offset)."""

    def seconds(first: int) -> np.ndarray:
        mel = np.arange(first, first + frames, dtype=np.float32) * np.float32(downsample)
        if causal:
            mel = np.maximum(mel + np.float32(1 - downsample), np.float32(0))
        return mel * np.float32(hop_length) / np.float32(sample_rate)

    pos = np.stack([seconds(shift), seconds(shift + 1)], axis=-1)[None, None]  # (1, 1, T, 2)
    return mx.array(np.broadcast_to(pos, (batch, 1, frames, 2)).copy())
