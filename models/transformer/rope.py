"""Rotary position tables ("split" layout) for the video (t, y, x) and audio (t) token streams.

Tables depend only on token positions, which stay fixed for a whole denoising run, so they are
built once, in numpy, before the first step, and passed to every forward call.

Precision, and why the table is built off-device:
- The reference forms the rotation angle in float32: a float64-built frequency grid rounded to
  float32, times the float32 fractional position. At the top frequency (theta * pi / 2 ~ 1.6e4 rad)
  that float32 rounding moves angles by up to ~1e-3 rad. It is part of what the trained model
  saw, so the angle is formed here with the same float32 operations.
- cos/sin of those angles are then taken in float64 and rounded to float32 once. Large arguments
  are where fast device transcendentals (e.g. Metal fast-math) lose accuracy; evaluating them in
  float64 on the host gives the correctly rounded value on every device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mlx.core as mx
import numpy as np


@dataclass(frozen=True)
class RopeTable:
    """cos and sin, each (B, heads, T, head_dim // 2): the angle for each rotated pair of a head."""

    cos: mx.array
    sin: mx.array


def frequency_grid(theta: float, n_axes: int, dim: int) -> np.ndarray:
    """Angular frequencies theta**u * pi/2 for u evenly spaced in [0, 1]; float64-built, float32-rounded."""
    count = dim // (2 * n_axes)
    grid = np.power(float(theta), np.linspace(0.0, 1.0, count, dtype=np.float64)) * (math.pi / 2)
    return grid.astype(np.float32)


def rope_table(positions, dim: int, heads: int, max_pos: list[int] | tuple[int, ...],
               theta: float = 10000.0) -> RopeTable:
    """Build the split-RoPE table for ``positions`` of shape (B, n_axes, T, 2) (start, end per axis).

    Each token is placed at the middle of its [start, end) span, scaled to [-1, 1] by the axis'
    max position. Frequencies are laid out frequency-major, axis-minor; the ``dim // 2`` angle
    slots not covered (when ``dim // 2`` is not a multiple of the axis count) come first with
    angle 0 (cos 1, sin 0), then the angles are dealt to heads in order.
    """
    pos = np.asarray(positions, dtype=np.float32)
    if pos.ndim != 4 or pos.shape[-1] != 2:
        raise ValueError(f"positions must be (batch, axes, tokens, 2) [start, end), got shape {pos.shape}")
    b, n_axes, t, _ = pos.shape
    if n_axes != len(max_pos):
        raise ValueError(f"positions have {n_axes} axes but max_pos has {len(max_pos)}: {list(max_pos)}")
    # float32 throughout, operation for operation, so the angles round as the reference's do
    mid = (pos[..., 0] + pos[..., 1]) / np.float32(2.0)  # (B, A, T)
    frac = mid / np.asarray(max_pos, dtype=np.float32)[None, :, None]
    centred = frac * np.float32(2.0) - np.float32(1.0)  # in [-1, 1]
    grid = frequency_grid(theta, n_axes, dim)  # (F,)
    angles = centred.transpose(0, 2, 1)[..., None, :] * grid[:, None]  # (B, T, F, A)
    angles = angles.reshape(b, t, -1)
    cos = np.cos(angles.astype(np.float64))
    sin = np.sin(angles.astype(np.float64))
    pad = dim // 2 - angles.shape[-1]
    if pad:
        cos = np.concatenate([np.ones((b, t, pad)), cos], axis=-1)
        sin = np.concatenate([np.zeros((b, t, pad)), sin], axis=-1)
    if cos.shape[-1] % heads:
        raise ValueError(f"{cos.shape[-1]} rotated pairs cannot be dealt to {heads} heads")

    def per_head(a: np.ndarray) -> mx.array:
        return mx.array(a.reshape(b, t, heads, -1).transpose(0, 2, 1, 3).astype(np.float32))

    return RopeTable(per_head(cos), per_head(sin))


def apply_rope(x: mx.array, table: RopeTable) -> mx.array:
    """Rotate (B, heads, T, head_dim): the first half of each head against the second half."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos = table.cos.astype(x.dtype)
    sin = table.sin.astype(x.dtype)
    return mx.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
